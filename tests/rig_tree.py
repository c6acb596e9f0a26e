"""A synthetic rig-layout tree (docs/rig.md): real file formats, made-up content with known answers.

Each frame is a textured stereo pair whose disparity is ``SHIFT`` px everywhere; the right camera's
principal point is ``DOFFS`` px right of the left's, so every pixel's depth is
``FOCAL * BASELINE / (SHIFT + DOFFS)`` = ``DEPTH`` (5 m). LiDAR, when asked for, is either points on
that plane written in the LiDAR frame (``lidar/<frame>.npy``, through the inverse of ``T_CAM_LIDAR``)
or a sparse depth PNG (``lidar_depth/<frame>.png``); ``depth_gt/<frame>.png`` is DEPTH everywhere.
Files are written with plain numpy / OpenCV / json, not with the reader's own helpers.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

FOCAL, BASELINE, SHIFT, DOFFS = 500.0, 0.2, 16, 4.0
DEPTH = FOCAL * BASELINE / (SHIFT + DOFFS)  # 5.0 m
T_CAM_LIDAR = np.array(
    [[0.0, -1.0, 0.0, 0.05], [0.0, 0.0, -1.0, -0.08], [1.0, 0.0, 0.0, -0.2], [0.0, 0.0, 0.0, 1.0]]
)  # LiDAR x forward, y left, z up; 5 cm right of, 8 cm above and 20 cm behind the left camera
DEPTH_RANGE = [0.5, 50.0]
LIDAR_POINTS = 300


def frame_name(index: int) -> str:
    return f"frame_{index:03d}"


def calibration(size: tuple[int, int]) -> dict[str, object]:
    height, width = size
    return {
        "fx": FOCAL,
        "fy": FOCAL,
        "cx": (width - 1) / 2,
        "cy": (height - 1) / 2,
        "baseline_m": BASELINE,
        "doffs_px": DOFFS,
        "depth_range_m": DEPTH_RANGE,
        "T_cam_lidar": T_CAM_LIDAR.tolist(),
        "source": "tests/rig_tree.py (synthetic)",
    }


def camera_points(size: tuple[int, int], seed: int) -> np.ndarray:
    """(N, 3) points on the plane z = DEPTH of the left camera, spread over the image."""
    rng = np.random.default_rng(seed)
    height, width = size
    u = rng.uniform(0, width - 1, LIDAR_POINTS)
    v = rng.uniform(0, height - 1, LIDAR_POINTS)
    return np.stack([(u - (width - 1) / 2) / FOCAL * DEPTH, (v - (height - 1) / 2) / FOCAL * DEPTH,
                     np.full(LIDAR_POINTS, DEPTH)], axis=1)  # fmt: skip


def write_frame(sequence_dir: Path, index: int, size: tuple[int, int], lidar: str | None, seed: int) -> None:
    """The pair, optional LiDAR ("npy" or "png") and the ground truth of one frame."""
    rng = np.random.default_rng(seed)
    height, width = size
    name = frame_name(index)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (height, width + SHIFT, 3), dtype=np.uint8), (3, 3), 0)
    left, right = texture[:, :width], texture[:, SHIFT:]  # right(x) = left(x + SHIFT): disparity SHIFT
    for folder, image in (("left", left), ("right", right)):
        (sequence_dir / folder).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(sequence_dir / folder / f"{name}.png"), np.ascontiguousarray(image[..., ::-1]))
    if lidar == "npy":
        cam = camera_points(size, seed)
        rotation, translation = T_CAM_LIDAR[:3, :3], T_CAM_LIDAR[:3, 3]
        points = np.column_stack([(cam - translation) @ rotation, rng.uniform(0, 1, len(cam))])
        (sequence_dir / "lidar").mkdir(exist_ok=True)
        np.save(sequence_dir / "lidar" / f"{name}.npy", points.astype(np.float32))
    elif lidar == "png":
        sparse = np.zeros(size, np.uint16)
        rows, cols = rng.integers(0, height, 200), rng.integers(0, width, 200)
        sparse[rows, cols] = round(DEPTH * 256)
        (sequence_dir / "lidar_depth").mkdir(exist_ok=True)
        cv2.imwrite(str(sequence_dir / "lidar_depth" / f"{name}.png"), sparse)
    (sequence_dir / "depth_gt").mkdir(exist_ok=True)
    cv2.imwrite(str(sequence_dir / "depth_gt" / f"{name}.png"), np.full(size, round(DEPTH * 256), np.uint16))


def make_rig_tree(
    root: Path,
    sequences: dict[str, int],
    sizes: dict[str, tuple[int, int]] | None = None,
    lidar: dict[str, str | None] | None = None,
) -> Path:
    """``sequences`` maps names to frame counts; ``sizes`` to (h, w) (default 64x160); ``lidar`` to
    "npy" (default), "png" or None."""
    sizes, lidar = sizes or {}, lidar or {}
    for seed, (sequence, count) in enumerate(sorted(sequences.items())):
        size = sizes.get(sequence, (64, 160))
        sequence_dir = root / sequence
        sequence_dir.mkdir(parents=True, exist_ok=True)
        (sequence_dir / "calib.json").write_text(json.dumps(calibration(size), indent=1) + "\n")
        for index in range(count):
            write_frame(sequence_dir, index, size, lidar.get(sequence, "npy"), seed=1000 * seed + index)
    return root
