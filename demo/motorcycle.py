"""The embedded default data: Middlebury 2014 "Motorcycle" (shipped by scikit-image) as a rig tree.

``skimage.data.stereo_motorcycle()`` gives a rectified stereo pair (500 x 741 px) and its
ground-truth disparity; its docstring gives the calibration at that size (focal 994.978 px,
principal point (311.193, 254.877) px, principal-point offset of the right camera 31.086 px,
baseline 193.001 mm). ``make_motorcycle`` writes it as a one-sequence, one-frame rig tree
(docs/rig.md)::

    ROOT/motorcycle/calib.json          fx = fy, cx, cy, baseline_m, doffs_px, depth_range_m, T_cam_lidar
    ROOT/motorcycle/left/0000.png       the left image as shipped
    ROOT/motorcycle/right/0000.png      the right image as shipped
    ROOT/motorcycle/depth_gt/0000.png   depth f B / (d + doffs), metres x 256, 0 = none
    ROOT/motorcycle/lidar/0000.npy      a simulated scan of that depth (edgedepth.labelgen.simulated_lidar)

- **Disparity offset.** Middlebury's cameras have different principal points, so depth is
  ``f * B / (d + doffs)``; calib.json's ``doffs_px`` says so and the stereo teachers use it.
- **Ground truth**: ``f * B / (d + doffs)`` wherever the disparity is finite (NaN or inf in
  scikit-image = none).
- **"LiDAR"**: the simulated spinning scanner of ``edgedepth.labelgen.simulated_lidar`` with its defaults
  (64 beams across the image's vertical field of view, one return every 0.2 degrees of azimuth,
  no noise), 8 cm above and 6 cm behind the left camera (``T_cam_lidar``): about 12,000 points,
  some 3 % of the pixels, KITTI-like. Reflectance is the pixel's grey level in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edgedepth.common import write_bytes_atomic
from edgedepth.labelgen import (
    AZIMUTH_STEP_DEG,
    BEAMS,
    RigWriter,
    calibration_json,
    scanner_transform,
    simulate_scan,
)

FOCAL_PX, CX_PX, CY_PX = 994.978, 311.193, 254.877
DOFFS_PX = 31.086  # right principal point minus left (x)
BASELINE_M = 0.193001
DEPTH_RANGE_M = (1.0, 8.0)  # the scene is 2.1-5.0 m deep; the demo's bias table and student span this
SEQUENCE = "motorcycle"
FRAME = "0000"
NOTES = {
    "source": (
        "Middlebury 2014 'Motorcycle' (Scharstein et al., GCPR 2014) as shipped by scikit-image "
        "(skimage.data.stereo_motorcycle), down-sampled by 4 to 741x500; left and right images as shipped; "
        "calibration from its docstring (focal 994.978 px, principal point (311.193, 254.877) px, "
        "principal point dx 31.086 px = doffs_px, baseline 193.001 mm)"
    ),
    "depth_note": "depth_gt = fx * baseline_m / (disparity + doffs_px) where the disparity is finite; "
    "an indoor scene 2.1-5.0 m deep",
}


@dataclass(frozen=True)
class MotorcycleData:
    """Where the tree is, and what it holds (for the report)."""

    root: Path
    frame_id: str
    image_size: tuple[int, int]  # (height, width)
    gt_pixels: int
    lidar_points: int
    gt_range_m: tuple[float, float]  # of the ground truth
    depth_range_m: tuple[float, float] = DEPTH_RANGE_M  # as declared in calib.json


def load_motorcycle() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(left RGB, right RGB, ground-truth depth in metres with 0 = none), all (500, 741), as shipped."""
    from skimage.data import stereo_motorcycle

    left, right, disparity = stereo_motorcycle()
    known = np.isfinite(disparity)
    depth = np.zeros(disparity.shape, np.float32)
    depth[known] = FOCAL_PX * BASELINE_M / (disparity[known] + DOFFS_PX)
    return left, right, depth


def _png(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("could not encode a PNG")
    return data.tobytes()


def make_motorcycle(root: str | Path) -> MotorcycleData:
    """Write the rig tree under ``root`` (every file replaced atomically; the same bytes each time)."""
    writer = RigWriter(root)
    left, right, depth = load_motorcycle()
    t_cam_lidar = scanner_transform()
    grey = cv2.cvtColor(left, cv2.COLOR_RGB2GRAY)
    points = simulate_scan(depth, grey, FOCAL_PX, CX_PX, CY_PX, t_cam_lidar, BEAMS, AZIMUTH_STEP_DEG)
    for kind, image in (("left", left), ("right", right)):
        write_bytes_atomic(Path(root) / SEQUENCE / kind / f"{FRAME}.png", _png(image))
    writer.depth(SEQUENCE, "depth_gt", FRAME, depth)
    writer.points(SEQUENCE, FRAME, points)
    notes = {
        **NOTES,
        "lidar_simulation": (
            f"simulated from depth_gt (edgedepth.labelgen.simulated_lidar): {BEAMS} beams over the vertical field of "
            f"view, one return every {AZIMUTH_STEP_DEG} deg of azimuth, no noise; scanner 8 cm above and "
            f"6 cm behind the left camera (T_cam_lidar); {len(points)} points"
        ),
    }
    text = calibration_json(FOCAL_PX, FOCAL_PX, CX_PX, CY_PX, BASELINE_M, DOFFS_PX, DEPTH_RANGE_M,
                            t_cam_lidar, notes)  # fmt: skip
    writer.calibration(SEQUENCE, text)
    known = depth[depth > 0]
    return MotorcycleData(
        Path(root), f"{SEQUENCE}/{FRAME}", depth.shape, int(known.size), len(points),
        (float(known.min()), float(known.max())),
    )  # fmt: skip


__all__ = [
    "BASELINE_M",
    "DEPTH_RANGE_M",
    "DOFFS_PX",
    "FOCAL_PX",
    "MotorcycleData",
    "load_motorcycle",
    "make_motorcycle",
]
