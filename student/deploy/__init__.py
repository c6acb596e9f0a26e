"""Shipping the student: ONNX export and checks, INT8 calibration, TensorRT, speed, bench.

Each public name maps to its home module and is imported on first use (``edgedepth.common.faces``).
"""

from __future__ import annotations

from edgedepth.common import lazy_face

_HOMES = {
    "DEFAULT_SIZES": "edgedepth.student.deploy.bench",
    "EngineBuildError": "edgedepth.student.deploy.tensorrt",
    "RuntimeMissing": "edgedepth.student.deploy.runtimes",
    "TensorRTUnavailable": "edgedepth.student.deploy.tensorrt",
    "bench_variants": "edgedepth.student.deploy.speed",
    "build_engine": "edgedepth.student.deploy.tensorrt",
    "export_onnx": "edgedepth.student.deploy.export",
    "export_student": "edgedepth.student.deploy.targets",
    "EXPORT_TARGETS": "edgedepth.student.deploy.targets",
    "format_table": "edgedepth.student.deploy.bench",
    "plot_pareto": "edgedepth.student.deploy.speed_result",
    "summarize_variants": "edgedepth.student.deploy.bench",
    "time_onnx": "edgedepth.student.deploy.timing",
    "to_export_input": "edgedepth.student.deploy.calibration",
}

__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_face(__name__, _HOMES)
