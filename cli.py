"""The `edgedepth` command line: one group per pipeline wing, one command per stage.

This module only parses options and calls library functions; everything here is callable from
Python (see README.md). Errors become one `Error:` line naming the file and the problem, never a
traceback. Exit statuses: 0 done; 1 some frames failed (`labelgen run`); 2 bad usage or bad input;
3 a backend this machine lacks (TensorRT, a GPU); 4 an OS fault (disk full, permission denied,
read-only folder, a path under a file).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from labelgen import __version__
from labelgen.errors import describe, is_os_fault

VARIANT_NAMES = ("L", "M", "S", "XS")
ARCH_NAMES = ("paper", "fast")  # student.model.ARCHS (not imported here: keeps `--help` fast)


class InputError(click.ClickException):
    """Bad input named by the library: printed as one `Error: ...` line, exit status 2."""

    exit_code = 2


class Unavailable(click.ClickException):
    """A backend this machine lacks (TensorRT, a GPU): one `Error: ...` line, exit status 3."""

    exit_code = 3


class SystemFault(click.ClickException):
    """The machine's fault (disk full, permission denied, read-only): one `Error:` line, exit status 4."""

    exit_code = 4


def _friendly_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the library's errors into one `Error:` line: bad input (ValueError, a missing file) is
    :class:`InputError`, an OS fault (``labelgen.errors.is_os_fault``) :class:`SystemFault`."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except OSError as err:
            raise (SystemFault if is_os_fault(err) else InputError)(describe(err)) from None
        except (ValueError, MemoryError) as err:
            raise InputError(describe(err) if str(err) else type(err).__name__) from None

    return wrapper


def _cluster_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--cluster/--jobs/--job-option/--job-timeout/--dry-run: batch jobs through dask-jobqueue."""
    options = [
        click.option(
            "--cluster",
            type=click.Choice(["slurm", "pbs", "sge", "lsf", "htcondor"]),
            help="Run on batch jobs of this scheduler (dask-jobqueue; defaults from ~/.config/dask/jobqueue.yaml).",
        ),
        click.option(
            "--jobs",
            default=1,
            show_default=True,
            type=click.IntRange(min=1),
            help="--cluster: jobs to start.",
        ),
        click.option(
            "--job-option",
            "job_option",
            multiple=True,
            metavar="KEY=VALUE",
            help="--cluster: an option of the dask-jobqueue class, e.g. queue=gpu, cores=8, memory=64GB, "
            "walltime=04:00:00, job_extra_directives=--gres=gpu:1 (repeatable).",
        ),
        click.option(
            "--job-timeout",
            default=600.0,
            show_default=True,
            type=FiniteFloatRange(min=1),
            help="--cluster: seconds to wait for a first job to start.",
        ),
        click.option("--dry-run", is_flag=True, help="--cluster: print the job script and submit nothing."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _cluster_spec(cluster, jobs, job_option, job_timeout, dry_run, device="cpu"):
    """The ClusterSpec of the options (None without --cluster); --dry-run prints the job script."""
    from labelgen.client import ClusterSpec
    from labelgen.cluster import job_script, parse_job_options

    if not cluster:
        if job_option or dry_run:
            raise InputError("--job-option and --dry-run need --cluster KIND")
        return None
    spec = ClusterSpec(cluster, jobs, parse_job_options(job_option), job_timeout)
    if dry_run:
        click.echo(job_script(spec.kind, device, spec.options))
        raise SystemExit(0)
    return spec


POSITIVE = click.IntRange(min=1)
NON_NEGATIVE = click.IntRange(min=0)


class FiniteFloatRange(click.FloatRange):
    """``click.FloatRange`` that also refuses NaN and infinity (NaN passes every range comparison)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


