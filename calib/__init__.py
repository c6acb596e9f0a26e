"""The per-distance teacher-vs-LiDAR depth bias look-up table: fit, apply, plot.

Each public name maps to its home module and is imported on first use (``edgedepth.common.faces``).
"""

from __future__ import annotations

from edgedepth.common import lazy_face

_HOMES = {
    "FitSettings": "edgedepth.calib.settings",
    "Lut": "edgedepth.calib.lut",
    "apply_lut": "edgedepth.calib.lut",
    "calib_group": "edgedepth.calib.commands",
    "fit_from_labels": "edgedepth.calib.fit",
    "fit_lut": "edgedepth.calib.lut",
    "format_lut": "edgedepth.calib.fit",
    "load_lut": "edgedepth.calib.lut",
    "plot_lut": "edgedepth.calib.plot",
    "split_drives": "edgedepth.calib.fit",
    "write_corrected": "edgedepth.calib.apply",
}

__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_face(__name__, _HOMES)
