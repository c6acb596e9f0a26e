"""Border stripes of the demo's one-frame student on images it never saw, per training setting.

Trains the demo's student (L, 384x256, 4 x 40 steps of batch 4 on the one Motorcycle frame, SGBM
labels and the demo's bias table) once per setting and seed, then measures on images it never saw
(the Middlebury 2006 scenes under ``--middlebury`` and three scikit-image photos), on the raw
network output (no clamp):

- **edge step**: per image, the median log depth of the outer 1/32 of the columns minus that of
  the next 3/32, averaged over the images (left, right). A stripe is a step at the border;
  the Middlebury ground truth has +0.009 / +0.005 by the same measure;
- **stripe**: the size of both steps, near or far, |left| and |right| averaged over the seeds
  (a near band is a stripe too);
- **raw max**: the largest predicted depth (m), against the trained range of 1-8 m;
- **in-sample Abs Rel**: `student eval` on the training frame itself (what the demo reports).

"replicate padding" is a diagnostic, not an option: the same training with every padded convolution
padding by replication, which hides where the image border is.

Run `edgedepth demo --out DEMO` first (its labels and bias table are reused), then
`python benchmarks/border_stripes.py DEMO --middlebury /data/middlebury2006 --seeds 3`.
Each run takes about 3 minutes on 2 CPU cores (a finished run in ``--out`` is reused). Writes
``OUT/border_stripes.png``: seed 0 of each setting on four of the images. Results:
docs/evaluation.md, "Border stripes".
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import click
import numpy as np
import torch
from skimage import data as skdata

from edgedepth.labelgen import read_image
from edgedepth.student.evaluate.evaluation import evaluate_checkpoint
from edgedepth.student.model import ModelConfig, TrainConfig, load_student, preprocess_image
from edgedepth.student.train import train

SETTINGS = {  # name -> (crop zoom, window, padding of every padded convolution)
    "plain": (1.0, 1.0, "zeros"),
    "replicate padding": (1.0, 1.0, "replicate"),  # a diagnostic: the paper's network pads with zeros
    "crops 1.25": (1.25, 1.0, "zeros"),
    "crops 1.5": (1.5, 1.0, "zeros"),
    "crops 2": (2.0, 1.0, "zeros"),
    "windows 0.5": (1.0, 0.5, "zeros"),
    "windows 0.625": (1.0, 0.625, "zeros"),
    "windows 0.75": (1.0, 0.75, "zeros"),
    "windows 0.75 + crops 1.5": (1.5, 0.75, "zeros"),
}


@contextlib.contextmanager
def padding_mode(mode: str) -> Iterator[None]:
    """Every student built inside (training, loading, evaluation) pads with ``mode`` (a diagnostic:
    the paper's network pads with zeros, and nothing outside this benchmark changes it)."""
    original = ModelConfig.build
    ModelConfig.build = lambda self, return_classes=False: with_padding(original(self, return_classes), mode)
    try:
        yield
    finally:
        ModelConfig.build = original


def with_padding(model: torch.nn.Module, mode: str) -> torch.nn.Module:
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d) and any(p > 0 for p in module.padding):
            module.padding_mode = mode
    return model


def unseen_images(middlebury: Path) -> list[np.ndarray]:
    scenes = sorted(middlebury.glob("*/view1.png"))
    if not scenes:
        raise click.BadParameter(f"{middlebury}: no <Scene>/view1.png", param_hint="--middlebury")
    return [read_image(p) for p in scenes] + [skdata.astronaut(), skdata.coffee(), skdata.chelsea()]


