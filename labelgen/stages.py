"""Label stages by name (``STAGES``, ``make_stage``) and the input stages: images and lidar.

A stage (``edgedepth.labelgen.stage``) declares its per-frame datasets, loads its (optional) model
once per worker, and turns one frame into arrays. ``edgedepth.labelgen.run`` schedules stages shard
by shard; the teachers (``sgbm``, and ``psmnet`` and ``seg`` with weights) are
``edgedepth.labelgen.teacher_stages``, with the same interface.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edgedepth.labelgen.layout import AnyCalibration, AnyFrame, lidar_depth_maps
from edgedepth.labelgen.shards import DatasetSpec
from edgedepth.labelgen.stage import DEPTH_ATTRS, Stage, pair_mismatch, read_checked_image
from edgedepth.labelgen.teacher_stages import PsmnetStage, SegStage, SgbmStage
from edgedepth.labelgen.teachers.sgbm import SgbmConfig


def _image_header_size(path: Path) -> tuple[int, int] | None:
    """(height, width) from an image file's header without decoding it; None if it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return int(image.height), int(image.width)
    except (OSError, UnidentifiedImageError):
        return None


class ImagesStage(Stage):
    """The left RGB image (camera 2), optionally resized to ``resize`` = (height, width)."""

    name = "images"

    def __init__(self, resize: tuple[int, int] | None = None) -> None:
        self.resize = tuple(resize) if resize else None

    def settings(self) -> dict[str, object]:
        return {"resize": list(self.resize) if self.resize else None}

    def datasets(self, image_size: tuple[int, int]) -> dict[str, DatasetSpec]:
        height, width = self.resize or image_size
        return {"image": DatasetSpec((height, width, 3), "uint8", attrs={"channels": "RGB"})}

    def process(
        self, frame: AnyFrame, calib: AnyCalibration, root: Path, model: Any
    ) -> dict[str, np.ndarray]:
        left_path, right_path = frame.image_path(root, 2), frame.image_path(root, 3)
        image = read_checked_image(left_path, calib.image_size)
        # the pair's right image only needs its header here; a missing or unreadable one is the
        # stereo stages' failure, not this stage's
        right_size = _image_header_size(right_path) if right_path.exists() else None
        if right_size is not None and right_size != image.shape[:2]:
            raise ValueError(pair_mismatch(left_path, image.shape[:2], right_path, right_size))
        if self.resize:
            image = cv2.resize(image, (self.resize[1], self.resize[0]), interpolation=cv2.INTER_AREA)
        return {"image": image}


class LidarStage(Stage):
    """Sparse LiDAR depth projected into camera 2 (and camera 3 with ``cams=(2, 3)``)."""

    name = "lidar"

    def __init__(self, cams: Sequence[int] = (2,), depth: str = "z") -> None:
        if not set(cams) <= {2, 3} or not cams:
            raise ValueError(f"lidar cameras must be 2 and/or 3, got {list(cams)}")
        if depth not in ("z", "x"):
            raise ValueError(f"lidar depth convention must be 'z' or 'x', got {depth!r}")
        self.cams, self.depth = tuple(sorted(set(cams))), depth

    def settings(self) -> dict[str, object]:
        return {"cams": list(self.cams), "depth": self.depth}

    def datasets(self, image_size: tuple[int, int]) -> dict[str, DatasetSpec]:
        attrs = {**DEPTH_ATTRS, "convention": "camera z" if self.depth == "z" else "LiDAR x (forward)"}
        return {self._key(cam): DatasetSpec(tuple(image_size), "float32", attrs=attrs) for cam in self.cams}

    @staticmethod
    def _key(cam: int) -> str:
        return "depth" if cam == 2 else "depth_03"

    def process(
        self, frame: AnyFrame, calib: AnyCalibration, root: Path, model: Any
    ) -> dict[str, np.ndarray]:
        maps = lidar_depth_maps(frame, calib, root, self.cams, self.depth)
        return {self._key(cam): depth.astype(np.float32) for cam, depth in maps.items()}


STAGES: dict[str, type[Stage]] = {
    s.name: s for s in (ImagesStage, LidarStage, SgbmStage, PsmnetStage, SegStage)
}


def make_stage(name: str, options: dict[str, Any] | None = None) -> Stage:
    """Instantiate a stage by name; unknown names and options are one-line ValueErrors."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; available: {', '.join(STAGES)}")
    options = dict(options or {})
    try:
        if name == "sgbm":
            return SgbmStage(SgbmConfig(**options))
        return STAGES[name](**options)
    except TypeError as err:
        raise ValueError(f"stage {name}: bad option ({err})") from None


__all__ = ["STAGES", "ImagesStage", "LidarStage", "make_stage"]
