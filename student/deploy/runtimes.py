"""The optional edge runtimes and the one line that says how to install a missing one.

The base install has ONNX Runtime only; OpenVINO (with NNCF), LiteRT (with litert-torch) and
TensorRT (with ModelOpt) are extras, so a user who ships to one device does not install the rest.
"""

from __future__ import annotations

import importlib
import logging
import sys
import warnings
from types import ModuleType

EXTRAS = {
    "openvino": ("openvino", "pip install 'edgedepth[openvino]'"),
    "nncf": ("openvino", "pip install 'edgedepth[openvino]'"),
    "ai_edge_litert": ("litert", "pip install 'edgedepth[litert]'"),
    "litert_torch": ("litert", "pip install 'edgedepth[litert]'"),
    "tensorrt": (
        "tensorrt",
        "pip install tensorrt on an x86-64 GPU machine; on a Jetson, JetPack's TensorRT",
    ),
    "modelopt": ("tensorrt", "pip install 'edgedepth[tensorrt]'"),
}
"""Importable module -> (the extra that brings it, the pip line)."""


class RuntimeMissing(ImportError):
    """An optional runtime is not installed; the message is one line with the pip command."""


def pip_line(module: str) -> str:
    """The command that installs ``module`` (an entry of ``EXTRAS``)."""
    return EXTRAS[module][1]


def no_openvino_telemetry() -> None:
    """Turn off OpenVINO's and NNCF's usage telemetry in this process, before they are imported.

    Their model conversion and quantization send usage events to an analytics service unless the
    user ran their opt-out tool (no question is asked when the process is not interactive, as in a
    batch job). Both fall back to a no-op when the ``openvino_telemetry`` module cannot be imported,
    so this marks it unimportable, unless something imported it already.
    """
    sys.modules.setdefault("openvino_telemetry", None)


def require(module: str) -> ModuleType:
    """Import ``module`` (a key of ``EXTRAS``) or raise ``RuntimeMissing`` naming the pip line.

    The import is quiet: Python warnings and log records below ERROR that a runtime emits while
    importing (ModelOpt's "No CUDA runtime is found", say) are dropped.
    """
    if module not in EXTRAS:
        raise ValueError(f"unknown optional runtime {module!r}; choose one of {', '.join(sorted(EXTRAS))}")
    if module in ("openvino", "nncf"):
        no_openvino_telemetry()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            previous = logging.root.manager.disable
            logging.disable(logging.WARNING)
            try:
                return importlib.import_module(module)
            finally:
                logging.disable(previous)
    except (ImportError, OSError) as err:
        reason = " ".join(str(err).split())[:120]
        raise RuntimeMissing(f"{module} is not installed ({reason}): {pip_line(module)}") from None


def available(module: str) -> bool:
    """Whether ``module`` (a key of ``EXTRAS``) imports."""
    try:
        require(module)
    except RuntimeMissing:
        return False
    return True


__all__ = ["EXTRAS", "RuntimeMissing", "available", "no_openvino_telemetry", "pip_line", "require"]
