"""Calibration frames for post-training quantization: real images drawn from the label shards.

INT8 calibration (ONNX Runtime's static quantizer, TensorRT's entropy calibrator) needs frames
like those the model will see. ``calibration_frames`` draws them from a label folder's ``images``
stage, spread over every drive (a seeded random sample of the frames that were labelled), and
``to_export_input`` turns one into the exported graph's input layout (see docs/export.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edgedepth.labelgen import LabelReader


@dataclass(frozen=True)
class CalibrationFrames:
    """Frames (RGB uint8, (H, W, 3), at the shards' resolution), their ids, and what was asked."""

    images: tuple[np.ndarray, ...]
    frame_ids: tuple[str, ...]
    requested: int

    @property
    def note(self) -> str:
        """A line for the user when the folder had fewer frames than asked, else ''."""
        if len(self.images) < self.requested:
            return (
                f"calibrating on all {len(self.images)} labelled frame(s); "
                f"{self.requested} were asked for (the label folder has no more)"
            )
        return ""


def calibration_frames(labels_dir: str | Path, count: int = 64, seed: int = 0) -> CalibrationFrames:
    """Up to ``count`` labelled frames of ``labels_dir/images``, drawn at random (seeded) from all."""
    if count < 1:
        raise ValueError(f"calibration needs at least 1 frame, got {count}")
    reader = LabelReader(labels_dir, ["images"])
    ok = np.flatnonzero(reader.all_ok())
    if ok.size == 0:
        raise ValueError(f"{labels_dir}: no labelled frame in the images stage to calibrate on")
    rows = np.sort(np.random.default_rng(seed).permutation(ok)[: min(count, ok.size)])
    items = [reader[int(r)] for r in rows]
    reader.close()
    return CalibrationFrames(
        images=tuple(np.ascontiguousarray(item["images/image"]) for item in items),
        frame_ids=tuple(str(item["frame_id"]) for item in items),
        requested=count,
    )


def to_export_input(image: np.ndarray, size: tuple[int, int], dtype: str = "uint8") -> np.ndarray:
    """An RGB uint8 image (H, W, 3) -> the exported graph's input (1, 3, h, w): area-resized to
    ``size`` = (h, w), values 0..255, as ``uint8`` or ``float32`` (normalisation is in the graph)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
    if dtype not in ("uint8", "float32"):
        raise ValueError(f"input dtype must be uint8 or float32, got {dtype!r}")
    height, width = size
    resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(resized.transpose(2, 0, 1)[None]).astype(dtype)


__all__ = ["CalibrationFrames", "calibration_frames", "to_export_input"]
