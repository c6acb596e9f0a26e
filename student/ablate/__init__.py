"""Ablation studies of the student's recipe on a labelled set: runs and report.

Each public name maps to its home module and is imported on first use (``edgedepth.common.faces``).
"""

from __future__ import annotations

from edgedepth.common import lazy_face

_HOMES = {
    "AblateSettings": "edgedepth.student.ablate.configs",
    "run_ablation": "edgedepth.student.ablate.study",
}

__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_face(__name__, _HOMES)
