"""A simulated spinning LiDAR that samples a dense depth map: for sets that have ground truth but no scanner.

The scanner sits at the camera (offset by the extrinsic). It has ``beams`` beams at evenly spaced
elevations across the image's vertical field of view and gives one return every ``azimuth_step_deg``
degrees of azimuth. Each ray is snapped to the pixel it hits; where that pixel has a depth, the
point is that depth along the pixel's ray (no noise added), written in the LiDAR frame (x forward,
y left, z up with the default axes) through the inverse of ``t_cam_lidar``. Reflectance is the
pixel's grey level in [0, 1]. With 64 beams and 0.2 degrees this is KITTI-like: about 3 % of the
pixels of a 741-px-wide image get a point.
"""

from __future__ import annotations

import numpy as np

BEAMS = 64
AZIMUTH_STEP_DEG = 0.2
LIDAR_AXES = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
"""Rotation taking LiDAR axes (x forward, y left, z up) to camera axes (x right, y down, z forward)."""
LIDAR_OFFSET_M = np.array([0.0, -0.08, -0.06])
"""Default scanner position in the camera frame: 8 cm above and 6 cm behind the camera."""


def scanner_transform(
    rotation: np.ndarray = LIDAR_AXES, translation: np.ndarray = LIDAR_OFFSET_M
) -> np.ndarray:
    """4x4 ``T_cam_lidar`` (LiDAR -> camera, metres): camera = rotation @ lidar + translation."""
    transform = np.eye(4)
    transform[:3, :3] = rotation
    transform[:3, 3] = translation
    return transform


def simulate_scan(
    depth: np.ndarray,
    grey: np.ndarray,
    fx: float,
    cx: float,
    cy: float,
    t_cam_lidar: np.ndarray | None = None,
    beams: int = BEAMS,
    azimuth_step_deg: float = AZIMUTH_STEP_DEG,
) -> np.ndarray:
    """(N, 4) float32 LiDAR points (x, y, z metres in the LiDAR frame; reflectance in [0, 1]).

    ``depth`` (H, W) is camera z in metres (0 = none), ``grey`` (H, W) uint8 the image's grey level,
    ``fx`` the focal length (pixels, used for both axes), ``cx``, ``cy`` the principal point
    (pixels), ``t_cam_lidar`` the 4x4 LiDAR -> camera transform (``scanner_transform()`` if None).
    """
    if beams < 1 or not azimuth_step_deg > 0:
        raise ValueError(f"need beams >= 1 and a positive azimuth step, got {beams} and {azimuth_step_deg}")
    transform = scanner_transform() if t_cam_lidar is None else np.asarray(t_cam_lidar, dtype=np.float64)
    rotation, translation = transform[:3, :3], transform[:3, 3]
    height, width = depth.shape
    top, bottom = np.arctan((cy - 0.5) / fx), np.arctan((height - 0.5 - cy) / fx)
    left, right = np.arctan((cx - 0.5) / fx), np.arctan((width - 0.5 - cx) / fx)
    elevation = np.linspace(top, -bottom, beams)  # up is positive
    azimuth = np.deg2rad(np.arange(np.rad2deg(-right), np.rad2deg(left), azimuth_step_deg))  # left positive
    el, az = np.meshgrid(elevation, azimuth, indexing="ij")
    x_cam = -np.tan(az)  # camera frame: x right, y down, z forward, at z = 1
    y_cam = -np.tan(el) * np.sqrt(1 + x_cam**2)
    u = np.rint(cx + fx * x_cam).astype(int).ravel()
    v = np.rint(cy + fx * y_cam).astype(int).ravel()
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    u, v = u[inside], v[inside]
    z = depth[v, u]
    hit = z > 0
    u, v, z = u[hit], v[hit], z[hit]
    cam = np.stack([(u - cx) / fx * z, (v - cy) / fx * z, z], axis=1)
    lidar = (cam - translation) @ rotation  # inverse of cam = R @ lidar + t (R orthonormal)
    reflectance = grey[v, u].astype(np.float64) / 255.0
    return np.column_stack([lidar, reflectance]).astype(np.float32)


__all__ = ["AZIMUTH_STEP_DEG", "BEAMS", "LIDAR_AXES", "LIDAR_OFFSET_M", "scanner_transform", "simulate_scan"]