METRES = FiniteFloatRange(min=0)
POSITIVE_METRES = FiniteFloatRange(min=0, min_open=True)
SHARE = FiniteFloatRange(0, 1, max_open=True)


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
@click.option(
    "--data-root",
    type=click.Path(path_type=Path),
    help="A KITTI raw root, or a rig-layout root of rectified stereo sequences (docs/rig.md).",
)
@click.option(
    "--kitti-root", type=click.Path(path_type=Path), help="A KITTI raw root (--data-root --layout kitti)."
)
@click.option(
    "--layout",
    type=click.Choice(["kitti", "rig"]),
    help="The data root's layout (default: detected; rig when <root>/*/calib.json exists).",
)
@click.option("--out", "labels_dir", required=True, type=click.Path(path_type=Path), help="Label folder.")
@click.option(
    "--split-file",
    type=click.Path(path_type=Path),
    help="Frames to plan: a monodepth2-style split (KITTI) or a frame list of <sequence>/<frame> lines (rig).",
)
@click.option(
    "--drives",
    "--sequences",
    "drives",
    multiple=True,
    help="Drive folders (KITTI, e.g. 2011_09_26_drive_0001_sync) or sequences (rig).",
)
@click.option(
    "--shard-size",
    default=64,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Frames per shard at most.",
)
@click.option("--overwrite", is_flag=True, help="Replace a different existing plan.")
@_friendly_errors
def labelgen_plan(
    data_root, kitti_root, layout, labels_dir, split_file, drives, shard_size, overwrite
) -> None:
    """Select frames and partition them into shards: writes LABELS/plan.json."""
    from labelgen.lock import folder_lock
    from labelgen.plan import missing_inputs, plan_shards, write_plan

    if split_file and drives:
        raise InputError("give --split-file or --drives/--sequences, not both")
    if (data_root is None) == (kitti_root is None):
        raise InputError("give the data with --data-root DIR (or --kitti-root DIR for a KITTI raw tree)")
    if kitti_root is not None:
        if layout == "rig":
            raise InputError("--kitti-root is a KITTI raw tree; for a rig tree use --data-root")
        data_root, layout = kitti_root, "kitti"
    plan = plan_shards(
        data_root, layout=layout, drives=drives or None, split_file=split_file, shard_size=shard_size
    )
    with folder_lock(labels_dir, "labelgen plan"):
        path = write_plan(plan, labels_dir, overwrite=overwrite)
    click.echo(
        f"{path}: {len(plan.frame_ids)} frames in {len(plan.shards)} shards ({plan.layout} layout), "
        f"plan {plan.plan_id[:12]}"
    )
    for date, reason in plan.calibration_errors.items():
        click.echo(f"warning: {date}: {reason} (its frames will be reported as failed)", err=True)
    count, first = missing_inputs(plan)
    if count:
        more = ", ..." if count > len(first) else ""
        click.echo(
            f"warning: {count} of {len(plan.frame_ids)} planned frames lack an input file "
            f"(they will fail): {', '.join(first)}{more}",
            err=True,
        )


@labelgen.command("run")
@click.argument("labels_dir", type=click.Path(path_type=Path))
@click.option(
    "--stages",
    default="images,lidar,sgbm",
    show_default=True,
    help="Comma-separated stages: images, lidar, sgbm, psmnet, seg.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    help="Local workers (default: one per core, or per GPU with cuda; capped by shards to do and cores).",
)
@click.option("--scheduler", help="Address of an existing dask scheduler, e.g. tcp://host:8786.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or auto (for teacher models).")
@click.option(
    "--batch-size",
    default=1,
    show_default=True,
    type=click.IntRange(1, 1024),
    help="Frames per teacher forward pass.",
)
@click.option(
    "--precision",
    type=click.Choice(["fp32", "fp16"]),
    default="fp32",
    show_default=True,
    help="Teacher inference precision (fp16 needs CUDA).",
)
@click.option("--overwrite", is_flag=True, help="Redo shards that are already complete.")
@click.option(
    "--retry-failed",
    is_flag=True,
    help="Also redo the complete shards that hold failed frames (after a fix).",
)
@click.option(
    "--verify",
    type=click.Choice(["once", "full", "quick"]),
    default="once",
    show_default=True,
    help="Resume check of existing shards: every chunk's checksum of each file not verified before "
    "(once), of every file now (full), or the attributes only (quick).",
)
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
    type=FiniteFloatRange(min=0),
    default=None,
    help="Left-right consistency threshold in px for sgbm (default 1) and psmnet (default off); 0 disables.",
)
@click.option(
    "--num-disparities",
    type=click.IntRange(16, 1024),
    default=192,
    show_default=True,
    help="sgbm stage (multiple of 16).",
)
@click.option("--psmnet-checkpoint", type=click.Path(path_type=Path), help="psmnet stage: checkpoint file.")
@click.option(
    "--align-corners/--no-align-corners",
    default=True,
    show_default=True,
    help="psmnet stage: upsampling convention (on for the 2018 KITTI/SceneFlow checkpoints).",
)
@click.option("--seg-checkpoint", type=click.Path(path_type=Path), help="seg stage: checkpoint file.")
@click.option(
    "--seg-format",
    type=click.Choice(["vainf", "smp"]),
    default="vainf",
    show_default=True,
    help="seg stage: checkpoint layout.",
)
@click.option(
    "--seg-arch",
    default="deeplabv3plus_mobilenet",
    show_default=True,
    help="seg stage: VainF model name, or deeplabv3 / deeplabv3plus for smp.",
)
@click.option("--seg-encoder", help="seg stage, smp format: encoder name, e.g. resnet101.")
@click.option("--progress/--no-progress", default=True, help="Show progress bars.")
@_cluster_options
@_friendly_errors
def labelgen_run(
    labels_dir,
    stages,
    workers,
    scheduler,
    device,
    batch_size,
    precision,
    overwrite,
    retry_failed,
    verify,
    image_size,
    lidar_cams,
    lidar_depth,
    lr_check,
    num_disparities,
    psmnet_checkpoint,
    align_corners,
    seg_checkpoint,
    seg_format,
    seg_arch,
    seg_encoder,
    progress,
    cluster,
    jobs,
    job_option,
    job_timeout,
    dry_run,
) -> None:
    """Run label stages over every shard of the plan (resumes: complete shards are skipped)."""
    from labelgen.report import format_reports
    from labelgen.run import run_stages

    spec = _cluster_spec(cluster, jobs, job_option, job_timeout, dry_run, device)
    names = [s.strip() for s in stages.split(",") if s.strip()]
    if "psmnet" in names and not psmnet_checkpoint:
        raise InputError("stage psmnet needs --psmnet-checkpoint FILE (see `edgedepth labelgen weights`)")
    if "seg" in names and not seg_checkpoint:
        raise InputError("stage seg needs --seg-checkpoint FILE (see docs/teachers.md)")
    options = {
        "images": {"resize": image_size[0]} if image_size else {},
        "lidar": {"cams": [int(c) for c in lidar_cams.split(",")], "depth": lidar_depth},
        "sgbm": {
            "num_disparities": num_disparities,
            "lr_check": 1.0 if lr_check is None else (lr_check or None),
        },
        "psmnet": {
            "checkpoint": str(psmnet_checkpoint),
            "align_corners": align_corners,
            "precision": precision,
            "lr_check": lr_check or None,
        },
        "seg": {
            "checkpoint": str(seg_checkpoint),
            "format": seg_format,
            "arch": seg_arch,
            "encoder": seg_encoder,
            "precision": precision,
        },
    }
    reports = run_stages(
        labels_dir,
        names,
        workers=workers,
        scheduler=scheduler,
        device=device,
        batch_size=batch_size,
        overwrite=overwrite,
        retry_failed=retry_failed,
        verify=verify,
        stage_options={n: options.get(n, {}) for n in names},
        progress=progress,
        cluster=spec,
    )
    click.echo(format_reports(reports))
    if not all(r.all_done for r in reports):
        raise SystemExit(1)  # some frames failed or some shards were not written


