"""A KITTI raw tree (one or more dates and drives) -> a rig tree, one sequence per drive.

Frames keep their 10-digit index as name; image_02 is left, image_03 right (copied byte for byte).
``calib.json`` comes from the date's calibration: fx, fy, cx, cy of P_rect_02, the baseline and
``doffs_px`` (P_rect_03's principal point minus P_rect_02's), depth_range_m [1, 80] and
``T_cam_lidar`` = (camera 2's translation in P_rect_02) @ R_rect_00 @ velo_to_cam, so that
``K [I | 0] T_cam_lidar`` is KITTI's own P_rect_02 @ R_rect_00 @ velo_to_cam.

The LiDAR of a frame, the first found of:

- ``<date>/<drive>/velodyne_points/data/<frame>.bin`` -> ``lidar/<frame>.npy`` (N x 4 float32);
- ``<date>/<drive>/proj_depth/velodyne/image_02/<frame>.npz`` (key ``velodyne_depth``, metres)
  -> ``lidar_depth/<frame>.png``;
- KITTI's ``proj_depth/velodyne_raw/image_02/<frame>.png`` (data_depth_annotated) -> ``lidar_depth``.

``depth_gt`` is KITTI's annotated ``proj_depth/groundtruth/image_02/<frame>.png`` when found (both
depth-completion PNGs looked for where ``student eval`` looks for annotated ground truth).
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edgedepth.common import first_line
from edgedepth.labelgen.importers.writer import ImportReport, RigWriter, calibration_json
from edgedepth.labelgen.kitti import (
    CAM_TO_CAM,
    Calibration,
    Frame,
    find_frames,
    read_calibration,
    read_velodyne,
)
from edgedepth.labelgen.rig_arrays import read_depth_png

DEPTH_RANGE_M = (1.0, 80.0)
ANNOTATED_SUBSETS = ("train", "val")
NPZ_KEY = "velodyne_depth"


def t_cam_lidar(calib: Calibration) -> np.ndarray:
    """4x4 LiDAR -> rectified camera 2 (metres): [I | K^-1 P_rect_02[:, 3]] @ R_rect_00 @ velo_to_cam."""
    to_cam2 = np.eye(4)
    to_cam2[:3, 3] = np.linalg.solve(calib.p_rect_02[:, :3], calib.p_rect_02[:, 3])
    rectify = np.eye(4)
    rectify[:3, :3] = calib.r_rect_00
    return to_cam2 @ rectify @ calib.velo_to_cam


def annotated_path(
    root: Path, frame: Frame, kind: str, annotated_root: Path | None = None, cam: int = 2
) -> Path | None:
    """KITTI's depth-completion PNG of ``kind`` (``groundtruth`` or ``velodyne_raw``), or None.

    Looked for, in this order (``<p>`` = ``<drive>/proj_depth/<kind>/image_0{cam}/<frame:010d>.png``):
    ``<annotated_root>/{train,val}/<p>``, ``<annotated_root>/<p>``,
    ``<root>/data_depth_annotated/{train,val}/<p>``, ``<root>/<date>/<p>``.
    """
    tail = Path(frame.drive) / "proj_depth" / kind / f"image_0{cam}" / f"{frame.index:010d}.png"
    candidates: list[Path] = []
    if annotated_root is not None:
        candidates += [annotated_root / subset / tail for subset in ANNOTATED_SUBSETS]
        candidates.append(annotated_root / tail)
    candidates += [root / "data_depth_annotated" / subset / tail for subset in ANNOTATED_SUBSETS]
    candidates.append(root / frame.date / tail)
    return next((path for path in candidates if path.is_file()), None)


def read_projected_npz(path: Path, size: tuple[int, int]) -> np.ndarray:
    """The ``velodyne_depth`` map (H, W) float32 metres of a projected-LiDAR .npz (0 = no return)."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(
            f"{path}: not a readable .npz archive ({first_line(err) or type(err).__name__})"
        ) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: not an .npz archive (a single .npy array)")
    with archive:
        if NPZ_KEY not in archive.files:
            held = ", ".join(archive.files) or "nothing"
            raise ValueError(f"{path}: no {NPZ_KEY!r} array (it holds {held})")
        try:
            depth = np.asarray(archive[NPZ_KEY])
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(
                f"{path}: {NPZ_KEY} is unreadable ({first_line(err) or type(err).__name__})"
            ) from None
    if depth.shape != tuple(size) or not np.issubdtype(depth.dtype, np.floating):
        raise ValueError(
            f"{path}: {NPZ_KEY} must be a float {size[1]}x{size[0]} map, got {depth.dtype} {depth.shape}"
        )
    if not np.isfinite(depth).all():
        raise ValueError(f"{path}: {NPZ_KEY} holds non-finite values (nan or inf)")
    return depth.astype(np.float32)


