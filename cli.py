"""The `edgedepth` command line: one group per pipeline wing, one command per stage.

This module only parses options and calls library functions; everything here is callable from
Python (see README.md). Errors from the library (ValueError, FileNotFoundError) become one-line
messages and exit code 2 rather than tracebacks.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import click

try:
    __version__ = version("edgedepth")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

VARIANT_NAMES = ("L", "M", "S", "XS")


class InputError(click.ClickException):
    """Bad input named by the library: printed as one `Error: ...` line, exit status 2."""

    exit_code = 2


def _friendly_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the library's input errors (ValueError, FileNotFoundError) into :class:`InputError`."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (ValueError, FileNotFoundError) as err:
            raise InputError(str(err)) from None

    return wrapper


def _parse_size(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple:
    """`1056x320` (W x H, as the paper writes sizes) -> (height, width)."""
    sizes = []
    for value in values:
        try:
            width, height = (int(v) for v in value.lower().split("x"))
        except ValueError:
            raise click.BadParameter(f"{value!r} is not WIDTHxHEIGHT, e.g. 1056x320") from None
        sizes.append((height, width))
    return tuple(sizes)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgedepth")
def main() -> None:
    """edgedepth: KITTI teacher labels -> LiDAR bias table -> 0.32 M-parameter student -> edge GPU."""


@main.group(short_help="Teacher labels from KITTI logs.")
def labelgen() -> None:
    """Teacher labels from KITTI raw logs: plan shards, run teachers on dask, inspect HDF5 shards."""


@labelgen.command("plan")
@click.option("--kitti-root", required=True, type=click.Path(path_type=Path), help="KITTI raw root folder.")
@click.option("--out", "labels_dir", required=True, type=click.Path(path_type=Path), help="Label folder.")
@click.option("--split-file", type=click.Path(path_type=Path), help="monodepth2-style split file.")
@click.option("--drives", multiple=True, help="Drive folder names, e.g. 2011_09_26_drive_0001_sync.")
@click.option("--shard-size", default=64, show_default=True, help="Frames per shard at most.")
@click.option("--overwrite", is_flag=True, help="Replace a different existing plan.")
@_friendly_errors
def labelgen_plan(kitti_root, labels_dir, split_file, drives, shard_size, overwrite) -> None:
    """Select frames and partition them into shards: writes LABELS/plan.json."""
    from labelgen.plan import plan_shards, write_plan

    if split_file and drives:
        raise InputError("give --split-file or --drives, not both")
    plan = plan_shards(kitti_root, drives=drives or None, split_file=split_file, shard_size=shard_size)
    path = write_plan(plan, labels_dir, overwrite=overwrite)
    click.echo(f"{path}: {len(plan.frame_ids)} frames in {len(plan.shards)} shards, plan {plan.plan_id[:12]}")
    for date, reason in plan.calibration_errors.items():
        click.echo(f"warning: {date}: {reason} (its frames will be reported as failed)", err=True)


@labelgen.command("run")
@click.argument("labels_dir", type=click.Path(path_type=Path))
@click.option("--stages", default="images,lidar,sgbm", show_default=True, help="Comma-separated stages.")
@click.option("--workers", type=int, help="Local workers (default: one per core, or per GPU with cuda).")
@click.option("--scheduler", help="Address of an existing dask scheduler, e.g. tcp://host:8786.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or auto (for teacher models).")
@click.option("--batch-size", default=1, show_default=True, help="Frames per teacher forward pass.")
@click.option("--overwrite", is_flag=True, help="Redo shards that are already complete.")
@click.option(
    "--image-size",
    "image_size",
    callback=_parse_size,
    multiple=True,
    metavar="WxH",
    help="images stage: resize the stored left image.",
)
@click.option("--lidar-cams", default="2", show_default=True, help="lidar stage: cameras, e.g. 2,3.")
@click.option(
    "--lidar-depth",
    type=click.Choice(["z", "x"]),
    default="z",
    show_default=True,
    help="lidar stage: camera z, or LiDAR forward x as the public eval scripts.",
)
@click.option(
    "--lr-check",
    type=float,
    default=1.0,
    show_default=True,
    help="sgbm stage: left-right consistency threshold in px (0 disables).",
)
@click.option("--num-disparities", type=int, default=192, show_default=True, help="sgbm stage.")
@click.option("--progress/--no-progress", default=True, help="Show progress bars.")
@_friendly_errors
def labelgen_run(
    labels_dir,
    stages,
    workers,
    scheduler,
    device,
    batch_size,
    overwrite,
    image_size,
    lidar_cams,
    lidar_depth,
    lr_check,
    num_disparities,
    progress,
) -> None:
    """Run label stages over every shard of the plan (resumes: complete shards are skipped)."""
    from labelgen.run import format_reports, run_stages
    from student.bench import resolve_device

    names = [s.strip() for s in stages.split(",") if s.strip()]
    options = {
        "images": {"resize": image_size[0]} if image_size else {},
        "lidar": {"cams": [int(c) for c in lidar_cams.split(",")], "depth": lidar_depth},
        "sgbm": {"num_disparities": num_disparities, "lr_check": lr_check or None},
    }
    reports = run_stages(
        labels_dir,
        names,
        workers=workers,
        scheduler=scheduler,
        device=resolve_device(device),
        batch_size=batch_size,
        overwrite=overwrite,
        stage_options=options,
        progress=progress,
    )
    click.echo(format_reports(reports))
    if any(r.shards_failed for r in reports):
        raise SystemExit(1)


@labelgen.command("inspect")
@click.argument("labels_dir", type=click.Path(path_type=Path))
@click.option("--png", "png_dir", type=click.Path(path_type=Path), help="Write PNG previews here.")
@_friendly_errors
def labelgen_inspect(labels_dir, png_dir) -> None:
    """Completeness and value ranges per stage; PNG previews of the first frames."""
    from labelgen.inspect import inspect_labels, write_previews

    click.echo(inspect_labels(labels_dir))
    if png_dir:
        for path in write_previews(labels_dir, png_dir):
            click.echo(f"wrote {path}")


@main.group(short_help="Teacher-vs-LiDAR depth bias table.")
def calib() -> None:
    """The per-distance teacher-vs-LiDAR depth bias look-up table: fit, apply, plot."""


@main.group(short_help="The student network: summary, benchmarks.")
def student() -> None:
    """The depth + segmentation student: summary, training, evaluation, export, benchmarks."""


def _summary_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--variant",
            "variants",
            multiple=True,
            type=click.Choice(VARIANT_NAMES, case_sensitive=False),
            help="Variant(s) to list (default: all).",
        ),
        click.option(
            "--size",
            "sizes",
            multiple=True,
            callback=_parse_size,
            metavar="WxH",
            help="Input size(s), width x height (default: 480x320 and 1056x320).",
        ),
        click.option("--num-classes", default=19, show_default=True, help="Segmentation classes."),
        click.option("--no-seg", is_flag=True, help="Depth-only model (no segmentation head)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@student.command("summary")
@_summary_options
@click.option("--latency", is_flag=True, help="Also measure the median latency (batch 1, eager).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto (for --latency).")
@click.option("--repeats", default=20, show_default=True, help="Timed runs per row (for --latency).")
@_friendly_errors
def student_summary(variants, sizes, num_classes, no_seg, latency, device, repeats) -> None:
    """Parameters, multiply-adds and output size of each student variant."""
    from student.bench import DEFAULT_SIZES, format_table, resolve_device, summarize_variants

    rows = summarize_variants(
        variants or VARIANT_NAMES,
        sizes or DEFAULT_SIZES,
        num_classes,
        not no_seg,
        latency=latency,
        device=resolve_device(device),
        repeats=repeats,
    )
    click.echo(format_table(rows))


@main.command(short_help="Run the pipeline on the embedded sample data.")
@click.option(
    "--out",
    "out_dir",
    default="demo_out",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Where labels, previews and the report go.",
)
@click.option(
    "--kitti-root",
    type=click.Path(path_type=Path),
    help="KITTI raw data to use (default: $EDGEDEPTH_KITTI_SAMPLE, else a synthetic tree).",
)
@click.option("--workers", default=2, show_default=True, help="Local dask workers.")
@_friendly_errors
def demo(out_dir, kitti_root, workers) -> None:
    """Run the pipeline on a small data set: labels, inspection, previews, student summary."""
    from student.demo import run_demo

    report = run_demo(out_dir, kitti_root, workers)
    (out_dir / "report.txt").write_text(report + "\n")
    click.echo(report)
    click.echo(f"\nreport: {out_dir / 'report.txt'}")


if __name__ == "__main__":
    main()
