"""The label-stage interface: the ``Stage`` base class and the checked image reads stages share.

A stage declares its per-frame datasets, loads its (optional) model once per worker, and turns
one frame (of a KITTI raw tree or a rig tree, ``edgedepth.labelgen.layout``) into arrays. The stages
by name are ``edgedepth.labelgen.stages``; the teachers' stages ``edgedepth.labelgen.teacher_stages``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgedepth.labelgen.kitti import read_image
from edgedepth.labelgen.layout import AnyCalibration, AnyFrame
from edgedepth.labelgen.shards import DatasetSpec

DEPTH_ATTRS = {"units": "m", "invalid": 0}


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
    def process(
        self, frame: AnyFrame, calib: AnyCalibration, root: Path, model: Any
    ) -> dict[str, np.ndarray]:
        """One frame's arrays, keyed like ``datasets``; raises with a one-line reason on bad input."""

    def process_batch(
        self, frames: Sequence[AnyFrame], calib: AnyCalibration, root: Path, model: Any
    ) -> list[dict[str, np.ndarray] | Exception]:
        """Process several frames; a failing frame yields its exception instead of arrays."""
        results: list[dict[str, np.ndarray] | Exception] = []
        for frame in frames:
            try:
                results.append(self.process(frame, calib, root, model))
            except Exception as err:  # one bad frame must not take the shard down
                results.append(err)
        return results


def read_checked_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    """The image at ``path`` (H, W, 3) RGB uint8; a size other than ``size`` = (height, width) is a
    one-line ValueError naming the file."""
    return check_image_size(path, read_image(path), size)


def check_image_size(path: Path, image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` (read from ``path``) unchanged if it is ``size`` = (height, width), else a one-line
    ValueError."""
    if image.shape[:2] != tuple(size):
        raise ValueError(
            f"{path}: image is {image.shape[1]}x{image.shape[0]}, calibration says {size[1]}x{size[0]}"
        )
    return image


def pair_mismatch(left: Path, left_size: tuple[int, int], right: Path, right_size: tuple[int, int]) -> str:
    """The one-line reason for a stereo pair of two sizes (sizes as (height, width))."""
    return (
        f"{left} is {left_size[1]}x{left_size[0]} but {right} is {right_size[1]}x{right_size[0]} "
        "(a left/right size mismatch)"
    )


__all__ = ["DEPTH_ATTRS", "Stage", "check_image_size", "pair_mismatch", "read_checked_image"]