def _checked_png(path: Path, size: tuple[int, int]) -> Path:
    depth = read_depth_png(path)
    if depth.shape != tuple(size):
        raise ValueError(
            f"{path}: depth map is {depth.shape[1]}x{depth.shape[0]}, images are {size[1]}x{size[0]}"
        )
    return path


def _calibration_text(calib: Calibration, frame: Frame, depth_range_m: tuple[float, float]) -> str:
    p2 = calib.p_rect_02
    notes = {
        "source": (
            f"KITTI raw {frame.date}/{frame.drive}: image_02 = left, image_03 = right; from "
            "calib_cam_to_cam.txt (P_rect_02, P_rect_03, R_rect_00) and calib_velo_to_cam.txt"
        )
    }
    return calibration_json(p2[0, 0], p2[1, 1], p2[0, 2], p2[1, 2], calib.baseline, calib.doffs,
                            depth_range_m, t_cam_lidar(calib), notes)  # fmt: skip


def _import_frame(
    src: Path, frame: Frame, calib: Calibration, writer: RigWriter, annotated_root: Path | None
) -> None:
    sequence, name = frame.drive, f"{frame.index:010d}"
    for cam, kind in ((2, "left"), (3, "right")):
        image = frame.image_path(src, cam)
        if image.is_file():
            writer.copy(sequence, kind, name + image.suffix.lower(), image)
    scan = frame.velodyne_path(src)
    npz = src / frame.date / frame.drive / "proj_depth" / "velodyne" / "image_02" / f"{name}.npz"
    if scan.is_file():
        writer.points(sequence, name, read_velodyne(scan))
    elif npz.is_file():
        writer.depth(sequence, "lidar_depth", name, read_projected_npz(npz, calib.image_size))
    elif (raw := annotated_path(src, frame, "velodyne_raw", annotated_root)) is not None:
        writer.copy(sequence, "lidar_depth", f"{name}.png", _checked_png(raw, calib.image_size))
    if (truth := annotated_path(src, frame, "groundtruth", annotated_root)) is not None:
        writer.copy(sequence, "depth_gt", f"{name}.png", _checked_png(truth, calib.image_size))


def import_kitti_depth(
    src: str | Path,
    out: str | Path,
    drives: Sequence[str] | None = None,
    annotated_root: str | Path | None = None,
    depth_range_m: tuple[float, float] = DEPTH_RANGE_M,
    progress: bool = True,
) -> ImportReport:
    """Import the drives of a KITTI raw tree ``src`` (all, or ``drives``) into the rig tree ``out``.

    ``annotated_root`` is where KITTI's data_depth_annotated archive was unpacked, if not under
    ``src``. Re-importing writes the same bytes. A source that is not a KITTI raw tree, or a date
    whose calibration cannot be read, is a one-line error naming the file.
    """
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: KITTI root folder not found")
    if not any(src.glob(f"*/{CAM_TO_CAM}")):
        raise ValueError(f"{src}: not a KITTI raw tree (no <date>/{CAM_TO_CAM})")
    if not 0 <= depth_range_m[0] < depth_range_m[1]:
        raise ValueError(f"depth range must be 0 <= min < max metres, got {list(depth_range_m)}")
    frames = find_frames(src, drives=drives)
    calibrations = {date: read_calibration(src / date) for date in sorted({f.date for f in frames})}
    annotated = Path(annotated_root) if annotated_root is not None else None
    writer = RigWriter(out)
    written: set[str] = set()
    for frame in tqdm(frames, unit="frame", disable=not progress, desc="kitti"):
        calib = calibrations[frame.date]
        if frame.drive not in written:
            writer.calibration(frame.drive, _calibration_text(calib, frame, depth_range_m))
            written.add(frame.drive)
        _import_frame(src, frame, calib, writer, annotated)
    return writer.report(sorted(written), len(frames))


__all__ = ["DEPTH_RANGE_M", "annotated_path", "import_kitti_depth", "read_projected_npz", "t_cam_lidar"]
