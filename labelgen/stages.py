"""Label stages: what each writes per frame and how it computes it.

A stage declares its per-frame datasets, loads its (optional) model once per worker, and turns
one frame (of a KITTI raw tree or a rig tree, ``labelgen.layout``) into arrays. ``labelgen.run``
schedules stages shard by shard; teachers with weights (``psmnet``, ``seg``) plug in here with the
same interface.
"""

from __future__ import annotations

import functools
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import cv2
import numpy as np

from labelgen.checkpoints import sha256_file
from labelgen.cityscapes import CITYSCAPES_CLASSES
from labelgen.kitti import read_image
from labelgen.layout import AnyCalibration, AnyFrame, lidar_depth_maps
from labelgen.shards import DatasetSpec
from labelgen.teachers.sgbm import SgbmConfig, sgbm_disparity
from labelgen.teachers.stereo import disparity_to_depth

if TYPE_CHECKING:
    import torch

# The network teachers (psmnet, seg) import torch and torchvision inside their methods, so a driver
# or worker that runs only images, lidar or sgbm never loads them (about 800 MB and 8-11 s).

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


def _read_checked(path: Path, size: tuple[int, int]) -> np.ndarray:
    return _read_checked_array(path, read_image(path), size)


def _read_checked_array(path: Path, image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if image.shape[:2] != tuple(size):
        raise ValueError(
            f"{path}: image is {image.shape[1]}x{image.shape[0]}, calibration says {size[1]}x{size[0]}"
        )
    return image


def _pair_mismatch(left: Path, left_size: tuple[int, int], right: Path, right_size: tuple[int, int]) -> str:
    """The one-line reason for a stereo pair of two sizes (sizes as (height, width))."""
    return (
        f"{left} is {left_size[1]}x{left_size[0]} but {right} is {right_size[1]}x{right_size[0]} "
        "(a left/right size mismatch)"
    )


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
        image = _read_checked(left_path, calib.image_size)
        # the pair's right image only needs its header here; a missing or unreadable one is the
        # stereo stages' failure, not this stage's
        right_size = _image_header_size(right_path) if right_path.exists() else None
        if right_size is not None and right_size != image.shape[:2]:
            raise ValueError(_pair_mismatch(left_path, image.shape[:2], right_path, right_size))
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


MAX_STORED_DEPTH_M = 1000.0
"""Stereo teachers' depth above this (metres) is stored as invalid (see ``StereoStage.outputs``)."""


class StereoStage(Stage):
    """A stereo teacher: disparity on the left/right pair -> metric depth and a validity mask."""

    def datasets(self, image_size: tuple[int, int]) -> dict[str, DatasetSpec]:
        size = tuple(image_size)
        return {
            "disparity": DatasetSpec(
                size, "uint16", attrs={"units": "px", "scale": DISPARITY_SCALE, "invalid": 0}
            ),
            "depth": DatasetSpec(size, "float16", attrs=DEPTH_ATTRS),
            "valid": DatasetSpec(
                size, "bool", attrs={"meaning": "positive disparity (and left-right check)"}
            ),
        }

    @staticmethod
    def read_pair(frame: AnyFrame, calib: AnyCalibration, root: Path) -> tuple[np.ndarray, np.ndarray]:
        """Left and right RGB images; a left/right size mismatch, or a size other than the
        calibration's, is a one-line ValueError naming the file(s)."""
        left_path, right_path = frame.image_path(root, 2), frame.image_path(root, 3)
        left, right = read_image(left_path), read_image(right_path)
        if left.shape[:2] != right.shape[:2]:
            raise ValueError(_pair_mismatch(left_path, left.shape[:2], right_path, right.shape[:2]))
        return _read_checked_array(left_path, left, calib.image_size), right

    @staticmethod
    def outputs(disparity: np.ndarray, valid: np.ndarray, calib: AnyCalibration) -> dict[str, np.ndarray]:
        """The stored arrays: disparity x256 as uint16, depth = f * B / (disparity + doffs) as float16.

        A pixel is valid only where its disparity is finite and positive and gives a depth of at
        most ``MAX_STORED_DEPTH_M`` (a disparity under about 0.4 px on KITTI: sky and noise; beyond
        float16 range from 65504 m); NaN or infinite disparities of a teacher are never stored as valid."""
        disparity = np.asarray(disparity, dtype=np.float32)
        valid = valid & np.isfinite(disparity) & (disparity > 0)
        valid &= disparity + np.float32(calib.doffs) >= np.float32(
            calib.focal * calib.baseline / MAX_STORED_DEPTH_M
        )
        disparity = np.where(valid, disparity, 0)
        depth = disparity_to_depth(disparity, calib.focal, calib.baseline, valid, doffs=calib.doffs)
        stored = np.clip(
            np.round(np.where(valid, disparity, 0) / DISPARITY_SCALE), 0, np.iinfo(np.uint16).max
        )
        return {"disparity": stored.astype(np.uint16), "depth": depth.astype(np.float16), "valid": valid}


class SgbmStage(StereoStage):
    """OpenCV semi-global matching with a left-right consistency check (weight-free)."""

    name = "sgbm"
    teacher = "opencv-sgbm"

    def __init__(self, config: SgbmConfig | None = None) -> None:
        self.config = config or SgbmConfig()

    def settings(self) -> dict[str, object]:
        return self.config.to_dict()

    def process(
        self, frame: AnyFrame, calib: AnyCalibration, root: Path, model: Any
    ) -> dict[str, np.ndarray]:
        disparity, valid = sgbm_disparity(*self.read_pair(frame, calib, root), self.config)
        return self.outputs(disparity, valid, calib)


@functools.lru_cache(maxsize=8)
def _file_sha256(path: str, mtime_ns: int) -> str:
    return sha256_file(path)


class TeacherStage(Stage):
    """A stage whose model is a checkpoint file: hashed into every shard, run in batches."""

    gpu = True
    checkpoint: str

    @property
    def checkpoint_sha256(self) -> str:
        path = Path(self.checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: checkpoint file not found")
        return _file_sha256(str(path.resolve()), path.stat().st_mtime_ns)

    def process(
        self, frame: AnyFrame, calib: AnyCalibration, root: Path, model: Any
    ) -> dict[str, np.ndarray]:
        result = self.process_batch([frame], calib, root, model)[0]
        if isinstance(result, Exception):
            raise result
        return result

    def process_batch(
        self, frames: Sequence[AnyFrame], calib: AnyCalibration, root: Path, model: Any
    ) -> list[dict[str, np.ndarray] | Exception]:
        """Read every frame (a bad one yields its error), then run the readable ones as one batch."""
        inputs: list[Any] = []
        for frame in frames:
            try:
                inputs.append(self.read(frame, calib, root))
            except Exception as err:  # one bad frame must not take the shard down
                inputs.append(err)
        good = [x for x in inputs if not isinstance(x, Exception)]
        outputs = iter(self.infer(good, calib, model) if good else [])
        return [x if isinstance(x, Exception) else next(outputs) for x in inputs]

    @abstractmethod
    def read(self, frame: AnyFrame, calib: AnyCalibration, root: Path) -> Any:
        """The model input of one frame (raises with a one-line reason on bad input)."""

    @abstractmethod
    def infer(self, inputs: list[Any], calib: AnyCalibration, model: Any) -> list[dict[str, np.ndarray]]:
        """Outputs of a batch of equally sized inputs."""


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


class PsmnetStage(TeacherStage, StereoStage):
    """PSMNet (stacked hourglass) on the left/right pair with a public checkpoint."""

    name = "psmnet"
    teacher = "psmnet"

    def __init__(
        self,
        checkpoint: str,
        align_corners: bool = True,
        precision: str = "fp32",
        lr_check: float | None = None,
    ) -> None:
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"precision must be fp32 or fp16, got {precision!r}")
        self.checkpoint, self.align_corners = str(checkpoint), bool(align_corners)
        self.precision, self.lr_check = precision, lr_check

    def settings(self) -> dict[str, object]:
        return {
            "checkpoint": Path(self.checkpoint).name,
            "align_corners": self.align_corners,
            "precision": self.precision,
            "lr_check": self.lr_check,
            "max_disp": 192,
        }

    def load(self, device: str) -> Any:
        from labelgen.teachers.psmnet import load_psmnet

        return load_psmnet(self.checkpoint, align_corners=self.align_corners, device=device)

    def read(self, frame: AnyFrame, calib: AnyCalibration, root: Path) -> tuple[np.ndarray, np.ndarray]:
        return self.read_pair(frame, calib, root)

    def infer(self, inputs: list[Any], calib: AnyCalibration, model: Any) -> list[dict[str, np.ndarray]]:
        from labelgen.teachers.psmnet import lr_consistency, predict_disparity_batch

        lefts, rights = [x[0] for x in inputs], [x[1] for x in inputs]
        device = _model_device(model)
        disparities = predict_disparity_batch(model, lefts, rights, device=device, precision=self.precision)
        results = []
        for left, right, disparity in zip(lefts, rights, disparities, strict=True):
            valid = disparity > 0
            if self.lr_check:
                valid &= lr_consistency(
                    model,
                    left,
                    right,
                    self.lr_check,
                    device=device,
                    precision=self.precision,
                    disparity=disparity,
                )
            results.append(self.outputs(disparity, valid, calib))
        return results


class SegStage(TeacherStage):
    """DeepLabV3 / V3+ Cityscapes segmentation of the left image (VainF or smp checkpoints)."""

    name = "seg"
    teacher = "deeplab"

    def __init__(
        self,
        checkpoint: str,
        format: str = "vainf",
        arch: str = "deeplabv3plus_mobilenet",
        encoder: str | None = None,
        num_classes: int = 19,
        precision: str = "fp32",
    ) -> None:
        from labelgen.teachers.segmentation import SegConfig

        self.config = SegConfig(
            format=format, arch=arch, checkpoint=str(checkpoint), encoder=encoder, num_classes=num_classes
        )
        self.checkpoint, self.precision = str(checkpoint), precision
        self.teacher = f"{format}-{arch}" + (f"-{encoder}" if encoder and format == "smp" else "")

    def settings(self) -> dict[str, object]:
        return {
            **self.config.to_dict(),
            "checkpoint": Path(self.checkpoint).name,
            "precision": self.precision,
        }

    def datasets(self, image_size: tuple[int, int]) -> dict[str, DatasetSpec]:
        size = tuple(image_size)
        names = list(CITYSCAPES_CLASSES) if self.config.num_classes == 19 else []
        return {
            "seg": DatasetSpec(size, "uint8", attrs={"ignore": 255, "classes": json.dumps(names)}),
            "seg_conf": DatasetSpec(
                size, "uint8", attrs={"scale": 1.0 / 255.0, "meaning": "max softmax probability"}
            ),
        }

    def load(self, device: str) -> Any:
        from labelgen.teachers.segmentation import load_segmenter

        return load_segmenter(self.config, device=device)

    def read(self, frame: AnyFrame, calib: AnyCalibration, root: Path) -> np.ndarray:
        return _read_checked(frame.image_path(root, 2), calib.image_size)

    def infer(self, inputs: list[Any], calib: AnyCalibration, model: Any) -> list[dict[str, np.ndarray]]:
        from labelgen.teachers.segmentation import predict_segmentation_batch

        seg, conf = predict_segmentation_batch(
            model, inputs, device=_model_device(model), precision=self.precision
        )
        return [{"seg": s, "seg_conf": c} for s, c in zip(seg, conf, strict=True)]


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
