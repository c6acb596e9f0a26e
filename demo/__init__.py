"""The demo: the whole pipeline on one small data set, and the report it leaves (docs/demo.md).

Each public name maps to its home module and is imported on first use (``edgedepth.common.faces``).
"""

from __future__ import annotations

from edgedepth.common import lazy_face

_HOMES = {
    "KITTI": "edgedepth.demo.result",
    "MOTORCYCLE": "edgedepth.demo.result",
    "RIG": "edgedepth.demo.result",
    "DemoResult": "edgedepth.demo.result",
    "DemoSettings": "edgedepth.demo.result",
    "MotorcycleData": "edgedepth.demo.motorcycle",
    "demo_command": "edgedepth.demo.commands",
    "make_motorcycle": "edgedepth.demo.motorcycle",
    "run_demo": "edgedepth.demo.pipeline",
    "write_reports": "edgedepth.demo.report",
}

__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_face(__name__, _HOMES)
