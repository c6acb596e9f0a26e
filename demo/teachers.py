"""The teachers against the ground truth, and the figures that show them side by side.

The ground truth of a frame is KITTI's annotated depth map when the tree has one (the embedded
Motorcycle data writes its dense ground truth in that place), else the frame's LiDAR scan projected
with the public protocol (``student.groundtruth.lidar_groundtruth``). A teacher is scored on the
pixels where both it and the ground truth have a value; ``coverage`` is the share of ground-truth
pixels the teacher keeps (SGBM drops occlusions and untextured areas by design).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from labelgen.atomic import save_figure
from labelgen.kitti import Calibration, Frame, read_velodyne
from labelgen.shards import LabelReader
from student.groundtruth import annotated_groundtruth_path, lidar_groundtruth, read_annotated
from student.metrics import compute_errors

DEPTH_CMAP = "turbo_r"


@dataclass(frozen=True)
class TeacherScore:
    """One teacher over every frame: metrics pooled over all compared pixels."""

    stage: str
    frames: int
    pixels: int
    coverage: float  # compared pixels / ground-truth pixels
    metrics: dict[str, float]


def frame_groundtruth(root: Path, frame: Frame, calib: Calibration) -> tuple[np.ndarray, str] | None:
    """((H, W) metres, 0 = none; what it is) of one frame, or None when it has none."""
    path = annotated_groundtruth_path(root, frame)
    if path is not None:
        return read_annotated(path), "annotated depth map"
    scan = frame.velodyne_path(root)
    if scan.is_file() and scan.stat().st_size:
        return lidar_groundtruth(read_velodyne(scan), calib), "raw LiDAR scan"
    return None


def score_teachers(
    labels_dir: str | Path, root: str | Path, stages: list[str], max_depth: float = 80.0
) -> tuple[list[TeacherScore], str]:
    """Each depth stage of ``stages`` against the ground truth; also says what the ground truth was."""
    reader = LabelReader(labels_dir, stages)
    plan, root = reader.plan, Path(root)
    pooled = {s: ([], [], 0, 0) for s in stages}
    kinds: set[str] = set()
    try:
        for i, frame_id in enumerate(reader.frame_ids):
            frame = Frame.from_id(frame_id)
            found = frame_groundtruth(root, frame, plan.calibrations[frame.date])
            if found is None:
                continue
            gt, kind = found
            kinds.add(kind)
            item = reader[i]
            has_gt = (gt > 0) & (gt <= max_depth)
            for stage in stages:
                depth = np.asarray(item[f"{stage}/depth"], dtype=np.float32)
                if depth.shape != gt.shape:
                    continue
                both = has_gt & (depth > 0)
                gts, preds, frames, total = pooled[stage]
                gts.append(gt[both])
                preds.append(depth[both])
                pooled[stage] = (gts, preds, frames + 1, total + int(has_gt.sum()))
    finally:
        reader.close()
    scores = []
    for stage, (gts, preds, frames, total) in pooled.items():
        gt = np.concatenate(gts) if gts else np.zeros(0, np.float32)
        if gt.size:
            pred = np.concatenate(preds)
            scores.append(
                TeacherScore(stage, frames, int(gt.size), gt.size / max(total, 1), compute_errors(gt, pred))
            )
    return scores, " and ".join(sorted(kinds)) or "none"


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
    cmap = plt.get_cmap(DEPTH_CMAP).with_extremes(bad="black")
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


__all__ = ["TeacherScore", "format_scores", "frame_groundtruth", "score_teachers", "side_by_side"]
