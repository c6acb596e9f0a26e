"""Which torch device a stage or benchmark runs on (torch is imported only when CUDA is asked for)."""

from __future__ import annotations


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when available else ``cpu``; ``cuda`` without a GPU is a clear error.
    ``cpu`` is returned without importing torch (a label driver for images/lidar/sgbm needs none)."""
    if name == "cpu":
        return name
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but no CUDA device is available (CPU-only machine?)")
    return name
