"""The teachers against the ground truth, and the figures that show them side by side.

Each depth stage is scored by ``edgedepth.student.evaluate.evaluation.score_teacher`` (what ``edgedepth labelgen score``
runs) on an ``EvalSet``: its ground truth, crop and depth range are the student package's, for
KITTI and rig data alike. A teacher is scored on the pixels where both it and the ground truth have
a value; ``coverage`` is the share of ground-truth pixels the teacher keeps (SGBM drops occlusions
and untextured areas by design).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgedepth.common import save_figure
from edgedepth.student.evaluate import EvalSet

DEPTH_CMAP = "turbo_r"
NO_DATA_COLOUR = "#c8c8c8"  # light grey, as edgedepth.labelgen.inspect.NO_DATA_COLOUR (black looked like far)


@dataclass(frozen=True)
class TeacherScore:
    """One teacher over every frame: metrics averaged over the frames (as ``labelgen score``)."""

    stage: str
    frames: int
    pixels: int  # ground-truth pixels scored (those the teacher labels)
    coverage: float  # scored pixels / ground-truth pixels
    metrics: dict[str, float]
    protocol: str = ""


def score_teachers(
    labels_dir: str | Path,
    stages: list[str],
    eval_set: EvalSet,
    out_dir: str | Path | None = None,
    progress: bool = False,
) -> list[TeacherScore]:
    """Each depth stage of ``stages`` against ``eval_set``'s ground truth; with ``out_dir``, each
    result is also saved as ``score_<stage>.json`` (+ ``_frames.csv``), as ``labelgen score --out``."""
    from edgedepth.student.evaluate import score_teacher

    scores = []
    for stage in stages:
        result = score_teacher(labels_dir, stage, eval_set, progress=progress)
        if out_dir is not None:
            result.save(Path(out_dir) / f"score_{stage}.json")
        pixels = sum(int(row["gt_pixels"]) for row in result.per_frame)
        prov = result.provenance
        scores.append(TeacherScore(stage, result.frames, pixels, float(prov["coverage"]), result.metrics,
                                   prov["protocol"]))  # fmt: skip
    return scores


def format_scores(scores: list[TeacherScore]) -> str:
    """A small table: stage, frames, pixels, coverage, Abs Rel, RMSE, d<1.25."""
    lines = [
        f"{'teacher':<10}{'frames':>7}{'pixels':>10}{'coverage':>10}{'Abs Rel':>9}{'RMSE (m)':>10}{'d<1.25':>8}"
    ]
    for s in scores:
        m = s.metrics
        lines.append(
            f"{s.stage:<10}{s.frames:>7}{s.pixels:>10}{s.coverage:>10.1%}{m['abs_rel']:>9.4f}"
            f"{m['rmse']:>10.3f}{m['a1']:>8.3f}"
        )
    return "\n".join(lines)


def side_by_side(
    out_png: str | Path, panels: list[tuple[str, np.ndarray]], depth_range: tuple[float, float] | None = None
) -> Path:
    """One row of panels (title, RGB image or (H, W) depth in metres with 0 = none) on one colour scale:
    ``depth_range``, else the 1st-99th percentile of the first depth panel (values beyond saturate)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depths = [p for _, p in panels if p.ndim == 2]
    if depth_range is None:  # from the first depth panel (the reference): outliers elsewhere saturate
        values = depths[0][depths[0] > 0] if depths else np.ones(1)
        depth_range = (float(np.percentile(values, 1)), float(np.percentile(values, 99)))
    height, width = panels[0][1].shape[:2]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) * width / height, 3.9))
    axes = np.atleast_1d(axes)
    cmap = plt.get_cmap(DEPTH_CMAP).with_extremes(bad=NO_DATA_COLOUR)
    shown = None
    for ax, (title, panel) in zip(axes, panels, strict=True):
        if panel.ndim == 3:
            ax.imshow(panel)
        else:
            shown = ax.imshow(np.ma.masked_where(panel <= 0, panel), cmap=cmap, vmin=depth_range[0],
                              vmax=depth_range[1], interpolation="nearest")  # fmt: skip
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    if shown is not None:
        fig.colorbar(shown, ax=list(axes), label="depth (m)", fraction=0.015, pad=0.01, extend="both")
    try:
        return save_figure(fig, out_png, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)


__all__ = ["TeacherScore", "format_scores", "score_teachers", "side_by_side"]