def edge_step(depth: np.ndarray) -> tuple[float, float]:
    """(left, right): median log depth of the outer 1/32 of the columns minus that of the next 3/32."""
    width = depth.shape[1]
    outer, inner = max(1, width // 32), width // 8
    log = np.log(depth)
    return (
        float(np.median(log[:, :outer]) - np.median(log[:, outer:inner])),
        float(np.median(log[:, -outer:]) - np.median(log[:, -inner:-outer])),
    )


def run_dir(out: Path, name: str, seed: int) -> Path:
    """The training run of one setting and seed under ``out`` (reused when its best.pt exists)."""
    return out / f"{name.replace(' ', '_').replace('+', 'and')}_s{seed}"


def raw_depths(checkpoint: Path, images: list[np.ndarray]) -> Iterator[np.ndarray]:
    """The network's own depth (m, no clamp) for each image, at the checkpoint's input size."""
    model, config = load_student(checkpoint)
    model.output_range = None  # the network itself, not the clamp
    for image in images:
        with torch.inference_mode():
            x = preprocess_image(image, config.input_size, config.mean, config.std)[None]
            yield model(x)[0, 0].numpy()


def measure(checkpoint: Path, images: list[np.ndarray]) -> tuple[float, float, float]:
    steps, top = [], 0.0
    for depth in raw_depths(checkpoint, images):
        steps.append(edge_step(depth))
        top = max(top, float(depth.max()))
    left, right = np.mean(steps, axis=0)
    return float(left), float(right), top


@click.command()
@click.argument("demo_out", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--middlebury", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--settings", default=",".join(SETTINGS), show_default=True)
@click.option("--seeds", default=2, show_default=True, type=click.IntRange(1))
@click.option("--out", default="border_stripes", show_default=True, type=click.Path(path_type=Path))
def main(demo_out: Path, middlebury: Path, settings: str, seeds: int, out: Path) -> None:
    images = unseen_images(middlebury)
    rows = []
    for name in [s.strip() for s in settings.split(",")]:
        zoom, window, padding = SETTINGS[name]
        for seed in range(seeds):
            run = run_dir(out, name, seed)
            with padding_mode(padding):
                if not (run / "best.pt").is_file():
                    config = TrainConfig(
                        labels_dir=str(demo_out / "labels"), out_dir=str(run), teacher="sgbm",
                        lut=str(demo_out / "lut_sgbm.json"), epochs=4, iters_per_epoch=40, batch_size=4,
                        workers=0, seg_stage=None, seed=seed, crop_zoom=zoom, window=window,
                    )  # fmt: skip
                    train(
                        config,
                        ModelConfig(variant="L", seg=False, input_size=(256, 384)),
                        progress=False,
                        log=lambda _: None,
                    )
                left, right, top = measure(run / "best.pt", images)
                scores = evaluate_checkpoint(run / "best.pt", data_root=demo_out / "data", progress=False)
            abs_rel = scores.metrics["abs_rel"]
            rows.append((name, seed, abs_rel, left, right, top))
            click.echo(f"{name} seed {seed}: in-sample Abs Rel {abs_rel:.3f}, "
                       f"edge step {left:+.3f} / {right:+.3f}, raw max {top:.2f} m")  # fmt: skip
    click.echo(f"\n{len(images)} unseen images; mean over {seeds} seed(s)\n")
    click.echo("| setting | in-sample Abs Rel | edge step left | edge step right | stripe | raw max (m) |")
    click.echo("|---|---|---|---|---|---|")
    for name in dict.fromkeys(r[0] for r in rows):
        mine = np.array([r[2:] for r in rows if r[0] == name])
        mean, stripe = mine.mean(axis=0), np.abs(mine[:, 1:3]).mean()
        click.echo(
            f"| {name} | {mean[0]:.3f} | {mean[1]:+.3f} | {mean[2]:+.3f} | {stripe:.3f} | {mine[:, 3].max():.2f} |"
        )
    figure = draw(out, list(dict.fromkeys(r[0] for r in rows)), images)
    click.echo(f"\n{figure}: seed 0 of each setting on four of the images")


SHOWN = (0, 3, 12, 22)  # Aloe, Baby3, Lampshade2 and the coffee cup


def draw(out: Path, names: list[str], images: list[np.ndarray]) -> Path:
    """One row per image (the image, then seed 0 of each setting), each depth map coloured by its own
    2nd-98th percentiles (turbo_r, near = red), so that a far band at the border stands out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [images[i] for i in SHOWN if i < len(images)]
    fig, axes = plt.subplots(len(shown), len(names) + 1, figsize=(2.6 * (len(names) + 1), 1.9 * len(shown)),
                             squeeze=False)  # fmt: skip
    for row, image in zip(axes, shown, strict=True):
        row[0].imshow(image)
    axes[0, 0].set_title("image (never seen)", fontsize=8)
    for column, name in enumerate(names, start=1):
        checkpoint = run_dir(out, name, 0) / "best.pt"
        for row, depth in enumerate(raw_depths(checkpoint, shown)):
            lo, hi = np.percentile(depth, (2, 98))
            axes[row, column].imshow(depth, cmap="turbo_r", vmin=lo, vmax=hi)
            axes[row, column].set_title(f"{name}: {lo:.1f}-{hi:.1f} m" if row == 0 else f"{lo:.1f}-{hi:.1f} m",
                                        fontsize=8)  # fmt: skip
    for ax in axes.ravel():
        ax.axis("off")
    fig.tight_layout()
    path = out / "border_stripes.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
