"""Commands that score and predict with the student's evaluation: `student eval`,
`student predict`, and `labelgen score` (teacher labels against ground truth, the same metrics).

``edgedepth.student.commands`` adds the first two to the `student` group; ``edgedepth.cli`` adds
`score` to the `labelgen` group (labelgen stands below the student and may not import it).
"""

from __future__ import annotations

from pathlib import Path

import click

from edgedepth.common import VARIANT_NAMES, UpperChoice, friendly_errors, one_size


@click.command("eval")
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
@click.option("--variant", type=UpperChoice(VARIANT_NAMES), help="Cut to a smaller one.")
@click.option(
    "--crop", type=click.Choice(["garg", "eigen", "none"]), help="Default: garg (KITTI), none (rig)."
)
@click.option(
    "--median-scaling",
    is_flag=True,
    help="Scale each prediction by median(gt)/median(pred) first (structure, not scale).",
)
@click.option("--size", callback=one_size, metavar="WxH", help="Input size (default: the checkpoint's).")
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
@friendly_errors
def student_eval(checkpoint, data_root, device, out_json, **options) -> None:
    """Score a checkpoint against ground truth with the standard depth metrics (KITTI or rig data)."""
    from edgedepth.common import resolve_device
    from edgedepth.student.evaluate import EvalResult, evaluate_checkpoint

    if out_json:
        EvalResult.check_writable(out_json)  # before the work, not after it
    result = evaluate_checkpoint(checkpoint, data_root, device=resolve_device(device), **options)
    click.echo(f"scored: {result.provenance['protocol']}")
    click.echo(result.format_table())
    if out_json:
        result.save(out_json)
        click.echo(f"wrote {out_json}")


@click.command("predict")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Folder for the PNGs.")
@click.option("--variant", type=UpperChoice(VARIANT_NAMES), help="Cut to a smaller one.")
@click.option("--size", callback=one_size, metavar="WxH", help="Input size (default: the checkpoint's).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or auto.")
@click.option("--batch-size", default=4, show_default=True, type=click.IntRange(1, 1024))
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@friendly_errors
def student_predict(checkpoint, inputs, out_dir, variant, size, device, batch_size, progress) -> None:
    """Depth (colour PNG with a metre scale, 16-bit KITTI PNG) and class maps for images or folders."""
    import warnings

    from edgedepth.common import resolve_device
    from edgedepth.student.evaluate import predict_images

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # skipped images are listed below instead
        done = predict_images(
            checkpoint, inputs, out_dir, variant, size, resolve_device(device), batch_size, progress
        )
    for line in done.skipped:
        click.echo(f"skipped: {line}", err=True)
    for line in done.notes:
        click.echo(f"note: {line}", err=True)
    click.echo(f"{out_dir}: {len(done)} images predicted, {len(done.skipped)} skipped")


@click.command("score")
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
@friendly_errors
def labelgen_score(labels_dir, stage, data_root, split, gt, crop, median_scaling, out_json, progress) -> None:
    """Score a teacher stage's labels against ground truth, on the pixels it labels."""
    from edgedepth.labelgen import LabelFolder
    from edgedepth.student.evaluate import EvalSet, score_teacher

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


__all__ = ["labelgen_score", "student_eval", "student_predict"]
