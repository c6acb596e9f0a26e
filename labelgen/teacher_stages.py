"""The teachers' label stages: stereo (sgbm, psmnet) and segmentation (seg).

A stereo teacher stores disparity, metric depth and a validity mask (``StereoStage``); a teacher
with a checkpoint file (psmnet, seg) hashes it into every shard and runs frames in batches
(``TeacherStage``). They are registered by name in ``edgedepth.labelgen.stages``.
"""

from __future__ import annotations

import functools
import json
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgedepth.common import sha256_file
from edgedepth.labelgen.cityscapes import CITYSCAPES_CLASSES
from edgedepth.labelgen.kitti import read_image
from edgedepth.labelgen.layout import AnyCalibration, AnyFrame
from edgedepth.labelgen.shards import DatasetSpec
from edgedepth.labelgen.stage import DEPTH_ATTRS, Stage, check_image_size, pair_mismatch, read_checked_image
from edgedepth.labelgen.teachers.sgbm import SgbmConfig, sgbm_disparity
from edgedepth.labelgen.teachers.stereo import disparity_to_depth

if TYPE_CHECKING:
    import torch

# The network teachers (psmnet, seg) import torch and torchvision inside their methods, so a driver
# or worker that runs only images, lidar or sgbm never loads them (about 800 MB and 8-11 s).

DISPARITY_SCALE = 1.0 / 256.0  # stored as uint16 = round(disparity * 256), the KITTI convention
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
            raise ValueError(pair_mismatch(left_path, left.shape[:2], right_path, right.shape[:2]))
        return check_image_size(left_path, left, calib.image_size), right

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
        from edgedepth.labelgen.teachers.psmnet import load_psmnet

        return load_psmnet(self.checkpoint, align_corners=self.align_corners, device=device)

    def read(self, frame: AnyFrame, calib: AnyCalibration, root: Path) -> tuple[np.ndarray, np.ndarray]:
        return self.read_pair(frame, calib, root)

    def infer(self, inputs: list[Any], calib: AnyCalibration, model: Any) -> list[dict[str, np.ndarray]]:
        from edgedepth.labelgen.teachers.psmnet import lr_consistency, predict_disparity_batch

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
        from edgedepth.labelgen.teachers.segmentation import SegConfig

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
        from edgedepth.labelgen.teachers.segmentation import load_segmenter

        return load_segmenter(self.config, device=device)

    def read(self, frame: AnyFrame, calib: AnyCalibration, root: Path) -> np.ndarray:
        return read_checked_image(frame.image_path(root, 2), calib.image_size)

    def infer(self, inputs: list[Any], calib: AnyCalibration, model: Any) -> list[dict[str, np.ndarray]]:
        from edgedepth.labelgen.teachers.segmentation import predict_segmentation_batch

        seg, conf = predict_segmentation_batch(
            model, inputs, device=_model_device(model), precision=self.precision
        )
        return [{"seg": s, "seg_conf": c} for s, c in zip(seg, conf, strict=True)]


__all__ = [
    "DISPARITY_SCALE",
    "MAX_STORED_DEPTH_M",
    "PsmnetStage",
    "SegStage",
    "SgbmStage",
    "StereoStage",
    "TeacherStage",
]
