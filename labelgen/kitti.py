"""The KITTI raw layout: calibration per date, frames identified by their relative path, readers.

Layout read (``<root>`` is what users pass as ``--kitti-root``)::

    <root>/<date>/calib_cam_to_cam.txt, calib_velo_to_cam.txt
    <root>/<date>/<date>_drive_<NNNN>_sync/image_02|image_03/data/<frame:010d>.png (or .jpg)
    <root>/<date>/<date>_drive_<NNNN>_sync/velodyne_points/data/<frame:010d>.bin

A frame is named by its relative path ``<date>/<drive>_sync/<frame:010d>``, never by its file
name alone (frame numbers repeat across drives).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edgedepth.labelgen.fields import MAX_IMAGE_SIDE, clip, field_of, image_size_field, matrix_field

CAM_TO_CAM = "calib_cam_to_cam.txt"
VELO_TO_CAM = "calib_velo_to_cam.txt"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_DRIVE_RE = re.compile(r"^(\d{4}_\d{2}_\d{2})_drive_(\d{4})_sync$")
_DATE_RE = re.compile(r"\d{4}_\d{2}_\d{2}", re.ASCII)
_FRAME_ID_RE = re.compile(r"(\d{4}_\d{2}_\d{2})/(\1_drive_\d{4}_sync)/(\d{10})", re.ASCII)
FRAME_ID_FORM = "'<date>/<date>_drive_<NNNN>_sync/<frame:010d>'"
MAX_FRAME_INDEX = 10**10 - 1  # frame ids hold the index in 10 digits


@dataclass(frozen=True)
class Calibration:
    """Rectified stereo + LiDAR calibration of one recording date (all matrices float64)."""

    date: str
    p_rect_02: np.ndarray  # 3x4, left colour camera after rectification
    p_rect_03: np.ndarray  # 3x4, right colour camera after rectification
    r_rect_00: np.ndarray  # 3x3, rectifying rotation of the reference camera
    velo_to_cam: np.ndarray  # 4x4, LiDAR -> unrectified reference camera
    image_size: tuple[int, int]  # (height, width) of rectified camera 2 (S_rect_02)

    @property
    def focal(self) -> float:
        """Rectified focal length in pixels (P_rect_02[0, 0])."""
        return float(self.p_rect_02[0, 0])

    @property
    def baseline(self) -> float:
        """Distance between cameras 2 and 3 in metres, from their projection matrices (about 0.54)."""
        return float((self.p_rect_02[0, 3] - self.p_rect_03[0, 3]) / self.focal)

    @property
    def doffs(self) -> float:
        """Right principal point minus the left's, in pixels (P_rect_03[0, 2] - P_rect_02[0, 2]; 0 on
        KITTI): depth = focal * baseline / (disparity + doffs)."""
        return float(self.p_rect_03[0, 2] - self.p_rect_02[0, 2])

    @property
    def depth_range(self) -> tuple[float, float] | None:
        """The rig's declared depth range in metres: KITTI declares none."""
        return None

    def projection(self, cam: int = 2) -> np.ndarray:
        """3x4 matrix taking homogeneous LiDAR points to homogeneous pixels of camera 2 or 3."""
        p_rect = {2: self.p_rect_02, 3: self.p_rect_03}[cam]
        r_rect = np.eye(4)
        r_rect[:3, :3] = self.r_rect_00
        return p_rect @ r_rect @ self.velo_to_cam

    def to_dict(self) -> dict[str, object]:
        """Plain JSON types, for plan.json and shard attributes."""
        return {
            "date": self.date,
            "P_rect_02": self.p_rect_02.tolist(),
            "P_rect_03": self.p_rect_03.tolist(),
            "R_rect_00": self.r_rect_00.tolist(),
            "velo_to_cam": self.velo_to_cam.tolist(),
            "image_size": list(self.image_size),
            "focal": self.focal,
            "baseline": self.baseline,
            "doffs": self.doffs,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        """The inverse of ``to_dict`` (the derived focal, baseline and doffs are recomputed). Types
        and shapes are checked (a one-line ValueError naming the key); plausibility is
        ``check_calibration``'s."""
        date = field_of(data, "date")
        if not isinstance(date, str):
            raise ValueError(f"date: not a string (got {clip(date)})")
        return cls(
            date=date,
            p_rect_02=matrix_field(data, "P_rect_02", (3, 4)),
            p_rect_03=matrix_field(data, "P_rect_03", (3, 4)),
            r_rect_00=matrix_field(data, "R_rect_00", (3, 3)),
            velo_to_cam=matrix_field(data, "velo_to_cam", (4, 4)),
            image_size=image_size_field(field_of(data, "image_size")),
        )


def _read_key_values(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: calibration file not found")
    values = {}
    for line in path.read_text().splitlines():
        key, sep, rest = line.partition(":")
        if not sep:
            continue
        try:
            values[key.strip()] = np.array([float(v) for v in rest.split()], dtype=np.float64)
        except ValueError:
            continue  # non-numeric entries such as calib_time
    return values


def _take(values: dict[str, np.ndarray], path: Path, key: str, size: int) -> np.ndarray:
    if key not in values:
        raise ValueError(f"{path}: missing {key}")
    if values[key].size != size:
        raise ValueError(f"{path}: {key} has {values[key].size} numbers, expected {size}")
    return values[key]


def read_calibration(date_dir: str | Path) -> Calibration:
    """Read ``calib_cam_to_cam.txt`` and ``calib_velo_to_cam.txt`` of one date folder."""
    date_dir = Path(date_dir)
    cam_path, velo_path = date_dir / CAM_TO_CAM, date_dir / VELO_TO_CAM
    cam, velo = _read_key_values(cam_path), _read_key_values(velo_path)
    velo_to_cam = np.eye(4)
    velo_to_cam[:3, :3] = _take(velo, velo_path, "R", 9).reshape(3, 3)
    velo_to_cam[:3, 3] = _take(velo, velo_path, "T", 3)
    width, height = _take(cam, cam_path, "S_rect_02", 2)
    for key in ("S_rect_02", "P_rect_02", "P_rect_03", "R_rect_00"):
        _check_finite(cam, cam_path, key)
    for key in ("R", "T"):
        _check_finite(velo, velo_path, key)
    calib = Calibration(
        date=date_dir.name,
        p_rect_02=_take(cam, cam_path, "P_rect_02", 12).reshape(3, 4),
        p_rect_03=_take(cam, cam_path, "P_rect_03", 12).reshape(3, 4),
        r_rect_00=_take(cam, cam_path, "R_rect_00", 9).reshape(3, 3),
        velo_to_cam=velo_to_cam,
        image_size=(int(round(height)), int(round(width))),
    )
    check_calibration(calib, cam_path, velo_path)
    return calib


ROTATION_TOLERANCE = 1e-3  # |R R^T - I| and |det R - 1|: KITTI's 6-digit matrices reach about 1e-6


def _check_finite(values: dict[str, np.ndarray], path: Path, key: str) -> None:
    if key in values and not np.isfinite(values[key]).all():
        raise ValueError(f"{path}: {key} holds a non-finite number (nan or inf)")


def check_calibration(calib: Calibration, cam_path: Path | str, velo_path: Path | str) -> None:
    """Raise a one-line ValueError unless the calibration is plausible: positive image size, focal
    length and baseline, equal focal lengths of the two rectified cameras, proper rotations."""
    matrices = (("P_rect_02", calib.p_rect_02, cam_path), ("P_rect_03", calib.p_rect_03, cam_path),
                ("R_rect_00", calib.r_rect_00, cam_path), ("R/T", calib.velo_to_cam, velo_path))  # fmt: skip
    for key, matrix, path in matrices:
        if not np.isfinite(matrix).all():
            raise ValueError(f"{path}: {key} holds a non-finite number (nan or inf)")
    height, width = calib.image_size
    if not (0 < height <= MAX_IMAGE_SIDE and 0 < width <= MAX_IMAGE_SIDE):
        raise ValueError(
            f"{cam_path}: S_rect_02 gives image size {width}x{height} (1 to {MAX_IMAGE_SIDE} px a side)"
        )
    if not calib.focal > 0:
        raise ValueError(f"{cam_path}: P_rect_02 focal length {calib.focal:g} px is not positive")
    if not np.isclose(calib.p_rect_03[0, 0], calib.focal, rtol=1e-3):
        raise ValueError(
            f"{cam_path}: P_rect_03 focal length {calib.p_rect_03[0, 0]:g} px differs from "
            f"P_rect_02's {calib.focal:g} px (not a rectified pair)"
        )
    if not calib.baseline > 0:
        raise ValueError(
            f"{cam_path}: stereo baseline {calib.baseline:g} m is not positive (P_rect_02 / P_rect_03 swapped?)"
        )
    for rotation, path, key in (
        (calib.r_rect_00, cam_path, "R_rect_00"),
        (calib.velo_to_cam[:3, :3], velo_path, "R"),
    ):
        orthogonal = np.abs(rotation @ rotation.T - np.eye(3)).max()
        det = float(np.linalg.det(rotation))
        if orthogonal > ROTATION_TOLERANCE or abs(det - 1) > ROTATION_TOLERANCE:
            raise ValueError(
                f"{path}: {key} is not a rotation (|R R^T - I| = {orthogonal:.2g}, det = {det:.4g})"
            )


@dataclass(frozen=True, order=True)
class Frame:
    """One synced KITTI raw frame: ``drive`` is the folder name, e.g. 2011_09_26_drive_0001_sync."""

    date: str
    drive: str
    index: int

    @property
    def frame_id(self) -> str:
        return f"{self.date}/{self.drive}/{self.index:010d}"

    @classmethod
    def from_id(cls, frame_id: str) -> Frame:
        """``<date>/<date>_drive_<NNNN>_sync/<frame:010d>`` -> Frame; anything else (another form,
        ``..``, an absolute path) is a one-line ValueError."""
        problem = frame_id_problem(frame_id)
        if problem:
            raise ValueError(problem)
        date, drive, index = frame_id.split("/")
        return cls(date, drive, int(index))

    def image_path(self, root: str | Path, cam: int = 2) -> Path:
        """Path of the camera-2/3 image; ``.png`` unless only a ``.jpg`` exists."""
        folder = Path(root) / self.date / self.drive / f"image_0{cam}" / "data"
        for suffix in IMAGE_SUFFIXES:
            path = folder / f"{self.index:010d}{suffix}"
            if path.exists():
                return path
        return folder / f"{self.index:010d}.png"

    def velodyne_path(self, root: str | Path) -> Path:
        return Path(root) / self.date / self.drive / "velodyne_points" / "data" / f"{self.index:010d}.bin"


def frame_id_problem(frame_id: object) -> str | None:
    """Why ``frame_id`` is not a KITTI frame id (None when it is one). The strict form keeps every
    input path of the frame inside the data root: no ``..``, no absolute path, no other folder."""
    if not isinstance(frame_id, str):
        return f"a frame id must be a string, got {type(frame_id).__name__} {clip(frame_id)}"
    if _FRAME_ID_RE.fullmatch(frame_id) is None:
        return f"{clip(frame_id)} is not a KITTI frame id {FRAME_ID_FORM}"
    return None


def _split_entry_problem(date: str, drive: str, index: str) -> str | None:
    """Why a split file's date, drive and index do not name a KITTI frame (None when they do)."""
    if _DATE_RE.fullmatch(date) is None:
        return f"{clip(date)} is not a KITTI date folder (YYYY_MM_DD)"
    match = _DRIVE_RE.match(drive)
    if match is None or not drive.isascii() or match.group(1) != date:
        return f"{clip(drive)} is not a drive of {date} ({date}_drive_<NNNN>_sync)"
    if int(index) > MAX_FRAME_INDEX:
        return f"frame index {clip(index)} has more than 10 digits"
    return None


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _normalise_drive(name: str) -> str:
    name = name.strip().strip("/").split("/")[-1]
    return name if name.endswith("_sync") else f"{name}_sync"


def _drive_frames(root: Path, date: str, drive: str) -> list[Frame]:
    folder = root / date / drive / "image_02" / "data"
    indices = {
        int(p.stem)
        for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES and len(p.stem) == 10 and _is_number(p.stem)
    }  # KITTI names frames <index:010d>; other names would plan frames whose files do not exist
    return [Frame(date, drive, i) for i in sorted(indices)]


def find_frames(
    root: str | Path, drives: Sequence[str] | None = None, split_file: str | Path | None = None
) -> list[Frame]:
    """Frames under ``root``: all of them, those of ``drives``, or those listed in ``split_file``.

    Drives are folder names with or without ``_sync`` (``2011_09_26_drive_0001``). Frames are
    sorted and unique; a split file listing both sides of a frame yields it once.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: KITTI root folder not found")
    if split_file is not None:
        frames = read_split_file(split_file)
    else:
        wanted = {_normalise_drive(d) for d in drives} if drives else None
        frames = []
        for drive_dir in sorted(root.glob("*/*_drive_*_sync")):
            match = _DRIVE_RE.match(drive_dir.name)
            if match and (wanted is None or drive_dir.name in wanted) and (drive_dir / "image_02").is_dir():
                frames += _drive_frames(root, drive_dir.parent.name, drive_dir.name)
        if wanted:
            found = {f.drive for f in frames}
            missing = sorted(wanted - found)
            if missing:
                raise ValueError(f"{root}: drive {missing[0]} not found (no image_02 frames)")
    frames = sorted(set(frames))
    if not frames:
        raise ValueError(f"{root}: no frames matched" + (f" {split_file}" if split_file else ""))
    return frames


def read_split_file(path: str | Path) -> list[Frame]:
    """Frames of a split file. Each line is a monodepth2 entry ``<date>/<drive>_sync <frame_index> l|r``
    or a frame id ``<date>/<drive>_sync/<frame_index>``; blank lines and '#' comments are skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: split file not found")
    frames = []
    for number, line in enumerate(read_list_lines(path), start=1):
        parts = line.split("#", 1)[0].split()
        if not parts:
            continue
        folder = parts[0].strip("/").split("/")
        if len(parts) == 1 and len(folder) == 3 and _is_number(folder[2]):
            date, drive, index = folder[0], _normalise_drive(folder[1]), folder[2]
        elif len(parts) in (2, 3) and len(folder) == 2 and _is_number(parts[1]):
            date, drive, index = folder[0], _normalise_drive(folder[1]), parts[1]
        else:
            raise ValueError(
                f"{path}:{number}: expected '<date>/<drive>_sync <frame_index> l|r' "
                f"or '<date>/<drive>_sync/<frame_index>', got {clip(line)}"
            )
        problem = _split_entry_problem(date, drive, index)
        if problem:
            raise ValueError(f"{path}:{number}: {problem}, in {clip(line)}")
        frames.append(Frame(date, drive, int(index)))
    return frames


def read_list_lines(path: Path) -> list[str]:
    """The lines of a frame-list file; a file that is not UTF-8 text is a one-line ValueError."""
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not a UTF-8 text file (byte {err.start}: {err.reason})") from None


def read_image(path: str | Path) -> np.ndarray:
    """An RGB uint8 image (H, W, 3); a missing or undecodable file is a one-line ValueError."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: image file not found")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: not a readable image (corrupt or truncated?)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_velodyne(path: str | Path) -> np.ndarray:
    """A Velodyne scan as (N, 4) float32: x, y, z (metres, LiDAR frame), reflectance."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: velodyne scan not found")
    size = path.stat().st_size
    if size % 16:
        raise ValueError(f"{path}: {size} bytes is not a multiple of 16 (truncated scan?)")
    if size == 0:
        raise ValueError(f"{path}: empty velodyne scan (0 points)")
    points = np.fromfile(path, dtype=np.float32).reshape(-1, 4)
    bad = ~np.isfinite(points[:, :3]).all(axis=1)
    if bad.all():
        raise ValueError(f"{path}: no finite points in the scan ({len(points)} points, all nan or inf)")
    return points[~bad] if bad.any() else points


def calibrations_for(root: str | Path, frames: Iterable[Frame]) -> dict[str, Calibration]:
    """The calibration of every date the frames come from, read once per date."""
    return {date: read_calibration(Path(root) / date) for date in sorted({f.date for f in frames})}