@labelgen.command("weights")
@click.argument("name")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Folder for the file.")
@_friendly_errors
def labelgen_weights(name, out_dir) -> None:
    """Obtain a public teacher checkpoint by NAME (e.g. psmnet-kitti2015) and check its SHA-256."""
    from labelgen.teachers.weights import fetch_weights

    click.echo(str(fetch_weights(name, out_dir)))


@labelgen.command("inspect")
@click.argument("labels_dir", type=click.Path(path_type=Path))
@click.option("--png", "png_dir", type=click.Path(path_type=Path), help="Write PNG previews here.")
@click.option(
    "--verify",
    type=click.Choice(["once", "full", "quick"]),
    default="once",
    show_default=True,
    help="Read every chunk (checksums) of each shard file not verified before (once), of every "
    "file now (full), or check the attributes only (quick).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    help="Local dask workers for verification (default: one per core when there is much to read).",
)
@click.option("--scheduler", help="Verify on an existing dask scheduler, e.g. tcp://host:8786.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar while verifying.")
@_friendly_errors
def labelgen_inspect(labels_dir, png_dir, verify, workers, scheduler, progress) -> None:
    """Completeness and value ranges per stage; PNG previews of the first frames."""
    from labelgen.client import Workers
    from labelgen.inspect import inspect_labels, write_previews

    with Workers(scheduler, workers) as pool:
        click.echo(inspect_labels(labels_dir, verify=verify, workers=pool, progress=progress))
    if png_dir:
        for path in write_previews(labels_dir, png_dir):
            click.echo(f"wrote {path}")


@labelgen.command("score")
@click.argument("labels_dir", type=click.Path(path_type=Path))
@click.option("--stage", required=True, help="Depth stage to score: sgbm, psmnet, lidar, X_corrected.")
@click.option(
    "--data-root",
    type=click.Path(path_type=Path),
    help="Where the ground truth is (default: the plan's data root).",
)
@click.option(
    "--split",
    help="Frames: a rig frame-list file, or a KITTI split name or file (default: every frame with ground truth; "
    "KITTI: eigen).",
)
@click.option(
    "--gt",
    type=click.Choice(["lidar", "annotated", "depth_gt"]),
    help="Ground truth. Default: lidar (KITTI), depth_gt (rig).",
)
@click.option(
    "--crop", type=click.Choice(["garg", "eigen", "none"]), help="Default: garg (KITTI), none (rig)."
)
@click.option("--median-scaling", is_flag=True, help="Scale each frame by median(gt)/median(label) first.")
@click.option("--out", "out_json", type=click.Path(path_type=Path), help="JSON to write (+ _frames.csv).")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@_friendly_errors
def labelgen_score(labels_dir, stage, data_root, split, gt, crop, median_scaling, out_json, progress) -> None:
    """Score a teacher stage's labels against ground truth, on the pixels it labels."""
    from labelgen.folder import LabelFolder
    from student.eval_frames import EvalSet
    from student.evaluate import score_teacher

    folder = LabelFolder(labels_dir)
    plan = folder.plan
    eval_set = EvalSet(data_root or plan.data_root, split, gt, crop, layout=plan.layout)
    result = score_teacher(folder, stage, eval_set, median_scaling=median_scaling, progress=progress)
    click.echo(f"scored {stage}: {result.provenance['protocol']}")
    click.echo(result.format_table())
    if result.provenance["no_label"]:
        missing = result.provenance["no_label"]
        click.echo(f"{len(missing)} frames have no {stage} label (not scored): {', '.join(missing[:5])}")
    if out_json:
        result.save(out_json)
        click.echo(f"wrote {out_json}")


