"""The embedded default data: Middlebury 2014 "Motorcycle" (shipped by scikit-image) in the KITTI layout.

``skimage.data.stereo_motorcycle()`` gives a rectified stereo pair (500 x 741 px) and its
ground-truth disparity; its docstring gives the calibration at that size (focal 994.978 px,
principal point (311.193, 254.877) px, principal-point offset of the right camera 31.086 px,
baseline 193.001 mm). ``make_motorcycle_kitti`` writes it as a one-drive, one-frame KITTI raw tree::

    ROOT/2014_09_01/calib_cam_to_cam.txt, calib_velo_to_cam.txt
    ROOT/2014_09_01/2014_09_01_drive_0001_sync/image_02/data/0000000000.png     left, as shipped
    ROOT/2014_09_01/2014_09_01_drive_0001_sync/image_03/data/0000000000.png     right, moved by dx
    ROOT/2014_09_01/2014_09_01_drive_0001_sync/velodyne_points/data/0000000000.bin
    ROOT/2014_09_01/2014_09_01_drive_0001_sync/proj_depth/groundtruth/image_02/0000000000.png
    ROOT/demo_split.txt                                                             the one frame

- **Right image.** Middlebury's cameras have different principal points, so depth is
  ``f * B / (d + dx)``. The right image is moved left by ``dx`` (sub-pixel, bilinear) so both
  cameras share the principal point, as KITTI's rectified pairs do; then depth is ``f * B / d'``
  with ``d' = d + dx``, and P_rect_03 is P_rect_02 with ``-f * B`` in its last column.
- **Ground truth** (``proj_depth/groundtruth``, KITTI's 16-bit PNG, metres x 256, 0 = none):
  ``f * B / (d + dx)`` wherever the disparity is finite (NaN or inf in scikit-image = none).
- **"LiDAR"**: a spinning scanner at the left camera, 64 beams at evenly spaced elevations across
  the image's vertical field of view, one return every 0.2 degrees of azimuth. Each ray is snapped
  to the pixel it hits; where that pixel has ground truth, the point is the ground-truth depth along
  the pixel's ray (no noise added), written in the LiDAR frame (x forward, y left, z up) through
  the inverse of ``calib_velo_to_cam`` (about 12,000 points, some 3 % of the pixels, KITTI-like).
  Reflectance is the pixel's grey level in [0, 1].
- The date folder name is made up (KITTI's pattern needs one); the scene is indoors, 2-5 m deep.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from labelgen.atomic import write_bytes_atomic, write_text_atomic
from labelgen.lidar import depth_to_png16

FOCAL_PX, CX_PX, CY_PX = 994.978, 311.193, 254.877
DOFFS_PX = 31.086  # right principal point minus left (x)
BASELINE_M = 0.193001
DATE = "2014_09_01"
DRIVE = f"{DATE}_drive_0001_sync"
FRAME = 0
SPLIT_FILE = "demo_split.txt"
BEAMS, AZIMUTH_STEP_DEG = 64, 0.2
VELO_TO_CAM_R = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])  # x fwd, y left, z up
VELO_TO_CAM_T = np.array([0.0, -0.08, -0.06])  # metres: the scanner sits 8 cm above, 6 cm behind


@dataclass(frozen=True)
class MotorcycleData:
    """Where the tree is, and what it holds (for the report)."""

    root: Path
    split_file: Path
    image_size: tuple[int, int]  # (height, width)
    gt_pixels: int
    lidar_points: int
    depth_range_m: tuple[float, float]


def load_motorcycle() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(left RGB, right RGB moved by dx, ground-truth depth in metres with 0 = none), all (500, 741)."""
    from skimage.data import stereo_motorcycle

    left, right, disparity = stereo_motorcycle()
    shift = np.float32([[1, 0, DOFFS_PX], [0, 1, 0]])  # dst(x) = src(x + dx)
    height, width = left.shape[:2]
    right = cv2.warpAffine(
        right, shift, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderValue=0
    )
    known = np.isfinite(disparity)
    depth = np.zeros(disparity.shape, np.float32)
    depth[known] = FOCAL_PX * BASELINE_M / (disparity[known] + DOFFS_PX)
    return left, right, depth


