"""A rig frame's array files: depth PNGs (uint16, metres x 256) and LiDAR points (``.npy``).

The files of ``<root>/<sequence>/lidar_depth/``, ``depth_gt/`` (depth PNGs) and ``lidar/`` (points)
of the rig layout (``edgedepth.labelgen.rig``, docs/rig.md), read with one-line errors naming the
file, and the depth PNG's bytes as the importers write them.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

DEPTH_PNG_SCALE = 256.0  # depth PNGs store round(metres * 256), 0 = no value
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def read_depth_png(path: str | Path) -> np.ndarray:
    """A depth PNG (uint16, metres x 256, 0 = no value) as (H, W) float32 metres."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: depth PNG not found")
    with open(path, "rb") as handle:
        magic = handle.read(len(_PNG_MAGIC))
    if magic != _PNG_MAGIC:
        raise ValueError(f"{path}: not a PNG file (depth maps are 16-bit PNGs, metres x 256)")
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise ValueError(f"{path}: not a readable PNG (corrupt or truncated?)")
    if array.dtype != np.uint16 or array.ndim != 2:
        channels = 1 if array.ndim == 2 else array.shape[2]
        raise ValueError(
            f"{path}: not a 16-bit single-channel depth PNG (it is {array.dtype}, {channels} channel(s))"
        )
    return (array.astype(np.float32) / np.float32(DEPTH_PNG_SCALE)).astype(np.float32)


def encode_depth_png(depth: np.ndarray) -> bytes:
    """(H, W) metres as a depth PNG's bytes: round(depth * 256) clipped to uint16; <= 0, NaN, inf -> 0."""
    depth = np.asarray(depth, dtype=np.float64)
    scaled = np.where(np.isfinite(depth) & (depth > 0), depth * DEPTH_PNG_SCALE, 0.0)
    array = np.clip(np.round(scaled), 0, np.iinfo(np.uint16).max).astype(np.uint16)
    ok, data = cv2.imencode(".png", array)
    if not ok:
        raise ValueError("could not encode a depth PNG")
    return data.tobytes()


def read_lidar_points(path: str | Path) -> np.ndarray:
    """LiDAR points of a ``.npy`` file as (N, C) float32, C >= 3 (x, y, z metres, extra columns kept);
    rows with a non-finite x, y or z are dropped. Pickled content is never loaded."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: LiDAR points file not found")
    try:
        points = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"{path}: not a readable .npy array ({reason})") from None
    if not isinstance(points, np.ndarray):
        raise ValueError(f"{path}: not a .npy array (an .npz archive?)")
    if points.ndim != 2 or points.shape[1] < 3:
        raise ValueError(f"{path}: expected N x 3+ points (x, y, z, ...), got shape {points.shape}")
    if not (np.issubdtype(points.dtype, np.floating) or np.issubdtype(points.dtype, np.integer)):
        raise ValueError(f"{path}: points must be numbers, got dtype {points.dtype}")
    if len(points) == 0:
        raise ValueError(f"{path}: empty point cloud (0 points)")
    points = points.astype(np.float32, copy=False)
    finite = np.isfinite(points[:, :3]).all(axis=1)
    if not finite.any():
        raise ValueError(f"{path}: no finite points ({len(points)} points, all nan or inf)")
    return points if finite.all() else points[finite]


__all__ = ["DEPTH_PNG_SCALE", "encode_depth_png", "read_depth_png", "read_lidar_points"]
