"""What an evaluation scores: which frames of a data root, their images, their ground truth, the
crop and the depth range, for both input layouts (KITTI raw and the rig layout of docs/rig.md).

Defaults follow the data, and ``EvalSet.describe`` says what was used:

=============  ==========================================  =====================================
layout         ground truth (``gt``)                        crop, depth range
=============  ==========================================  =====================================
``kitti``      ``lidar``: the raw scan, public protocol;    ``garg``; 1e-3 < d <= 80 m
               ``annotated``: KITTI's annotated maps
``rig``        ``depth_gt`` (default): depth_gt/*.png;      ``none``; the sequence's calib.json
               ``lidar``: the frame's LiDAR source          ``depth_range_m`` (else 1e-3-80 m)
=============  ==========================================  =====================================

Frames: KITTI takes a split (``eigen``, ``eigen_benchmark``, packaged) or a split file; the rig
layout takes a frame-list file (``<sequence>/<frame>`` lines) or, by default, every frame that has
the chosen ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from edgedepth.labelgen import (
    CAM_TO_CAM,
    VELO_TO_CAM,
    Calibration,
    Frame,
    RigCalibration,
    RigFrame,
    detect_layout,
    get_layout,
    lidar_depth,
    read_calibration,
    read_depth_png,
    read_rig_calibration,
    read_velodyne,
)
from edgedepth.student.evaluate.groundtruth import (
    annotated_groundtruth_path,
    lidar_groundtruth,
    read_annotated,
)
from edgedepth.student.evaluate.metrics import MAX_DEPTH, MIN_DEPTH, normalise_crop

GT_KINDS = {"kitti": ("lidar", "annotated"), "rig": ("depth_gt", "lidar")}
DEFAULT_GT = {"kitti": "lidar", "rig": "depth_gt"}
DEFAULT_CROP = {"kitti": "garg", "rig": "none"}
PACKAGED_SPLITS = {"eigen": "eigen_test.txt", "eigen_benchmark": "eigen_benchmark_test.txt"}
_SIDE_CAM = {"l": 2, "r": 3}


@dataclass(frozen=True)
class EvalFrame:
    """One frame to score: its id, the image the model sees, and its side (``r`` = camera 3)."""

    frame_id: str
    image: Path
    side: str = "l"

    @property
    def cam(self) -> int:
        return _SIDE_CAM[self.side]


def resolve_split(split: str | Path) -> tuple[str, Path]:
    """(name, file) of a split: ``eigen`` / ``eigen_benchmark`` are packaged, anything else is a file path."""
    name = str(split)
    if name in PACKAGED_SPLITS:
        path = Path(str(resources.files("edgedepth.student") / "splits" / PACKAGED_SPLITS[name]))
        if not path.is_file():
            raise FileNotFoundError(f"{path}: packaged split file missing (broken install?)")
        return name, path
    path = Path(split)
    if not path.is_file():
        known = ", ".join(PACKAGED_SPLITS)
        raise FileNotFoundError(f"{path}: split file not found (packaged splits: {known})")
    return path.stem, path


def kitti_split_sides(path: Path, frames: list[Frame]) -> list[str]:
    """The side of each line of a KITTI split file (``l`` when the line has none); the frames come
    from ``edgedepth.labelgen.kitti.read_split_file``, which checked the format."""
    lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    sides = []
    for number, parts in enumerate(lines[: len(frames)], start=1):
        side = parts[2].lower() if len(parts) == 3 else "l"
        if side not in _SIDE_CAM:
            raise ValueError(f"{path}: line {number}: side must be l or r, got {parts[2]!r}")
        sides.append(side)
    return sides


class EvalSet:
    """The frames of ``data_root`` to score and how: ground truth kind, crop, depth range per frame.

    ``split``: KITTI split name or file, or a rig frame-list file (None: ``eigen`` for KITTI, every
    frame with ground truth for the rig layout). ``gt`` / ``crop`` None take the layout's defaults.
    Frames whose image (or, for KITTI LiDAR ground truth, scan) is missing are refused up front
    (one line, the count and the first three) unless ``check_images`` is False.
    """

    def __init__(
        self,
        data_root: str | Path,
        split: str | Path | None = None,
        gt: str | None = None,
        crop: str | bool | None = None,
        layout: str | None = None,
        annotated_root: str | Path | None = None,
        check_images: bool = True,
    ) -> None:
        self.root = Path(data_root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: data root folder not found")
        self.layout = layout or detect_layout(self.root)
        get_layout(self.layout)  # an unknown name is a one-line error
        self.gt = gt or DEFAULT_GT[self.layout]
        if self.gt not in GT_KINDS[self.layout]:
            raise ValueError(
                f"ground truth {self.gt!r} is not available for the {self.layout} layout; "
                f"choose one of {', '.join(GT_KINDS[self.layout])}"
            )
        self.crop = normalise_crop(DEFAULT_CROP[self.layout] if crop is None else crop)
        if annotated_root is not None and not Path(annotated_root).is_dir():
            raise FileNotFoundError(f"{annotated_root}: annotated depth folder not found")
        self.annotated_root = annotated_root
        self._calibrations: dict[str, Calibration | RigCalibration] = {}
        if self.layout == "kitti":
            self.split_name, self.split_file = resolve_split(split or "eigen")
            self.frames = self._kitti_frames()
        else:
            self.split_name = Path(split).stem if split else "all"
            self.split_file = Path(split) if split else None
            self.frames = self._rig_frames()
        missing = [f.frame_id for f in self.frames if check_images and self._missing(f)]
        if missing:
            where = self.split_file or self.root
            raise ValueError(
                f"{where}: {len(missing)} of {len(self.frames)} frames not found under {self.root} "
                f"(first: {', '.join(missing[:3])})"
            )

    def _kitti_frames(self) -> list[EvalFrame]:
        from edgedepth.labelgen import read_split_file

        frames = read_split_file(self.split_file)
        if not frames:
            raise ValueError(f"{self.split_file}: split file lists no frames")
        sides = kitti_split_sides(self.split_file, frames)
        return [
            EvalFrame(frame.frame_id, frame.image_path(self.root, _SIDE_CAM[side]), side)
            for frame, side in zip(frames, sides, strict=True)
        ]

    def _missing(self, frame: EvalFrame) -> bool:
        """The image is missing, or (KITTI LiDAR ground truth) the scan or the calibration files."""
        if not frame.image.is_file():
            return True
        if self.layout != "kitti" or self.gt != "lidar":
            return False
        kitti_frame = Frame.from_id(frame.frame_id)
        date_dir = self.root / kitti_frame.date
        needed = (kitti_frame.velodyne_path(self.root), date_dir / CAM_TO_CAM, date_dir / VELO_TO_CAM)
        return not all(path.is_file() for path in needed)

    def _rig_frames(self) -> list[EvalFrame]:
        layout = get_layout("rig")
        if self.split_file is not None:  # in the file's order
            frames = layout.read_frame_list(self.split_file)
            if not frames:
                raise ValueError(f"{self.split_file}: the frame list lists no frames")
            return [EvalFrame(f.frame_id, f.image_path(self.root, 2)) for f in frames]
        frames = layout.find_frames(self.root, None, None)
        if self.gt == "depth_gt":
            frames = [f for f in frames if f.depth_gt_path(self.root).is_file()]
            if not frames:
                raise ValueError(f"{self.root}: no frame has a depth_gt/<frame>.png (docs/rig.md)")
        return [EvalFrame(f.frame_id, f.image_path(self.root, 2)) for f in frames]

    def __len__(self) -> int:
        return len(self.frames)

    def _calibration(self, key: str) -> Calibration | RigCalibration:
        if key not in self._calibrations:
            if self.layout == "kitti":
                self._calibrations[key] = read_calibration(self.root / key)
            else:
                self._calibrations[key] = read_rig_calibration(self.root / key)
        return self._calibrations[key]

    def depth_range(self, frame: EvalFrame) -> tuple[float, float]:
        """(min, max) metres of the ground truth scored: the sequence's calib.json range (rig), else
        the KITTI convention 1e-3-80 m."""
        if self.layout == "rig":
            declared = self._calibration(RigFrame.from_id(frame.frame_id).sequence).depth_range
            if declared is not None:
                return max(float(declared[0]), MIN_DEPTH), float(declared[1])
        return MIN_DEPTH, MAX_DEPTH

    def groundtruth(self, frame: EvalFrame) -> np.ndarray | None:
        """The frame's ground truth, (H, W) float32 metres with 0 = none; None when it has none."""
        if self.layout == "rig":
            rig_frame = RigFrame.from_id(frame.frame_id)
            if self.gt == "depth_gt":
                path = rig_frame.depth_gt_path(self.root)
                return read_depth_png(path) if path.is_file() else None
            calib = self._calibration(rig_frame.sequence)
            try:
                return lidar_depth(rig_frame, calib, self.root)
            except ValueError:
                return None  # no LiDAR source: listed as without ground truth
        kitti_frame = Frame.from_id(frame.frame_id)
        if self.gt == "annotated":
            path = annotated_groundtruth_path(self.root, kitti_frame, self.annotated_root, cam=frame.cam)
            return None if path is None else read_annotated(path)
        scan = kitti_frame.velodyne_path(self.root)
        if scan.is_file() and scan.stat().st_size == 0:
            return None  # an empty scan: the frame has no ground truth (listed, not scored)
        calib = self._calibration(kitti_frame.date)
        return lidar_groundtruth(read_velodyne(scan), calib, cam=frame.cam)

    def describe(self) -> str:
        """One line: what the scores are against (printed by ``student eval``)."""
        if self.layout == "rig":
            ranges = {self.depth_range(f) for f in self.frames}
            span = f"{min(r[0] for r in ranges):g}-{max(r[1] for r in ranges):g} m" if ranges else "no frames"
            depth = f"ground truth within {span} (calib.json depth_range_m, else 80 m)"
        else:
            depth = f"ground truth within {MIN_DEPTH:g}-{MAX_DEPTH:g} m (KITTI)"
        return (
            f"{len(self.frames)} frames of {self.split_name} ({self.layout} layout), gt {self.gt}, "
            f"crop {self.crop}, {depth}"
        )

    def provenance(self) -> dict[str, Any]:
        """What eval.json records about the frames and the ground truth."""
        return {
            "layout": self.layout,
            "data_root": str(self.root.resolve()),
            "split": self.split_name,
            "split_file": str(self.split_file) if self.split_file else None,
            "split_lines": len(self.frames),
            "gt": self.gt,
            "crop": self.crop,
            "annotated_root": str(Path(self.annotated_root).resolve()) if self.annotated_root else None,
        }


__all__ = [
    "DEFAULT_CROP",
    "DEFAULT_GT",
    "GT_KINDS",
    "PACKAGED_SPLITS",
    "EvalFrame",
    "EvalSet",
    "kitti_split_sides",
    "resolve_split",
]
