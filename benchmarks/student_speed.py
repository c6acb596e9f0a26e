"""Student speed table: parameters, multiply-adds and latency of L/M/S/XS at 480x320 and 1056x320.

Latency is the median of repeated batch-1 runs in eager PyTorch after warm-up, on the device given
(CPU by default). Run: `make bench` or `.venv/bin/python benchmarks/student_speed.py --help`.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import torch

from edgedepth.common.devices import resolve_device
from edgedepth.student.deploy.bench import DEFAULT_SIZES, format_table, plot_latency, summarize_variants


@click.command()
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--repeats", default=20, show_default=True, help="Timed runs per row.")
@click.option("--warmup", default=3, show_default=True, help="Untimed runs before timing.")
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice).")
@click.option(
    "--png",
    type=click.Path(dir_okay=False),
    default="benchmarks/out/student_speed.png",
    show_default=True,
    help="Where to write the latency chart.",
)
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Also write the rows."
)
def main(
    device: str, repeats: int, warmup: int, threads: int | None, png: str, json_path: str | None
) -> None:
    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(device)
    rows = summarize_variants(
        sizes=DEFAULT_SIZES, latency=True, device=device, repeats=repeats, warmup=warmup
    )
    name = (
        torch.cuda.get_device_name(device)
        if device.startswith("cuda")
        else f"CPU, {torch.get_num_threads()} threads"
    )
    title = f"student speed on {name}, torch {torch.__version__}, eager, batch 1, median of {repeats}"
    click.echo(title + "\n")
    click.echo(format_table(rows))
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    plot_latency(rows, png, title=title)
    click.echo(f"\nchart: {png}")
    if json_path:
        Path(json_path).write_text(json.dumps([r.as_dict() for r in rows], indent=2))


if __name__ == "__main__":
    main()
