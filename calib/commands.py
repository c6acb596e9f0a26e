"""The `edgedepth calib` commands: fit, apply and plot the teacher-vs-LiDAR depth bias table.

Only options are parsed here; each command calls the library (imported inside it).
"""

from __future__ import annotations

from pathlib import Path

import click

from edgedepth.common import (
    METRES,
    POSITIVE,
    POSITIVE_METRES,
    SHARE,
    FiniteFloatRange,
    cluster_options,
    friendly_errors,
)


@click.group("calib", short_help="Teacher-vs-LiDAR depth bias table.")
def calib_group() -> None:
    """The per-distance teacher-vs-LiDAR depth bias look-up table: fit, apply, plot."""


@calib_group.command("fit")
@click.argument("labels_dir", type=click.Path(path_type=Path))
@click.option("--teacher", default="psmnet", show_default=True, help="Teacher stage: psmnet or sgbm.")
@click.option(
    "--out", "out_path", required=True, type=click.Path(path_type=Path), help="The lut.json to write."
)
@click.option(
    "--bin-width",
    default=1.0,
    show_default=True,
    type=FiniteFloatRange(min=0.001),
    help="Bin width in metres of teacher depth.",
)
@click.option(
    "--min-depth", default=1.0, show_default=True, type=METRES, help="Lowest teacher depth binned (m)."
)
@click.option(
    "--max-depth",
    default=80.0,
    show_default=True,
    type=POSITIVE_METRES,
    help="Highest teacher depth binned (m).",
)
@click.option(
    "--stat",
    type=click.Choice(["mean", "median"]),
    default="mean",
    show_default=True,
    help="Per-bin statistic of LiDAR minus teacher depth: mean (the paper's) or median (robust to "
    "the teacher's outliers, e.g. SGBM's occlusions).",
)
@click.option(
    "--min-count",
    default=100,
    show_default=True,
    type=POSITIVE,
    help="Pixels a bin needs; fewer: interpolated, flagged.",
)
@click.option(
    "--holdout",
    type=SHARE,
    help="Share of the frames, as whole drives, held out to check the table  [default: 0.1; 0 when "
    "that would leave no drive to fit on, e.g. a one-drive folder].",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    help="Fit with this many local dask workers (default: one per core when there is more than one "
    "shard; 1: in this process).",
)
@click.option("--scheduler", help="Fit on an existing dask scheduler, e.g. tcp://host:8786.")
@click.option("--png", type=click.Path(path_type=Path), help="Also plot the table here.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@cluster_options
@friendly_errors
def calib_fit(
    labels_dir,
    teacher,
    out_path,
    bin_width,
    min_depth,
    max_depth,
    stat,
    min_count,
    holdout,
    workers,
    scheduler,
    png,
    progress,
    cluster,
    jobs,
    job_option,
    job_timeout,
    dry_run,
) -> None:
    """Fit the per-distance LiDAR-vs-teacher bias table on a label folder."""
    from edgedepth.calib.fit import fit_from_labels, format_lut
    from edgedepth.calib.plot import plot_lut
    from edgedepth.labelgen import Workers, cluster_spec

    spec = cluster_spec(cluster, jobs, job_option, job_timeout, dry_run)
    with Workers(scheduler, workers, "cpu", spec) as pool:
        lut = fit_from_labels(
            labels_dir,
            teacher,
            holdout,
            pool,
            bin_width=bin_width,
            min_depth=min_depth,
            max_depth=max_depth,
            stat=stat,
            min_count=min_count,
            progress=progress,
        )
    if holdout is None and not lut.source.get("holdout"):
        click.echo(
            f"note: {labels_dir}: holding out 0.1 would leave none of its {len(lut.source['drives'])} "
            "drive(s) to fit on: --holdout 0, the table is not checked on held-out drives",
            err=True,
        )
    lut.save(out_path)
    click.echo(format_lut(lut))
    click.echo(f"wrote {out_path}")
    if png:
        click.echo(f"wrote {plot_lut(lut, png)}")


@calib_group.command("apply")
@click.argument("lut_path", type=click.Path(path_type=Path))
@click.argument("labels_dir", type=click.Path(path_type=Path))
@click.option("--teacher", default="psmnet", show_default=True, help="Teacher stage the table was fitted on.")
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    help="Apply with this many local dask workers (default: one per core when there is more than one "
    "shard; 1: in this process).",
)
@click.option("--scheduler", help="Apply on an existing dask scheduler, e.g. tcp://host:8786.")
@cluster_options
@friendly_errors
def calib_apply(
    lut_path, labels_dir, teacher, workers, scheduler, cluster, jobs, job_option, job_timeout, dry_run
) -> None:
    """Write LABELS/<teacher>_corrected shards: teacher depth + LUT(teacher depth)."""
    from edgedepth.calib.apply import write_corrected
    from edgedepth.common import folder_lock
    from edgedepth.labelgen import Workers, cluster_spec

    spec = cluster_spec(cluster, jobs, job_option, job_timeout, dry_run)
    with (
        folder_lock(labels_dir, f"calib apply --teacher {teacher}"),
        Workers(scheduler, workers, "cpu", spec) as pool,
    ):
        summary = write_corrected(labels_dir, lut_path, teacher, progress=True, client=pool)
    click.echo(
        f"{summary['path']}: {summary['written']} shards written, {summary['skipped']} already current, "
        f"{summary['frames']} frames ({summary['frames_failed']} failed), table {summary['lut_sha256'][:12]}"
    )


@calib_group.command("plot")
@click.argument("lut_path", type=click.Path(path_type=Path))
@click.option("--out", "out_png", required=True, type=click.Path(path_type=Path), help="PNG to write.")
@friendly_errors
def calib_plot(lut_path, out_png) -> None:
    """Plot the table: error per distance with its confidence band, counts, held-out residual."""
    from edgedepth.calib.lut import load_lut
    from edgedepth.calib.plot import plot_lut

    click.echo(f"wrote {plot_lut(load_lut(lut_path), out_png)}")


__all__ = ["calib_apply", "calib_fit", "calib_group", "calib_plot"]
