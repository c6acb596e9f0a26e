"""Held-out accuracy of one exported file: its own depth, run by its own runtime, against ground truth.

``student bench --eval-root HELDOUT`` puts Abs Rel and RMSE next to every speed row, so the table
answers which file to ship at which accuracy cost. Each frame of the evaluation set (the rig or
KITTI layout, ``edgedepth.student.evaluate.EvalSet``) is read, resized to the file's input size
with area resampling (as in training) and fed in the file's input contract (N, 3, H, W) RGB
0..255; the depth that comes out is scored with ``student eval``'s protocol for that layout
(``score_predictions``: resized to the ground truth, the layout's crop and depth range).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgedepth.labelgen import read_image
from edgedepth.student.deploy.calibration import to_export_input
from edgedepth.student.deploy.parity import Runner
from edgedepth.student.evaluate import EvalSet, score_predictions

INT8_FLAG_ABS_REL = 0.01
"""An INT8 file whose held-out Abs Rel is more than this worse than its FP32 file is flagged."""


def heldout_set(eval_root: str | Path, eval_frames: str | Path | None = None) -> EvalSet:
    """The evaluation set of ``eval_root`` (rig or KITTI layout) and its optional frame list."""
    return EvalSet(eval_root, eval_frames)


def file_predictions(
    run: Runner, eval_set: EvalSet, size: tuple[int, int], dtype: str, name: str
) -> Iterator[tuple[object, np.ndarray]]:
    """(frame, depth (h, w) metres) of every frame, run by ``run`` at ``size`` = (H, W)."""
    for frame in eval_set.frames:
        depth = np.asarray(run(to_export_input(read_image(frame.image), size, dtype))[0], np.float32)
        if depth.ndim != 4 or depth.shape[:2] != (1, 1):
            raise ValueError(f"{name}: depth output of shape {depth.shape}, expected (1, 1, h, w)")
        if not np.isfinite(depth).all():
            raise ValueError(f"{name}: NaN or infinite depth on {frame.image}")
        yield frame, depth[0, 0]


def file_accuracy(run: Runner, eval_set: EvalSet, size: tuple[int, int], dtype: str, name: str) -> dict:
    """Held-out figures of one file: ``{"abs_rel", "rmse", "delta1", "frames"}`` (RMSE in metres)."""
    result = score_predictions(eval_set, file_predictions(run, eval_set, size, dtype, name))
    return {
        "abs_rel": result.metrics["abs_rel"],
        "rmse": result.metrics["rmse"],
        "delta1": result.metrics["a1"],
        "frames": result.frames,
    }


__all__ = ["INT8_FLAG_ABS_REL", "file_accuracy", "file_predictions", "heldout_set"]