@main.group(short_help="Bring public data sets into the rig layout.")
def data() -> None:
    """Data sets: convert public stereo sets into the rig layout (docs/rig.md)."""


@data.group("import")
def data_import() -> None:
    """Import a public data set into a rig-layout root: ROOT/<sequence>/{calib.json,left,right,...}."""


@data_import.command("middlebury")
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--scenes", help="Comma-separated scene folders (default: every scene under SRC).")
@click.option(
    "--dmin",
    "dmin_px_full",
    default=200.0,
    show_default=True,
    type=POSITIVE_METRES,
    help="Disparity offset at full size (px) where a scene has no dmin.txt.",
)
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@_friendly_errors
def data_import_middlebury(src, out, scenes, dmin_px_full, progress) -> None:
    """Middlebury 2005/2006 scenes (third size: view1/view5/disp1.png) -> rig layout, with depth_gt and a
    simulated LiDAR scan; writes OUT/splits/train.txt and heldout.txt for the fixed public split."""
    from labelgen.importers import import_middlebury

    names = [n.strip() for n in scenes.split(",") if n.strip()] if scenes else None
    report = import_middlebury(src, out, scenes=names, dmin_px_full=dmin_px_full, progress=progress)
    click.echo(report.format())


@data_import.command("kitti-depth")
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--drives", multiple=True, help="Drive folders to import (default: all).")
@click.option("--annotated-root", type=click.Path(path_type=Path), help="Where data_depth_annotated is.")
@click.option(
    "--depth-range",
    default="1,80",
    show_default=True,
    metavar="MIN,MAX",
    help="Metres written as the sequences' depth_range_m.",
)
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@_friendly_errors
def data_import_kitti_depth(src, out, drives, annotated_root, depth_range, progress) -> None:
    """A KITTI raw tree (Velodyne scans or projected depth, annotated ground truth) -> rig layout."""
    from labelgen.importers import import_kitti_depth

    try:
        lo, hi = (float(v) for v in depth_range.split(","))
    except ValueError:
        raise InputError(f"--depth-range {depth_range!r} is not MIN,MAX in metres, e.g. 1,80") from None
    report = import_kitti_depth(
        src,
        out,
        drives=drives or None,
        annotated_root=annotated_root,
        depth_range_m=(lo, hi),
        progress=progress,
    )
    click.echo(report.format())


@main.group(short_help="Teacher-vs-LiDAR depth bias table.")
def calib() -> None:
    """The per-distance teacher-vs-LiDAR depth bias look-up table: fit, apply, plot."""


