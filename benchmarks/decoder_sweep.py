"""Decoder sweep: parameters, multiply-adds and ONNX Runtime speed of alternative student decoders.

Each candidate is ``WIDTHS/BOTTLENECKS[/EXPANSION]`` for D1..D4, e.g. ``24,24,40,24/2,2,3,1/6``.
For each: parameters (19-class segmentation heads included) and multiply-adds at 1056x320 against
the paper's budget (0.30-0.34 M, 1.7-2.5 G, the bounds ``tests/student/test_model.py`` pins), and
the L variant's median latency at ``--size`` on ONNX Runtime CPU (random weights, legacy exporter,
opset 13, depth only), timed in interleaved rounds with the FastDepth-class baseline of
``benchmarks/fastdepth.py`` so that drift of a shared CPU hits every model alike.

Run: `.venv/bin/python benchmarks/decoder_sweep.py 24,24,24,16/2,2,3,4 24,24,40,24/2,2,3,1`
(about a minute per candidate on 2 cores). Prints a table; docs/model.md holds the figures that
chose the current decoder.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import click
import torch
from edge_speed import export_legacy, interleaved
from fastdepth import build_fastdepth

from edgedepth.student.model.network import EXPAND_RATIO, DepthSegStudent, count_macs, count_parameters

BUDGET_PARAMS = (0.30e6, 0.34e6)
BUDGET_MACS = (1.7e9, 2.5e9)
KITTI = (320, 1056)


def parse_candidate(text: str) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    """``"24,24,40,24/2,2,3,1[/6]"`` -> (widths, bottlenecks, expansion)."""
    parts = text.split("/")
    if len(parts) not in (2, 3):
        raise click.BadParameter(f"{text!r}: expected WIDTHS/BOTTLENECKS[/EXPANSION]")
    widths, counts = (tuple(int(v) for v in part.split(",")) for part in parts[:2])
    return widths, counts, int(parts[2]) if len(parts) == 3 else EXPAND_RATIO


def build(widths, counts, expansion) -> DepthSegStudent:
    torch.manual_seed(0)
    return DepthSegStudent(
        num_blocks=4, decoder_widths=widths, decoder_bottlenecks=counts, expand_ratio=expansion
    ).eval()


@click.command()
@click.argument("candidates", nargs=-1, required=True)
@click.option("--size", default="480x320", show_default=True, help="Timed input WxH.")
@click.option("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: all cores).")
@click.option("--rounds", type=int, default=10, show_default=True)
def main(candidates: tuple[str, ...], size: str, threads: int | None, rounds: int) -> None:
    width, height = (int(v) for v in size.lower().split("x"))
    shape = (height, width)
    image = torch.zeros(1, 3, *shape).numpy()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files = {
            "FastDepth-class": (
                str(export_legacy(build_fastdepth().eval(), Path(tmp) / "fd.onnx", shape)),
                image,
            )
        }
        for index, text in enumerate(candidates):
            widths, counts, expansion = parse_candidate(text)
            model = build(widths, counts, expansion)
            model.return_classes = False
            params = count_parameters(model)
            macs = count_macs(model, KITTI)
            files[text] = (str(export_legacy(model, Path(tmp) / f"c{index}.onnx", shape)), image)
            rows.append((text, params, macs))
        click.echo(f"timing {len(files)} models in {rounds} interleaved rounds ...")
        ms = interleaved(files, threads, rounds, 5, 5)
    base = ms["FastDepth-class"]
    click.echo(
        f"\n{'decoder (widths/bottlenecks/expansion)':40s} {'params':>8s} {'MACs':>7s} budget {'ms':>6s}  vs FastDepth"
    )
    for text, params, macs in rows:
        inside = BUDGET_PARAMS[0] <= params <= BUDGET_PARAMS[1] and BUDGET_MACS[0] <= macs <= BUDGET_MACS[1]
        click.echo(
            f"{text:40s} {params / 1e6:7.3f}M {macs / 1e9:6.2f}G {'in ' if inside else 'out'}    "
            f"{ms[text]:6.1f}  {base / ms[text]:.2f}x"
        )
    click.echo(f"{'FastDepth-class':40s} {'':8s} {'':7s}        {base:6.1f}")


if __name__ == "__main__":
    main()
