"""Scoring the student: KITTI metrics, ground truth, evaluation sets, evaluation, prediction.

Each public name maps to its home module and is imported on first use (``edgedepth.common.faces``).
"""

from __future__ import annotations

from edgedepth.common import lazy_face

_HOMES = {
    "DepthMetrics": "edgedepth.student.evaluate.metrics",
    "EvalFrame": "edgedepth.student.evaluate.frames",
    "EvalResult": "edgedepth.student.evaluate.evaluation",
    "EvalSet": "edgedepth.student.evaluate.frames",
    "MAX_DEPTH": "edgedepth.student.evaluate.metrics",
    "METRIC_NAMES": "edgedepth.student.evaluate.metrics",
    "MIN_DEPTH": "edgedepth.student.evaluate.metrics",
    "compute_errors": "edgedepth.student.evaluate.metrics",
    "evaluate_checkpoint": "edgedepth.student.evaluate.evaluation",
    "evaluate_depth": "edgedepth.student.evaluate.metrics",
    "evaluate_image": "edgedepth.student.evaluate.metrics",
    "predict_images": "edgedepth.student.evaluate.predict",
    "score_constant": "edgedepth.student.evaluate.evaluation",
    "score_predictions": "edgedepth.student.evaluate.evaluation",
    "score_teacher": "edgedepth.student.evaluate.evaluation",
}

__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_face(__name__, _HOMES)