@calib.command("fit")
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
@click.option("--stat", type=click.Choice(["mean", "median"]), default="mean", show_default=True)
@click.option(
    "--min-count",
    default=100,
    show_default=True,
    type=POSITIVE,
    help="Pixels a bin needs; fewer: interpolated, flagged.",
)
@click.option(
    "--holdout", default=0.1, show_default=True, type=SHARE, help="Share of drives held out for evaluation."
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
@_cluster_options
@_friendly_errors
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
    from calib.fit import fit_from_labels, format_lut
    from calib.plot import plot_lut
    from labelgen.client import Workers

    spec = _cluster_spec(cluster, jobs, job_option, job_timeout, dry_run)
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
    lut.save(out_path)
    click.echo(format_lut(lut))
    click.echo(f"wrote {out_path}")
    if png:
        click.echo(f"wrote {plot_lut(lut, png)}")


@calib.command("apply")
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
@_cluster_options
@_friendly_errors
def calib_apply(
    lut_path, labels_dir, teacher, workers, scheduler, cluster, jobs, job_option, job_timeout, dry_run
) -> None:
    """Write LABELS/<teacher>_corrected shards: teacher depth + LUT(teacher depth)."""
    from calib.apply import write_corrected
    from labelgen.client import Workers
    from labelgen.lock import folder_lock

    spec = _cluster_spec(cluster, jobs, job_option, job_timeout, dry_run)
    with (
        folder_lock(labels_dir, f"calib apply --teacher {teacher}"),
        Workers(scheduler, workers, "cpu", spec) as pool,
    ):
        summary = write_corrected(labels_dir, lut_path, teacher, progress=True, client=pool)
    click.echo(
        f"{summary['path']}: {summary['written']} shards written, {summary['skipped']} already current, "
        f"{summary['frames']} frames ({summary['frames_failed']} failed), table {summary['lut_sha256'][:12]}"
    )


@calib.command("plot")
@click.argument("lut_path", type=click.Path(path_type=Path))
@click.option("--out", "out_png", required=True, type=click.Path(path_type=Path), help="PNG to write.")
@_friendly_errors
def calib_plot(lut_path, out_png) -> None:
    """Plot the table: error per distance with its confidence band, counts, held-out residual."""
    from calib.lut import load_lut
    from calib.plot import plot_lut

    click.echo(f"wrote {plot_lut(load_lut(lut_path), out_png)}")


@main.group(short_help="The student network: train, eval, predict, summary.")
def student() -> None:
    """The 0.32 M-parameter depth + segmentation student: train, evaluate, predict; size and speed."""


def _one_size(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    return _parse_size(ctx, param, (value,))[0] if value else None


@student.command("train")
@click.argument("labels_dir", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Run folder.")
@click.option(
    "--teacher", default="psmnet", show_default=True, help="Depth stage: psmnet, sgbm, lidar, X_corrected."
)
@click.option(
    "--lut", type=click.Path(path_type=Path), help="Bias table (lut.json) applied to the teacher depth."
)
@click.option(
    "--variant", default="L", show_default=True, type=click.Choice(VARIANT_NAMES, case_sensitive=False)
)
@click.option("--epochs", default=20, show_default=True, type=POSITIVE)
@click.option("--iters-per-epoch", default=1000, show_default=True, type=POSITIVE)
@click.option(
    "--batch-size",
    default=8,
    show_default=True,
    type=click.IntRange(1, 1024),
    help="Per process; effective = x processes.",
)
@click.option("--lr", default=0.01, show_default=True, type=POSITIVE_METRES, help="Adam learning rate.")
@click.option(
    "--lr-decay",
    default=0.9,
    show_default=True,
    type=FiniteFloatRange(0, 1, min_open=True),
    help="Learning rate factor after every epoch.",
)
@click.option("--size", default="1056x320", show_default=True, callback=_one_size, metavar="WxH")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or auto.")
@click.option("--amp", is_flag=True, help="Mixed precision (fp16 on CUDA, bf16 on CPU).")
@click.option(
    "--workers",
    default=2,
    show_default=True,
    type=NON_NEGATIVE,
    help="Data loader worker processes (capped at the CPU cores, with a note).",
)
@click.option(
    "--encoder-weights",
    type=click.Path(path_type=Path),
    help="ImageNet MobileNetV2-0.35 encoder: Keras .h5 (the paper's) or a torchvision state dict.",
)
@click.option(
    "--arch", type=click.Choice(ARCH_NAMES), default="paper", show_default=True, help="Decoder architecture."
)
@click.option("--no-seg", is_flag=True, help="Depth only (Table II ablation).")
@click.option("--depth-space", type=click.Choice(["log", "linear"]), default="log", show_default=True)
@click.option(
    "--val-drives", help="Comma-separated validation drives or sequences (default: --val-fraction)."
)
@click.option(
    "--val-fraction", default=0.1, show_default=True, type=SHARE, help="Share of frames held out, by drive."
)
@click.option(
    "--train-frames", type=click.Path(path_type=Path), help="Frame list: train on these frames only."
)
@click.option("--val-frames", type=click.Path(path_type=Path), help="Frame list: validate on these frames.")
@click.option(
    "--val-max-frames",
    default=200,
    show_default=True,
    type=NON_NEGATIVE,
    help="Validate on at most this many held-out frames (a seeded choice, the same every epoch; 0: all).",
)
@click.option("--no-augment", is_flag=True, help="No flip / colour jitter / crops.")
@click.option(
    "--crop-zoom",
    default=1.0,
    show_default=True,
    type=FiniteFloatRange(min=1),
    help="Augmentation: random crops of 1/z of each side (depth labels / z), z up to this (1 = none).",
)
@click.option(
    "--min-depth", type=METRES, help="Labels below are ignored (m; default: the data's range, or 1)."
)
@click.option(
    "--max-depth",
    type=POSITIVE_METRES,
    help="Labels above are ignored (m; default: the data's range, or 80).",
)
@click.option("--seed", default=0, show_default=True, type=NON_NEGATIVE)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--progress/--no-progress", default=True, help="Show progress bars.")
@_friendly_errors
def student_train(
    labels_dir,
    out_dir,
    variant,
    size,
    arch,
    no_seg,
    depth_space,
    val_drives,
    no_augment,
    resume,
    progress,
    **options,
) -> None:
    """Train a student from a label folder (the paper's recipe by default); writes the run folder.

    Several processes or machines: torchrun --nproc-per-node N --no-python edgedepth student train ...
    """
    from student.config import ModelConfig, TrainConfig
    from student.train import train

    options = {k: str(v) if isinstance(v, Path) else v for k, v in options.items()}
    config = TrainConfig(
        labels_dir=str(labels_dir),
        out_dir=str(out_dir),
        augment=not no_augment,
        val_drives=tuple(d.strip() for d in val_drives.split(",") if d.strip()) if val_drives else None,
        **options,
    )
    if (options["min_depth"] is None) != (options["max_depth"] is None):
        raise InputError("give both --min-depth and --max-depth, or neither (the data's range)")
    model = ModelConfig(variant=variant, seg=not no_seg, depth_space=depth_space, input_size=size, arch=arch)
    result = train(config, model, resume=resume, progress=progress, log=click.echo)
    if result.rank == 0:
        click.echo(
            f"{result.run_dir}: {result.epochs} epochs, {result.steps} steps; best.pt by "
            f"{result.best_metric} = {result.best_value:.4f}"
        )


@student.command("eval")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option(
    "--data-root",
    "--kitti-root",
    "data_root",
    required=True,
    type=click.Path(path_type=Path),
    help="A KITTI raw root or a rig-layout root (detected; docs/rig.md).",
)
@click.option(
    "--split",
    help="KITTI: eigen (697, default), eigen_benchmark (652) or a split file; rig: a frame-list file "
    "(default: every frame with ground truth).",
)
@click.option(
    "--gt",
    type=click.Choice(["lidar", "annotated", "depth_gt"]),
    help="Ground truth. Default: lidar (KITTI, the public protocol), depth_gt (rig).",
)
@click.option("--annotated-root", type=click.Path(path_type=Path), help="Where data_depth_annotated is.")
@click.option(
    "--variant", type=click.Choice(VARIANT_NAMES, case_sensitive=False), help="Cut to a smaller one."
)
@click.option(
    "--crop", type=click.Choice(["garg", "eigen", "none"]), help="Default: garg (KITTI), none (rig)."
)
@click.option(
    "--median-scaling",
    is_flag=True,
    help="Scale each prediction by median(gt)/median(pred) first (structure, not scale).",
)
@click.option("--size", callback=_one_size, metavar="WxH", help="Input size (default: the checkpoint's).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or auto.")
@click.option("--batch-size", default=4, show_default=True, type=click.IntRange(1, 1024))
@click.option(
    "--resize-in",
    type=click.Choice(["depth", "disparity"]),
    default="depth",
    show_default=True,
    help="Upsample predictions as depth, or as disparity (monodepth2).",
)
@click.option(
    "--out", "out_json", type=click.Path(path_type=Path), help="eval.json to write (+ _frames.csv)."
)
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@_friendly_errors
def student_eval(checkpoint, data_root, device, out_json, **options) -> None:
    """Score a checkpoint against ground truth with the standard depth metrics (KITTI or rig data)."""
    from labelgen.devices import resolve_device
    from student.evaluate import EvalResult, evaluate_checkpoint

    if out_json:
        EvalResult.check_writable(out_json)  # before the work, not after it
    result = evaluate_checkpoint(checkpoint, data_root, device=resolve_device(device), **options)
    click.echo(f"scored: {result.provenance['protocol']}")
    click.echo(result.format_table())
    if out_json:
        result.save(out_json)
        click.echo(f"wrote {out_json}")


@student.command("ablate")
@click.argument("labels_dir", type=click.Path(path_type=Path))
@click.option(
    "--eval-root",
    required=True,
    type=click.Path(path_type=Path),
    help="Held-out data with ground truth (rig or KITTI layout).",
)
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Experiment folder.")
@click.option(
    "--configs",
    default="lidar,teacher,teacher_lut,linear,depth_only,random_init,fast",
    show_default=True,
    help="Comma-separated configurations (those the data cannot run are left out, with a note).",
)
@click.option(
    "--seeds", default=3, show_default=True, type=click.IntRange(1, 100), help="Runs per configuration."
)
@click.option(
    "--budget-minutes",
    type=POSITIVE_METRES,
    help="Total training time: picks the input size and steps that fit (and says what it picked).",
)
@click.option("--teacher", default="psmnet", show_default=True, help="Teacher depth stage: psmnet or sgbm.")
@click.option("--train-frames", type=click.Path(path_type=Path), help="Frame list: train on these only.")
@click.option("--val-frames", type=click.Path(path_type=Path), help="Frame list: pick checkpoints on these.")
@click.option("--eval-frames", type=click.Path(path_type=Path), help="Frame list of --eval-root to score.")
@click.option(
    "--encoder-weights", type=click.Path(path_type=Path), help="ImageNet MobileNetV2-0.35 (.h5 or .pt)."
)
@click.option(
    "--lut", type=click.Path(path_type=Path), help="Bias table (default: fitted on the training frames)."
)
@click.option("--size", callback=_one_size, metavar="WxH", help="Training input size (default: picked).")
@click.option("--epochs", default=4, show_default=True, type=POSITIVE)
@click.option("--iters-per-epoch", default=75, show_default=True, type=POSITIVE)
@click.option("--batch-size", default=8, show_default=True, type=POSITIVE)
@click.option("--lr", default=1e-3, show_default=True, type=POSITIVE_METRES)
@click.option("--lr-decay", default=0.7, show_default=True, type=FiniteFloatRange(0, 1, min_open=True))
@click.option(
    "--crop-zoom",
    default=1.0,
    show_default=True,
    type=FiniteFloatRange(min=1),
    help="Random crops, depth labels / zoom (1 = off; 1.5 hurt metric depth on the Middlebury validation scenes).",
)
@click.option("--fps-size", default="480x320", show_default=True, callback=_one_size, metavar="WxH")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or auto.")
@click.option("--workers", default=2, show_default=True, type=NON_NEGATIVE, help="Data loader workers.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@_friendly_errors
def student_ablate(labels_dir, eval_root, out_dir, configs, progress, **options) -> None:
    """Train configurations x seeds on one label folder, score each on held-out ground truth.

    Writes OUT/table.md, table.csv, results.json and ablation.png (mean ± 95 % CI over seeds).
    """
    from student.ablate import AblateSettings, run_ablation

    options = {k: str(v) if isinstance(v, Path) else v for k, v in options.items()}
    settings = AblateSettings(
        labels_dir=str(labels_dir),
        eval_root=str(eval_root),
        out_dir=str(out_dir),
        configs=tuple(c.strip() for c in configs.split(",") if c.strip()),
        **options,
    )
    results = run_ablation(settings, progress=progress, log=click.echo)
    if results:
        click.echo((Path(out_dir) / "table.md").read_text())
        click.echo(f"wrote {Path(out_dir) / 'table.md'}, table.csv, results.json, ablation.png")


@student.command("predict")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Folder for the PNGs.")
@click.option(
    "--variant", type=click.Choice(VARIANT_NAMES, case_sensitive=False), help="Cut to a smaller one."
)
@click.option("--size", callback=_one_size, metavar="WxH", help="Input size (default: the checkpoint's).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or auto.")
@click.option("--batch-size", default=4, show_default=True, type=click.IntRange(1, 1024))
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@_friendly_errors
def student_predict(checkpoint, inputs, out_dir, variant, size, device, batch_size, progress) -> None:
    """Depth (colour PNG with a metre scale, 16-bit KITTI PNG) and class maps for images or folders."""
    import warnings

    from labelgen.devices import resolve_device
    from student.predict import predict_images

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # skipped images are listed below instead
        done = predict_images(
            checkpoint, inputs, out_dir, variant, size, resolve_device(device), batch_size, progress
        )
    for line in done.skipped:
        click.echo(f"skipped: {line}", err=True)
    click.echo(f"{out_dir}: {len(done)} images predicted, {len(done.skipped)} skipped")


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


@student.command("export")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Export folder.")
@click.option("--variants", default="L,M,S,XS", show_default=True, help="Comma-separated variants.")
@click.option("--size", default="480x320", show_default=True, callback=_one_size, metavar="WxH")
@click.option("--target", type=click.Choice(["trt8", "trt10"]), default="trt10", show_default=True)
@click.option("--precision", default="fp32", show_default=True, help="Comma-separated: fp32, fp16, int8.")
@click.option("--calib-labels", type=click.Path(path_type=Path), help="Label folder for INT8 calibration.")
@click.option(
    "--calib-frames",
    default=64,
    show_default=True,
    type=click.IntRange(1, 4096),
    help="INT8 calibration frames.",
)
@click.option("--with-seg", is_flag=True, help="Also output the class map.")
@click.option("--input-dtype", type=click.Choice(["uint8", "float32"]), help="Default: per target.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@_friendly_errors
def student_export(
    checkpoint,
    out_dir,
    variants,
    size,
    target,
    precision,
    calib_labels,
    calib_frames,
    with_seg,
    input_dtype,
    progress,
) -> None:
    """ONNX files for TensorRT 8.2 (Jetson TX2) or 10/11, FP32/FP16/INT8, checked against PyTorch."""
    from student.export import export_onnx

    manifest = export_onnx(
        checkpoint,
        out_dir,
        variants=_csv(variants),
        size=size,
        target=target,
        precisions=_csv(precision),
        with_seg=with_seg,
        calib_labels=calib_labels,
        calib_frames=calib_frames,
        input_dtype=input_dtype,
        progress=progress,
    )
    click.echo(manifest.format_table())


@student.command("build-engine")
@click.argument("onnx_path", type=click.Path(path_type=Path))
@click.option("--out", "out_path", required=True, type=click.Path(path_type=Path), help="Engine file.")
@click.option("--fp16", is_flag=True, help="FP16 builder flag (TensorRT 8/10).")
@click.option("--int8", is_flag=True, help="INT8: Q/DQ in the file, or calibrate from --calib-labels.")
@click.option("--calib-labels", type=click.Path(path_type=Path), help="Label folder for the calibrator.")
@click.option("--calib-frames", default=64, show_default=True, type=click.IntRange(1, 4096))
@click.option(
    "--workspace",
    "workspace_mb",
    default=1024,
    show_default=True,
    type=POSITIVE,
    help="Builder workspace (MB).",
)
@_friendly_errors
def student_build_engine(onnx_path, out_path, fp16, int8, calib_labels, calib_frames, workspace_mb) -> None:
    """Build a TensorRT engine from an exported ONNX file (needs tensorrt and a GPU).

    Without them: one line saying so, with the trtexec command to run on the device; exit status 3.
    """
    from student.tensorrt import EngineBuildError, TensorRTUnavailable, build_engine

    try:
        report = build_engine(
            onnx_path,
            out_path,
            fp16=fp16,
            int8=int8,
            calib_labels=calib_labels,
            calib_frames=calib_frames,
            workspace_mb=workspace_mb,
            log=click.echo,
        )
    except TensorRTUnavailable as err:
        raise Unavailable(str(err)) from None
    except EngineBuildError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"wrote {report.path}")


@student.command("bench")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--variants", default="L,M,S,XS", show_default=True, help="Comma-separated variants.")
@click.option("--size", default="480x320", show_default=True, callback=_one_size, metavar="WxH")
@click.option(
    "--backends", default="torch,onnxruntime", show_default=True, help="torch, onnxruntime, tensorrt."
)
@click.option("--precision", default="fp32", show_default=True, help="Comma-separated: fp32, fp16, int8.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--threads", type=click.IntRange(1, 1024), help="CPU threads (default: all cores).")
@click.option(
    "--repeats",
    default=50,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Timed runs per row (after warm-up).",
)
@click.option("--calib-labels", type=click.Path(path_type=Path), help="Label folder for INT8 calibration.")
@click.option("--out", "out_json", default="bench.json", show_default=True, type=click.Path(path_type=Path))
@_friendly_errors
def student_bench(
    source, variants, size, backends, precision, device, threads, repeats, calib_labels, out_json
) -> None:
    """Latency and frames per second per variant, backend and precision (the paper's Table VI).

    SOURCE is a student checkpoint (exported on the fly) or an export folder. Writes bench.json and
    a PNG chart beside it; backends that are not installed are listed as such.
    """
    from labelgen.atomic import check_writable
    from labelgen.devices import resolve_device
    from student.speed import bench_variants

    for path in (out_json, Path(out_json).with_suffix(".png")):
        check_writable(path)  # before the work, not after it
    result = bench_variants(
        source,
        variants=_csv(variants),
        size=size,
        backends=_csv(backends),
        precisions=_csv(precision),
        device=resolve_device(device),
        threads=threads,
        repeats=repeats,
        calib_labels=calib_labels,
        progress=True,
    )
    click.echo(result.format_table())
    result.save_json(out_json)
    chart = Path(out_json).with_suffix(".png")
    result.plot(chart)
    click.echo(f"wrote {out_json} and {chart}")


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
        click.option(
            "--num-classes",
            default=19,
            show_default=True,
            type=click.IntRange(1, 255),
            help="Segmentation classes.",
        ),
        click.option("--no-seg", is_flag=True, help="Depth-only model (no segmentation head)."),
        click.option(
            "--arch", type=click.Choice(ARCH_NAMES), default="paper", show_default=True, help="Decoder."
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@student.command("summary")
@_summary_options
@click.option("--latency", is_flag=True, help="Also measure the median latency (batch 1, eager).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto (for --latency).")
@click.option(
    "--repeats",
    default=20,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Timed runs per row (for --latency).",
)
@_friendly_errors
def student_summary(variants, sizes, num_classes, no_seg, arch, latency, device, repeats) -> None:
    """Parameters, multiply-adds and output size of each student variant."""
    from labelgen.devices import resolve_device
    from student.bench import DEFAULT_SIZES, format_table, summarize_variants

    rows = summarize_variants(
        variants or VARIANT_NAMES,
        sizes or DEFAULT_SIZES,
        num_classes,
        not no_seg,
        latency=latency,
        device=resolve_device(device),
        repeats=repeats,
        arch=arch,
    )
    click.echo(format_table(rows))


@main.command(short_help="The whole pipeline on embedded data, with a report.")
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
@_friendly_errors
def demo(
    out_dir, data_root, split_file, psmnet_checkpoint, seg_checkpoint, seg_format, seg_arch, seg_encoder,
    workers, device, progress,
) -> None:  # fmt: skip
    """Plan, teacher labels, teachers vs ground truth, bias table, a short student training, eval,
    predict, ONNX export (FP32 + INT8) and a speed table; writes OUT/report.html and report.md."""
    from demo import run_demo
    from labelgen.devices import resolve_device

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
    )
    click.echo(f"\n{'stage':<46}{'status':>9}{'seconds':>9}")
    for step in result.steps:
        click.echo(f"{step.title:<46}{step.status:>9}{step.seconds:>9.1f}")
    click.echo(f"{'total':<46}{'':>9}{result.seconds:>9.1f}")
    click.echo(f"\nreport: {out_dir / 'report.html'} (and report.md)")


if __name__ == "__main__":
    main()
