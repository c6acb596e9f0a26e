"""The `edgedepth student` commands: train, ablate and summary here; eval and predict from
``evaluate_commands``, export, build-engine and bench from ``deploy_commands``.

Only options are parsed here; each command imports the library inside it (torch stays out of
`edgedepth --help`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from edgedepth.common import (
    ARCH_NAMES,
    METRES,
    NON_NEGATIVE,
    POSITIVE,
    POSITIVE_METRES,
    SHARE,
    VARIANT_NAMES,
    FiniteFloatRange,
    InputError,
    UpperChoice,
    friendly_errors,
    one_size,
    parse_size,
)
from edgedepth.student.deploy_commands import student_bench, student_build_engine, student_export
from edgedepth.student.evaluate_commands import student_eval, student_predict


@click.group(
    "student",
    short_help="train, ablate, eval, predict, export, bench, build-engine, summary",
)
def student_group() -> None:
    """The 0.32 M-parameter depth + segmentation student: train and ablate it, evaluate it, predict
    with it, export it for edge runtimes, build a TensorRT engine, benchmark speed at accuracy, and
    summarise its size."""


@click.command("train")
@click.argument("labels_dir", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Run folder.")
@click.option(
    "--teacher", default="psmnet", show_default=True, help="Depth stage: psmnet, sgbm, lidar, X_corrected."
)
@click.option(
    "--lut", type=click.Path(path_type=Path), help="Bias table (lut.json) applied to the teacher depth."
)
@click.option(
    "--variant",
    default="L",
    show_default=True,
    type=UpperChoice(VARIANT_NAMES),
    help="L, M, S, XS keep 4, 3, 2, 1 decoder blocks (any case).",
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
@click.option("--size", default="1056x320", show_default=True, callback=one_size, metavar="WxH")
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
    "--window",
    default=1.0,
    show_default=True,
    type=FiniteFloatRange(min=0, max=1, min_open=True),
    help="Augmentation: train on random windows of this share of each side, at the input's scale "
    "(1 = the whole input; for few frames, docs/evaluation.md 'Border stripes').",
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
@friendly_errors
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
    from edgedepth.student.model import ModelConfig, TrainConfig
    from edgedepth.student.train import train

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


@click.command("ablate")
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
@click.option("--size", callback=one_size, metavar="WxH", help="Training input size (default: picked).")
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
@click.option("--fps-size", default="480x320", show_default=True, callback=one_size, metavar="WxH")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or auto.")
@click.option("--workers", default=2, show_default=True, type=NON_NEGATIVE, help="Data loader workers.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@friendly_errors
def student_ablate(labels_dir, eval_root, out_dir, configs, progress, **options) -> None:
    """Train configurations x seeds on one label folder, score each on held-out ground truth.

    Writes OUT/table.md, table.csv, results.json and ablation.png (mean ± 95 % CI over seeds).
    """
    from edgedepth.student.ablate import AblateSettings, run_ablation

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


def _summary_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--variant",
            "variants",
            multiple=True,
            type=UpperChoice(VARIANT_NAMES),
            help="Variant(s) to list (default: all).",
        ),
        click.option(
            "--size",
            "sizes",
            multiple=True,
            callback=parse_size,
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


@click.command("summary")
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
@friendly_errors
def student_summary(variants, sizes, num_classes, no_seg, arch, latency, device, repeats) -> None:
    """Parameters, multiply-adds and output size of each student variant."""
    from edgedepth.common import resolve_device
    from edgedepth.student.deploy import DEFAULT_SIZES, format_table, summarize_variants

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


for _command in (
    student_train,
    student_eval,
    student_ablate,
    student_predict,
    student_export,
    student_build_engine,
    student_bench,
    student_summary,
):
    student_group.add_command(_command)

__all__ = ["student_ablate", "student_group", "student_summary", "student_train"]
