"""The `edgedepth demo` command: the whole pipeline on embedded data, with a report (docs/demo.md)."""

from __future__ import annotations

from pathlib import Path

import click

from edgedepth.common import POSITIVE, friendly_errors


@click.command("demo", short_help="The whole pipeline on embedded data, with a report.")
@click.option(
    "--out",
    "out_dir",
    default="demo_out",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Where the data, labels, run, exports and report.html go.",
)
@click.option(
    "--data-root",
    "--kitti-root",
    "data_root",
    type=click.Path(path_type=Path),
    help="Your rig tree (docs/rig.md) or KITTI raw tree (default: the embedded Middlebury Motorcycle "
    "scene as a rig tree).",
)
@click.option(
    "--split-file",
    type=click.Path(path_type=Path),
    help="With --data-root: the frames (rig: <sequence>/<frame> lines; KITTI: a monodepth2 split).",
)
@click.option(
    "--psmnet-checkpoint",
    type=click.Path(path_type=Path),
    help="PSMNet teacher (default: weights/pretrained_model_KITTI2015.tar when present, else skipped).",
)
@click.option(
    "--seg-checkpoint", type=click.Path(path_type=Path), help="Segmentation teacher (else skipped)."
)
@click.option("--seg-format", type=click.Choice(["vainf", "smp"]), default="vainf", show_default=True)
@click.option("--seg-arch", default="deeplabv3plus_mobilenet", show_default=True)
@click.option("--seg-encoder", help="smp format: encoder name, e.g. resnet101.")
@click.option("--workers", default=2, show_default=True, type=POSITIVE, help="Local dask workers for labels.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or auto.")
@click.option("--progress/--no-progress", default=True, help="Show progress bars.")
@click.option(
    "--quick",
    is_flag=True,
    help="The short path: a quarter of the training steps at half the size, only the L model exported "
    "and timed (about 1 CPU-minute; the full demo takes 6-10).",
)
@click.option("--fresh", is_flag=True, help="Redo every step, even those an earlier run finished.")
@friendly_errors
def demo_command(
    out_dir, data_root, split_file, psmnet_checkpoint, seg_checkpoint, seg_format, seg_arch, seg_encoder,
    workers, device, progress, quick, fresh,
) -> None:  # fmt: skip
    """Plan, teacher labels, teachers vs ground truth, bias table, a short student training, eval,
    predict, ONNX export (FP32 + INT8) and a speed table; writes OUT/report.html and report.md.

    A rerun reuses every step an earlier run into OUT finished with the same inputs and settings
    (status "reused"); a changed setting (--quick, other data or checkpoints) redoes the steps it
    affects and those after them, in the same OUT."""
    from edgedepth.common import resolve_device
    from edgedepth.demo.pipeline import run_demo

    if split_file and not data_root:
        raise click.UsageError("--split-file needs --data-root")
    seg_options = {"format": seg_format, "arch": seg_arch, "encoder": seg_encoder}
    result = run_demo(
        out_dir,
        data_root=data_root,
        split_file=split_file,
        psmnet_checkpoint=psmnet_checkpoint,
        seg_checkpoint=seg_checkpoint,
        seg_options=seg_options,
        workers=workers,
        device=resolve_device(device),
        progress=progress,
        log=click.echo,
        quick=quick,
        fresh=fresh,
    )
    click.echo(f"\n{'stage':<46}{'status':>9}{'seconds':>9}")
    for step in result.steps:
        click.echo(f"{step.title:<46}{step.status:>9}{step.seconds:>9.1f}")
    click.echo(f"{'total':<46}{'':>9}{result.seconds:>9.1f}")
    click.echo(f"\nreport: {out_dir / 'report.html'} (and report.md)")


__all__ = ["demo_command"]
