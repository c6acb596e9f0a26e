"""Evaluation ground truth for KITTI frames: raw-LiDAR maps (public protocol) and KITTI's annotated maps.

``lidar_groundtruth`` builds the depth map the KITTI Eigen-split literature scores against (what
monodepth2's ``export_gt_depth.py`` stores for ``--split eigen``); it deliberately keeps that
protocol's conventions, which differ from our training labels (``edgedepth.labelgen.lidar.project_lidar``):
the stored depth is the LiDAR forward x (not camera z), pixels are shifted by -1 "for MATLAB parity",
and duplicates are resolved with the reference's index quirk. ``annotated_groundtruth_path`` and
``read_annotated`` find and read KITTI's improved ground truth (``data_depth_annotated``), used by
the ``eigen_benchmark`` split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgedepth.labelgen import Calibration, Frame, read_depth_png

ANNOTATED_SUBSETS = ("train", "val")


def lidar_groundtruth(points: np.ndarray, calib: Calibration, cam: int = 2) -> np.ndarray:
    """The public Eigen-split ground truth of one Velodyne scan: (H, W) float32 metres, 0 = no value.

    Same map as monodepth2's ``generate_depth_map(calib_dir, velo, cam=2, vel_depth=True)``:

    1. keep points with LiDAR x >= 0, set the homogeneous 4th column to 1;
    2. project with P_rect_0{cam} @ R_rect_00 (4x4) @ velo_to_cam and divide u, v by the camera z
       (no other z test: points just in front of the LiDAR but behind the camera are kept if they
       land in the image, as in the reference);
    3. the stored depth is the LiDAR x, not the camera z;
    4. u, v are rounded with ``np.round`` (half to even) and 1 is subtracted; points with
       0 <= u < W and 0 <= v < H survive, (H, W) being S_rect_02 (``calib.image_size``);
    5. every surviving point is written to its pixel in order (the last write wins);
    6. duplicates are then resolved to the minimum depth -- over the reference's linear index
       ``row * (W - 1) + col - 1`` (its ``sub2ind`` quirk, nianticlabs/monodepth2#506), so the last
       column of row r and the first column of row r + 1 count as one pixel. For every index hit more
       than once, the pixel of the first point with that index gets the minimum depth over all its
       points; the other pixel of such a pair keeps its last write. Away from the first and last
       image column this is the ordinary nearest-point rule; those two columns lie outside the Garg
       and Eigen crops, so cropped metrics do not depend on the quirk;
    7. negative depths are set to 0 (none survive step 1).

    Projection runs in float64 on the float32 points (as the reference); only a point whose u or v
    lands within rounding error of a .5 tie could round differently under another summation order.
    """
    if cam not in (2, 3):
        raise ValueError(f"cam must be 2 or 3, got {cam!r}")
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 4:
        raise ValueError(f"points must have shape (N, 4) (x, y, z, reflectance), got {points.shape}")
    height, width = calib.image_size

    forward = points[:, 0] >= 0  # NaN fails this test too
    homogeneous = points[forward].astype(np.float64)
    homogeneous[:, 3] = 1.0
    projected = homogeneous @ calib.projection(cam).T
    with np.errstate(divide="ignore", invalid="ignore"):
        col = np.round(projected[:, 0] / projected[:, 2]) - 1
        row = np.round(projected[:, 1] / projected[:, 2]) - 1
    inside = (col >= 0) & (row >= 0) & (col < width) & (row < height)
    col, row = col[inside].astype(np.intp), row[inside].astype(np.intp)
    depth = points[forward, 0][inside].astype(np.float32)

    out = np.zeros((height, width), dtype=np.float32)
    if depth.size == 0:
        return out

    # Last write wins: the last point of each pixel (first occurrence in the reversed order).
    pixel = row * width + col
    _, first_reversed = np.unique(pixel[::-1], return_index=True)
    last = depth.size - 1 - first_reversed
    out[row[last], col[last]] = depth[last]

    # Minimum over the reference's (quirky) linear index, written at the group's first point.
    quirk = row * (width - 1) + col - 1
    _, first, inverse, counts = np.unique(quirk, return_index=True, return_inverse=True, return_counts=True)
    group_min = np.full(counts.size, np.inf, dtype=np.float32)
    np.minimum.at(group_min, inverse, depth)
    repeated = counts > 1
    out[row[first[repeated]], col[first[repeated]]] = group_min[repeated]

    out[out < 0] = 0.0
    return out


def annotated_groundtruth_path(
    root: str | Path, frame: Frame, annotated_root: str | Path | None = None, cam: int = 2
) -> Path | None:
    """KITTI's annotated depth PNG of ``frame`` (camera 2 unless ``cam=3``), or None when there is none.

    Looked for, in this order (``<gt>`` = ``<drive>/proj_depth/groundtruth/image_0{cam}/<frame:010d>.png``)::

        <annotated_root>/{train,val}/<gt>      the data_depth_annotated archive as unpacked
        <annotated_root>/<gt>
        <root>/data_depth_annotated/{train,val}/<gt>
        <root>/<date>/<gt>                     monodepth2's layout (unpacked into the raw tree)
    """
    tail = Path(frame.drive) / "proj_depth" / "groundtruth" / f"image_0{cam}" / f"{frame.index:010d}.png"
    candidates: list[Path] = []
    if annotated_root is not None:
        annotated_root = Path(annotated_root)
        candidates += [annotated_root / subset / tail for subset in ANNOTATED_SUBSETS]
        candidates.append(annotated_root / tail)
    root = Path(root)
    candidates += [root / "data_depth_annotated" / subset / tail for subset in ANNOTATED_SUBSETS]
    candidates.append(root / frame.date / tail)
    for path in candidates:
        if path.is_file():
            return path
    return None


def read_annotated(path: str | Path) -> np.ndarray:
    """A KITTI depth PNG (uint16, metres * 256, 0 = no value) as (H, W) float32 metres: the same
    format, and the same checks, as a rig's depth PNG (``edgedepth.labelgen.read_depth_png``)."""
    return read_depth_png(path)


__all__ = ["ANNOTATED_SUBSETS", "annotated_groundtruth_path", "lidar_groundtruth", "read_annotated"]
