"""Label stages: what each writes per frame and how it computes it.

A stage declares its per-frame datasets, loads its (optional) model once per worker, and turns
one KITTI frame into arrays. ``labelgen.run`` schedules stages shard by shard; teachers with
weights (``psmnet``, ``seg``) plug in here with the same interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np

from labelgen.kitti import Calibration, Frame, read_image, read_velodyne
from labelgen.lidar import project_lidar
from labelgen.shards import DatasetSpec
from labelgen.teachers.sgbm import SgbmConfig, disparity_to_depth, sgbm_disparity

DEPTH_ATTRS = {"units": "m", "invalid": 0}
DISPARITY_SCALE = 1.0 / 256.0  # stored as uint16 = round(disparity * 256), the KITTI convention


class Stage(ABC):
    """Base class: subclasses set ``name`` and implement ``datasets`` and ``process``."""

    name: ClassVar[str] = ""
    teacher: ClassVar[str] = ""
    gpu: ClassVar[bool] = False  # GPU stages ask dask for resources={"GPU": 1} when run on CUDA

    def settings(self) -> dict[str, object]:
        """The options that determine the output (written to every shard's attributes)."""
        return {}

    @property
    def checkpoint_sha256(self) -> str:
        return ""

    @abstractmethod
    def datasets(self, image_size: tuple[int, int]) -> dict[str, DatasetSpec]:
        """The per-frame datasets this stage writes for frames of ``image_size`` = (height, width)."""

    def load(self, device: str) -> Any:
        """The stage's model, loaded once per worker process (None for weight-free stages)."""
        return None

    @abstractmethod
    def process(self, frame: Frame, calib: Calibration, root: Path, model: Any) -> dict[str, np.ndarray]:
        """One frame's arrays, keyed like ``datasets``; raises with a one-line reason on bad input."""

    def process_batch(
        self, frames: Sequence[Frame], calib: Calibration, root: Path, model: Any
    ) -> list[dict[str, np.ndarray] | Exception]:
        """Process several frames; a failing frame yields its exception instead of arrays."""
        results: list[dict[str, np.ndarray] | Exception] = []
        for frame in frames:
            try:
                results.append(self.process(frame, calib, root, model))
            except Exception as err:  # one bad frame must not take the shard down
                results.append(err)
        return results


def _read_checked(path: Path, size: tuple[int, int]) -> np.ndarray:
    image = read_image(path)
    if image.shape[:2] != tuple(size):
        raise ValueError(
            f"{path}: image is {image.shape[1]}x{image.shape[0]}, calibration says {size[1]}x{size[0]}"
        )
    return image


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

    def process(self, frame: Frame, calib: Calibration, root: Path, model: Any) -> dict[str, np.ndarray]:
        image = _read_checked(frame.image_path(root, 2), calib.image_size)
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

    def process(self, frame: Frame, calib: Calibration, root: Path, model: Any) -> dict[str, np.ndarray]:
        points = read_velodyne(frame.velodyne_path(root))
        return {
            self._key(cam): project_lidar(points, calib, cam=cam, depth=self.depth).astype(np.float32)
            for cam in self.cams
        }


class SgbmStage(Stage):
    """OpenCV semi-global matching on image_02/image_03: disparity, metric depth, LR-check mask."""

    name = "sgbm"
    teacher = "opencv-sgbm"

    def __init__(self, config: SgbmConfig | None = None) -> None:
        self.config = config or SgbmConfig()

    def settings(self) -> dict[str, object]:
        return self.config.to_dict()

    def datasets(self, image_size: tuple[int, int]) -> dict[str, DatasetSpec]:
        size = tuple(image_size)
        return {
            "disparity": DatasetSpec(
                size, "uint16", attrs={"units": "px", "scale": DISPARITY_SCALE, "invalid": 0}
            ),
            "depth": DatasetSpec(size, "float16", attrs=DEPTH_ATTRS),
            "valid": DatasetSpec(size, "bool", attrs={"meaning": "left-right consistent match"}),
        }

    def process(self, frame: Frame, calib: Calibration, root: Path, model: Any) -> dict[str, np.ndarray]:
        left = _read_checked(frame.image_path(root, 2), calib.image_size)
        right = _read_checked(frame.image_path(root, 3), calib.image_size)
        disparity, valid = sgbm_disparity(left, right, self.config)
        depth = disparity_to_depth(disparity, calib.focal, calib.baseline, valid)
        stored = np.clip(np.round(disparity / DISPARITY_SCALE), 0, np.iinfo(np.uint16).max)
        return {"disparity": stored.astype(np.uint16), "depth": depth.astype(np.float16), "valid": valid}


STAGES: dict[str, type[Stage]] = {s.name: s for s in (ImagesStage, LidarStage, SgbmStage)}


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
