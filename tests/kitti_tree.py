"""A synthetic KITTI raw tree: real file formats, made-up content with known answers.

A test fixture (also used by two benchmarks for KITTI-size frames): each frame is a
textured stereo pair whose true disparity is ``SHIFT`` pixels everywhere, plus a random LiDAR scan,
with calibration files in KITTI's text format for a rig like KITTI's (focal 721.5 px, 0.54 m).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

FOCAL, BASELINE, SHIFT = 721.5377, 0.54, 16  # synthetic rig; right image = left shifted by SHIFT px


def _row(values) -> str:
    return " ".join(f"{v:.6e}" for v in np.ravel(values))


def write_calibration(date_dir: Path, size: tuple[int, int], focal: float = FOCAL) -> None:
    """Calibration files in KITTI's text format for a rectified rig of the given image size."""
    height, width = size
    cx, cy = width / 2.0, height / 2.0
    p2 = np.array([[focal, 0, cx, 0.06 * focal], [0, focal, cy, 0], [0, 0, 1, 0]])
    p3 = p2.copy()
    p3[0, 3] = p2[0, 3] - focal * BASELINE
    date_dir.mkdir(parents=True, exist_ok=True)
    cam = [
        "calib_time: 09-Jan-2012 13:57:47",
        f"S_rect_02: {width:.6e} {height:.6e}",
        f"R_rect_00: {_row(np.eye(3))}",
        f"P_rect_02: {_row(p2)}",
        f"S_rect_03: {width:.6e} {height:.6e}",
        f"P_rect_03: {_row(p3)}",
    ]
    (date_dir / "calib_cam_to_cam.txt").write_text("\n".join(cam) + "\n")
    velo_to_cam = np.array(
        [[0, -1, 0], [0, 0, -1], [1, 0, 0]]
    )  # x fwd, y left, z up -> x right, y down, z fwd
    velo = ["calib_time: 15-Mar-2012 11:37:16", f"R: {_row(velo_to_cam)}", "T: 0 -0.08 -0.27"]
    (date_dir / "calib_velo_to_cam.txt").write_text("\n".join(velo) + "\n")


def write_frame(drive_dir: Path, index: int, size: tuple[int, int], seed: int) -> None:
    """A textured stereo pair with constant disparity SHIFT and a random LiDAR scan."""
    rng = np.random.default_rng(seed)
    height, width = size
    texture = rng.integers(0, 256, (height, width + SHIFT, 3), dtype=np.uint8)
    texture = cv2.GaussianBlur(texture, (3, 3), 0)
    left, right = texture[:, :width], texture[:, SHIFT:]  # right(x) = left(x + SHIFT): disparity SHIFT
    for cam, image in ((2, left), (3, right)):
        folder = drive_dir / f"image_0{cam}" / "data"
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(
            str(folder / f"{index:010d}.png"), cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
        )
    n = 4000
    points = np.stack(
        [rng.uniform(2, 60, n), rng.uniform(-20, 20, n), rng.uniform(-2, 1, n), rng.uniform(0, 1, n)], axis=1
    ).astype(np.float32)
    folder = drive_dir / "velodyne_points" / "data"
    folder.mkdir(parents=True, exist_ok=True)
    points.tofile(folder / f"{index:010d}.bin")


def make_kitti_tree(
    root: Path, drives: dict[str, int], sizes: dict[str, tuple[int, int]] | None = None
) -> Path:
    """``drives`` maps ``<date>_drive_<NNNN>_sync`` to a frame count; ``sizes`` maps dates to (h, w)."""
    sizes = sizes or {}
    for seed, (drive, count) in enumerate(sorted(drives.items())):
        date = drive[:10]
        size = sizes.get(date, (64, 160))
        if not (root / date / "calib_cam_to_cam.txt").exists():
            write_calibration(root / date, size)
        for index in range(count):
            write_frame(root / date / drive, index, size, seed=1000 * seed + index)
    return root