def lidar_scan(depth: np.ndarray, grey: np.ndarray) -> np.ndarray:
    """(N, 4) float32 LiDAR points (x, y, z m; reflectance) sampling ``depth`` (H, W, m) along scan lines."""
    height, width = depth.shape
    top, bottom = np.arctan((CY_PX - 0.5) / FOCAL_PX), np.arctan((height - 0.5 - CY_PX) / FOCAL_PX)
    left, right = np.arctan((CX_PX - 0.5) / FOCAL_PX), np.arctan((width - 0.5 - CX_PX) / FOCAL_PX)
    elevation = np.linspace(top, -bottom, BEAMS)  # up is positive
    azimuth = np.deg2rad(np.arange(np.rad2deg(-right), np.rad2deg(left), AZIMUTH_STEP_DEG))  # left positive
    el, az = np.meshgrid(elevation, azimuth, indexing="ij")
    x_cam = -np.tan(az)  # camera frame: x right, y down, z forward, at z = 1
    y_cam = -np.tan(el) * np.sqrt(1 + x_cam**2)
    u = np.rint(CX_PX + FOCAL_PX * x_cam).astype(int).ravel()
    v = np.rint(CY_PX + FOCAL_PX * y_cam).astype(int).ravel()
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    u, v = u[inside], v[inside]
    z = depth[v, u]
    hit = z > 0
    u, v, z = u[hit], v[hit], z[hit]
    cam = np.stack([(u - CX_PX) / FOCAL_PX * z, (v - CY_PX) / FOCAL_PX * z, z], axis=1)
    velo = (cam - VELO_TO_CAM_T) @ VELO_TO_CAM_R  # inverse of cam = R @ velo + T (R orthonormal)
    reflectance = grey[v, u].astype(np.float64) / 255.0
    return np.column_stack([velo, reflectance]).astype(np.float32)


def _row(values: np.ndarray) -> str:
    return " ".join(f"{v:.6e}" for v in np.ravel(values))


def calibration_files(image_size: tuple[int, int]) -> dict[str, str]:
    """The two calibration files' text, in KITTI's format."""
    height, width = image_size
    p2 = np.array([[FOCAL_PX, 0, CX_PX, 0], [0, FOCAL_PX, CY_PX, 0], [0, 0, 1, 0]])
    p3 = p2.copy()
    p3[0, 3] = -FOCAL_PX * BASELINE_M
    size = f"{width:.6e} {height:.6e}"
    cam = [
        "calib_time: Middlebury 2014 Motorcycle (scikit-image stereo_motorcycle), quarter size",
        f"S_rect_02: {size}", f"R_rect_00: {_row(np.eye(3))}", f"P_rect_02: {_row(p2)}",
        f"S_rect_03: {size}", f"R_rect_03: {_row(np.eye(3))}", f"P_rect_03: {_row(p3)}",
    ]  # fmt: skip
    velo = ["calib_time: simulated scanner", f"R: {_row(VELO_TO_CAM_R)}", f"T: {_row(VELO_TO_CAM_T)}"]
    return {"calib_cam_to_cam.txt": "\n".join(cam) + "\n", "calib_velo_to_cam.txt": "\n".join(velo) + "\n"}


def _png(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise ValueError("could not encode a PNG")
    return data.tobytes()


def make_motorcycle_kitti(root: str | Path) -> MotorcycleData:
    """Write the KITTI-layout tree under ``root`` (files are replaced atomically; same bytes each time)."""
    root = Path(root)
    left, right, depth = load_motorcycle()
    grey = cv2.cvtColor(left, cv2.COLOR_RGB2GRAY)
    points = lidar_scan(depth, grey)
    drive, name = root / DATE / DRIVE, f"{FRAME:010d}"
    for file_name, text in calibration_files(depth.shape).items():
        (root / DATE).mkdir(parents=True, exist_ok=True)
        write_text_atomic(root / DATE / file_name, text)
    outputs = {
        drive / "image_02" / "data" / f"{name}.png": _png(cv2.cvtColor(left, cv2.COLOR_RGB2BGR)),
        drive / "image_03" / "data" / f"{name}.png": _png(cv2.cvtColor(right, cv2.COLOR_RGB2BGR)),
        drive / "velodyne_points" / "data" / f"{name}.bin": points.tobytes(),
        drive / "proj_depth" / "groundtruth" / "image_02" / f"{name}.png": _png(depth_to_png16(depth)),
    }
    for path, data in outputs.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, data)
    split = root / SPLIT_FILE
    write_text_atomic(split, f"{DATE}/{DRIVE} {FRAME} l\n")
    known = depth[depth > 0]
    return MotorcycleData(
        root, split, depth.shape, int(known.size), len(points), (float(known.min()), float(known.max()))
    )


__all__ = ["BASELINE_M", "DOFFS_PX", "FOCAL_PX", "MotorcycleData", "load_motorcycle", "make_motorcycle_kitti"]
