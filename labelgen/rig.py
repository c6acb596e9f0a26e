"""The rig layout: rectified stereo sequences of any source, one ``calib.json`` per sequence.

Layout read (``<root>`` is what users pass as ``--data-root``; docs/rig.md is the user's page)::

    <root>/<sequence>/calib.json               fx, fy, cx, cy (px), baseline_m (m) of the rectified
                                               left camera; optional doffs_px, depth_range_m, T_cam_lidar
    <root>/<sequence>/left/<frame>.png         and right/<frame>.png (.png, .jpg or .jpeg)
    <root>/<sequence>/lidar/<frame>.npy        optional: N x 3+ points in the LiDAR frame (metres)
    <root>/<sequence>/lidar_depth/<frame>.png  optional: sparse depth in the left camera (uint16, m x 256)
    <root>/<sequence>/depth_gt/<frame>.png     optional: ground truth, same encoding (evaluation only)

A frame is named ``<sequence>/<frame>``. Depth from disparity d (left x minus right x, pixels) is
``fx * baseline / (d + doffs)``: the right camera sits ``baseline`` metres to the right of the left
one and its principal point is at ``cx + doffs``. ``RigCalibration`` and ``RigFrame`` have the
interface of ``edgedepth.labelgen.kitti.Calibration`` and ``Frame`` that the plan and the stages use.
The depth PNGs and LiDAR points are read by ``edgedepth.labelgen.rig_arrays``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edgedepth.labelgen.fields import (
    MAX_IMAGE_SIDE,
    clip,
    field_of,
    image_size_field,
    matrix_field,
    plain_number,
)
from edgedepth.labelgen.kitti import IMAGE_SUFFIXES, ROTATION_TOLERANCE, read_list_lines

CALIB_FILE = "calib.json"
CAMERA_FOLDERS = {2: "left", 3: "right"}  # camera numbers as in KITTI: 2 = left, 3 = right
REQUIRED_KEYS = ("fx", "fy", "cx", "cy", "baseline_m")


@dataclass(frozen=True)
class RigCalibration:
    """One sequence's rectified stereo calibration (pixels, metres); ``image_size`` = (height, width)."""

    sequence: str
    fx: float
    fy: float
    cx: float
    cy: float
    baseline: float  # metres, left to right camera
    image_size: tuple[int, int]  # of the sequence's first left image
    doffs: float = 0.0  # right principal point minus the left's, pixels
    depth_range: tuple[float, float] | None = None  # metres, as declared in calib.json
    t_cam_lidar: np.ndarray | None = None  # 4x4, LiDAR -> rectified left camera, metres

    @property
    def focal(self) -> float:
        """Horizontal focal length in pixels (the one disparity scales with)."""
        return self.fx

    @property
    def date(self) -> str:
        """The plan's calibration key (KITTI's is the date): the sequence."""
        return self.sequence

    def intrinsics(self, cam: int = 2) -> np.ndarray:
        """3x3 camera matrix of the left (2) or right (3) camera; the right's cx is ``cx + doffs``."""
        if cam not in CAMERA_FOLDERS:
            raise ValueError(f"cam must be 2 or 3, got {cam!r}")
        cx = self.cx + (self.doffs if cam == 3 else 0.0)
        return np.array([[self.fx, 0.0, cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def projection(self, cam: int = 2) -> np.ndarray:
        """3x4 matrix taking homogeneous LiDAR points (metres) to homogeneous pixels of camera 2 or 3."""
        if self.t_cam_lidar is None:
            raise ValueError(
                f"{self.sequence}/{CALIB_FILE}: no T_cam_lidar, so LiDAR points cannot be projected"
            )
        offset = np.zeros((3, 1)) if cam == 2 else np.array([[-self.baseline], [0.0], [0.0]])
        return self.intrinsics(cam) @ np.hstack([np.eye(3), offset]) @ self.t_cam_lidar

    def to_dict(self) -> dict[str, object]:
        """Plain JSON types, for plan.json and shard attributes."""
        return {
            "sequence": self.sequence,
            "fx": self.fx,
            "fy": self.fy,
            "cx": self.cx,
            "cy": self.cy,
            "baseline": self.baseline,
            "doffs": self.doffs,
            "depth_range": list(self.depth_range) if self.depth_range else None,
            "T_cam_lidar": self.t_cam_lidar.tolist() if self.t_cam_lidar is not None else None,
            "image_size": list(self.image_size),
            "focal": self.focal,
        }

    @classmethod
    def from_dict(cls, data: dict) -> RigCalibration:
        """The inverse of ``to_dict``. Types and shapes are checked (a one-line ValueError naming the
        key); plausibility is ``check_rig_calibration``'s."""
        sequence = field_of(data, "sequence")
        if not isinstance(sequence, str):
            raise ValueError(f"sequence: not a string (got {clip(sequence)})")
        depth_range, t_cam_lidar = data.get("depth_range"), data.get("T_cam_lidar")
        if depth_range is not None:
            if not isinstance(depth_range, list) or len(depth_range) != 2:
                raise ValueError(f"depth_range: not [min, max] or null (got {clip(depth_range)})")
            depth_range = tuple(plain_number({"depth_range": v}, "depth_range") for v in depth_range)
        return cls(
            sequence=sequence,
            fx=plain_number(data, "fx"),
            fy=plain_number(data, "fy"),
            cx=plain_number(data, "cx"),
            cy=plain_number(data, "cy"),
            baseline=plain_number(data, "baseline"),
            image_size=image_size_field(field_of(data, "image_size")),
            doffs=plain_number(data, "doffs") if "doffs" in data else 0.0,
            depth_range=depth_range,
            t_cam_lidar=None if t_cam_lidar is None else matrix_field(data, "T_cam_lidar", (4, 4)),
        )


def _number(data: dict, key: str, path: Path | str) -> float:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{path}: {key} is not a number (got {clip(value)})")
    try:
        value = float(value)
    except OverflowError:  # an integer beyond float range
        raise ValueError(f"{path}: {key} is out of range (got {clip(value)})") from None
    if not math.isfinite(value):
        raise ValueError(f"{path}: {key} is not finite (got {value!r})")
    return value


def _depth_range(value: object, path: Path | str) -> tuple[float, float]:
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError(f"{path}: depth_range_m must be [min, max] in metres, got {value!r}")
    low, high = (_number({"depth_range_m": v}, "depth_range_m", path) for v in value)
    if not 0 <= low < high:
        raise ValueError(f"{path}: depth_range_m [{low:g}, {high:g}] is not 0 <= min < max")
    return low, high


def _transform(value: object, path: Path | str) -> np.ndarray:
    try:
        matrix = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: T_cam_lidar is not a 4x4 matrix of numbers") from None
    if matrix.shape != (4, 4):
        raise ValueError(f"{path}: T_cam_lidar must be 4x4, got shape {matrix.shape}")
    check_transform(matrix, path)
    return matrix


def check_transform(matrix: np.ndarray, path: Path | str) -> None:
    """One-line ValueError unless ``matrix`` is a finite rigid transform [R t; 0 0 0 1]."""
    if not np.isfinite(matrix).all():
        raise ValueError(f"{path}: T_cam_lidar holds a non-finite number (nan or inf)")
    if not np.allclose(matrix[3], [0.0, 0.0, 0.0, 1.0]):
        raise ValueError(f"{path}: T_cam_lidar's last row is {matrix[3].tolist()}, expected [0, 0, 0, 1]")
    rotation = matrix[:3, :3]
    orthogonal = np.abs(rotation @ rotation.T - np.eye(3)).max()
    det = float(np.linalg.det(rotation))
    if orthogonal > ROTATION_TOLERANCE or abs(det - 1) > ROTATION_TOLERANCE:
        raise ValueError(
            f"{path}: T_cam_lidar's rotation is not a rotation (|R R^T - I| = {orthogonal:.2g}, det = {det:.4g})"
        )


def check_rig_calibration(calib: RigCalibration, path: Path | str) -> None:
    """One-line ValueError unless the calibration is plausible (for calibrations read from a plan)."""
    data = {"fx": calib.fx, "fy": calib.fy, "cx": calib.cx, "cy": calib.cy, "baseline": calib.baseline,
            "doffs": calib.doffs}  # fmt: skip
    for key in data:
        _number(data, key, path)
    for key in ("fx", "fy", "baseline"):
        if not data[key] > 0:
            raise ValueError(f"{path}: {key} {data[key]:g} is not positive")
    if calib.depth_range is not None:
        _depth_range(list(calib.depth_range), path)
    if calib.t_cam_lidar is not None:
        _transform(calib.t_cam_lidar, path)
    height, width = calib.image_size
    if not (0 < height <= MAX_IMAGE_SIDE and 0 < width <= MAX_IMAGE_SIDE):
        raise ValueError(f"{path}: image size {width}x{height} is outside 1 to {MAX_IMAGE_SIDE} px a side")


def left_images(sequence_dir: Path) -> list[Path]:
    """The sequence's left images (.png, .jpg, .jpeg), sorted by name."""
    folder = sequence_dir / CAMERA_FOLDERS[2]
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def read_rig_calibration(sequence_dir: str | Path) -> RigCalibration:
    """Read and check ``<sequence_dir>/calib.json``; the image size is the first left image's.

    Every problem is a one-line error naming calib.json (or the image): missing file or keys,
    non-numeric or non-finite values, fx / fy / baseline_m not positive, depth_range_m not
    0 <= min < max, T_cam_lidar not a 4x4 rigid transform, no left images.
    """
    sequence_dir = Path(sequence_dir)
    path = sequence_dir / CALIB_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: calibration file not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got a JSON {type(data).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise ValueError(f"{path}: missing key(s) {', '.join(missing)}")
    values = {key: _number(data, key, path) for key in REQUIRED_KEYS}
    for key in ("fx", "fy", "baseline_m"):
        if not values[key] > 0:
            raise ValueError(f"{path}: {key} {values[key]:g} is not positive")
    doffs = _number(data, "doffs_px", path) if "doffs_px" in data else 0.0
    depth_range = _depth_range(data["depth_range_m"], path) if "depth_range_m" in data else None
    t_cam_lidar = _transform(data["T_cam_lidar"], path) if "T_cam_lidar" in data else None
    images = left_images(sequence_dir)
    if not images:
        raise ValueError(
            f"{path}: no left images in {sequence_dir / CAMERA_FOLDERS[2]} (.png, .jpg or .jpeg)"
        )
    image = cv2.imread(str(images[0]), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"{images[0]}: not a readable image (corrupt or truncated?)")
    if max(image.shape[:2]) > MAX_IMAGE_SIDE:
        raise ValueError(f"{images[0]}: {image.shape[1]}x{image.shape[0]} is over {MAX_IMAGE_SIDE} px a side")
    return RigCalibration(
        sequence=sequence_dir.name,
        fx=values["fx"],
        fy=values["fy"],
        cx=values["cx"],
        cy=values["cy"],
        baseline=values["baseline_m"],
        image_size=(int(image.shape[0]), int(image.shape[1])),
        doffs=doffs,
        depth_range=depth_range,
        t_cam_lidar=t_cam_lidar,
    )


@dataclass(frozen=True, order=True)
class RigFrame:
    """One frame of a rig sequence: ``<root>/<sequence>/left/<name>.png`` and its companions."""

    sequence: str
    name: str

    @property
    def frame_id(self) -> str:
        return f"{self.sequence}/{self.name}"

    @property
    def drive(self) -> str:
        """The sequence (per-drive logic, e.g. hold-out by drive, works by sequence)."""
        return self.sequence

    @property
    def date(self) -> str:
        """The sequence (the plan keys calibrations by it)."""
        return self.sequence

    @classmethod
    def from_id(cls, frame_id: str) -> RigFrame:
        """``<sequence>/<frame>`` (surrounding blanks ignored) -> RigFrame; anything else is a
        one-line ValueError."""
        text = frame_id.strip() if isinstance(frame_id, str) else frame_id
        problem = frame_id_problem(text)
        if problem:
            raise ValueError(problem)
        sequence, name = text.split("/")
        return cls(sequence, name)

    def image_path(self, root: str | Path, cam: int = 2) -> Path:
        """Path of the left (cam 2) or right (cam 3) image; ``.png`` unless only a .jpg / .jpeg exists."""
        if cam not in CAMERA_FOLDERS:
            raise ValueError(f"cam must be 2 or 3, got {cam!r}")
        folder = Path(root) / self.sequence / CAMERA_FOLDERS[cam]
        for suffix in IMAGE_SUFFIXES:
            path = folder / f"{self.name}{suffix}"
            if path.exists():
                return path
        return folder / f"{self.name}.png"

    def lidar_points_path(self, root: str | Path) -> Path:
        return Path(root) / self.sequence / "lidar" / f"{self.name}.npy"

    def lidar_depth_path(self, root: str | Path) -> Path:
        return Path(root) / self.sequence / "lidar_depth" / f"{self.name}.png"

    def depth_gt_path(self, root: str | Path) -> Path:
        return Path(root) / self.sequence / "depth_gt" / f"{self.name}.png"


_ID_RE = re.compile(r"([^/\x00-\x1f\x7f]+)/([^/\x00-\x1f\x7f]+)")
FRAME_ID_FORM = "'<sequence>/<frame>'"


def frame_id_problem(frame_id: object) -> str | None:
    """Why ``frame_id`` is not a rig frame id (None when it is one): two names, neither ``.`` nor
    ``..`` nor holding a control character, so every input path stays inside the data root."""
    if not isinstance(frame_id, str):
        return f"a frame id must be a string, got {type(frame_id).__name__} {clip(frame_id)}"
    match = _ID_RE.fullmatch(frame_id)
    if match is None or frame_id != frame_id.strip() or {".", ".."} & set(match.groups()):
        return f"{clip(frame_id)} is not a rig frame id {FRAME_ID_FORM}"
    return None


def find_sequences(root: str | Path) -> list[str]:
    """Sequence folders under ``root``: those holding a calib.json or a left/ folder, sorted."""
    root = Path(root)
    return sorted(
        p.name for p in root.iterdir() if p.is_dir() and ((p / CALIB_FILE).is_file() or (p / "left").is_dir())
    )


def find_rig_frames(
    root: str | Path, sequences: Sequence[str] | None = None, frame_list: str | Path | None = None
) -> list[RigFrame]:
    """Frames under ``root``: all of them, those of ``sequences``, or those listed in ``frame_list``
    (a file of ``<sequence>/<frame>`` lines). Sorted and unique."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data root folder not found")
    if frame_list is not None:
        frames = read_rig_frame_list(frame_list)
    else:
        found = find_sequences(root)
        if sequences:
            missing = sorted(set(sequences) - set(found))
            if missing:
                raise ValueError(
                    f"{root}: sequence {missing[0]} not found (no {missing[0]}/{CALIB_FILE} or {missing[0]}/left/)"
                )
        frames = []
        for seq in sequences or found:
            for path in left_images(root / seq):
                frame = RigFrame(seq, path.stem)
                if frame_id_problem(frame.frame_id):
                    raise ValueError(f"{path}: a frame name must not hold '/' or a control character")
                frames.append(frame)
    frames = sorted(set(frames))
    if not frames:
        raise ValueError(f"{root}: no frames matched" + (f" {frame_list}" if frame_list else ""))
    return frames


def read_rig_frame_list(path: str | Path) -> list[RigFrame]:
    """Frames of a list file: one ``<sequence>/<frame>`` per line; '#' comments and blank lines skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: frame list not found")
    frames = []
    for number, line in enumerate(read_list_lines(path), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            frames.append(RigFrame.from_id(text))
        except ValueError:
            raise ValueError(
                f"{path}:{number}: expected '<sequence>/<frame>' (neither '.' nor '..'), got {clip(line)}"
            ) from None
    return frames


__all__ = [
    "CALIB_FILE",
    "CAMERA_FOLDERS",
    "RigCalibration",
    "RigFrame",
    "check_rig_calibration",
    "find_rig_frames",
    "find_sequences",
    "read_rig_calibration",
    "read_rig_frame_list",
]
