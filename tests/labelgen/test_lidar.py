"""Tests of edgedepth.labelgen.lidar: hand-computed projections on a synthetic rig, then one real KITTI frame."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgedepth.labelgen.kitti import Calibration, read_calibration, read_velodyne
from edgedepth.labelgen.lidar import depth_to_png16, png16_to_depth, project_lidar

F, CX, CY, H, W = 100.0, 50.0, 25.0, 50, 100
DRIVE = "2011_09_26_drive_0001_sync"


def _calib(t_z: float = 0.0, baseline: float = 0.0) -> Calibration:
    """LiDAR (x fwd, y left, z up) -> camera (x right, y down, z fwd), shifted by t_z along camera z."""
    velo_to_cam = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, t_z], [0, 0, 0, 1]], dtype=np.float64)
    p2 = np.array([[F, 0, CX, 0], [0, F, CY, 0], [0, 0, 1, 0]], dtype=np.float64)
    p3 = p2.copy()
    p3[0, 3] = -F * baseline
    return Calibration("synthetic", p2, p3, np.eye(3), velo_to_cam, (H, W))


def _hits(depth_map: np.ndarray) -> dict[tuple[int, int], float]:
    rows, cols = np.nonzero(depth_map)
    return {(int(r), int(c)): float(depth_map[r, c]) for r, c in zip(rows, cols, strict=True)}


def test_pixels_and_depths_by_hand() -> None:
    points = np.array(
        [
            [10.0, 0.0, 0.0],  # optical axis: u=50, v=25 (no "-1" shift)
            [10.0, -2.0, 1.0],  # camera (2, -1, 10): u=70, v=15
            [50.0, -0.25, 0.0],  # u=50.5 exactly: pixel j covers [j-0.5, j+0.5) -> column 51
            [100.0, 50.5, 0.0],  # u=-0.5 exactly -> column 0, kept
            [100.0, 50.6, 0.0],  # u=-0.6 -> outside, dropped
            [100.0, -49.4, 10.0],  # u=99.4, v=15 -> column 99, kept
            [100.0, -49.5, 0.0],  # u=99.5 exactly -> outside, dropped
            [100.0, 0.0, -24.4],  # v=49.4 -> row 49, kept
            [100.0, 0.0, -24.5],  # v=49.5 exactly -> outside, dropped
            [100.0, 0.0, 25.6],  # v=-0.6 -> outside, dropped
            [-10.0, -2.0, 0.0],  # behind the camera (would project to u=30), dropped
            [0.05, 0.0, 0.0],  # closer than min_depth, dropped
        ]
    )
    depth_map = project_lidar(points, _calib())
    assert depth_map.shape == (H, W) and depth_map.dtype == np.float32
    expected = {
        (25, 50): 10.0,
        (15, 70): 10.0,
        (25, 51): 50.0,
        (25, 0): 100.0,
        (15, 99): 100.0,
        (49, 50): 100.0,
    }
    assert _hits(depth_map) == pytest.approx(expected)


def test_nearest_point_wins_regardless_of_order() -> None:
    near, far = [10.0, 0.0, 0.0], [20.0, 0.0, 0.0]
    for points in ([near, far], [far, near], [far, near, far]):
        depth_map = project_lidar(np.array(points), _calib())
        assert _hits(depth_map) == pytest.approx({(25, 50): 10.0})


def test_four_columns_and_image_size_override() -> None:
    points = np.array([[10.0, 0.0, 0.0, 0.7], [10.0, 0.0, 1.0, 0.1]], dtype=np.float32)
    depth_map = project_lidar(points, _calib(), image_size=(20, 60))
    assert depth_map.shape == (20, 60)
    assert _hits(depth_map) == pytest.approx({(15, 50): 10.0})  # (25, 50) is now below the image


def test_depth_x_returns_lidar_x_and_drops_negative_x() -> None:
    calib = _calib(t_z=0.5)  # camera z = LiDAR x + 0.5
    points = np.array([[9.5, 0.0, 0.0], [-0.2, -0.1, 0.0]])  # second: camera z=0.3, in front, but x < 0
    assert _hits(project_lidar(points, calib)) == pytest.approx({(25, 50): 10.0, (25, 83): 0.3})
    assert _hits(project_lidar(points, calib, depth="x")) == pytest.approx({(25, 50): 9.5})


@pytest.mark.parametrize("z", [10.0, 25.0])
def test_camera_3_shifts_by_disparity(z: float) -> None:
    calib = _calib(baseline=0.5)
    points = np.array([[z, -1.0, 0.0]])  # camera 2: u = 50 + 100 / z
    left, right = _hits(project_lidar(points, calib, cam=2)), _hits(project_lidar(points, calib, cam=3))
    u2 = round(CX + F / z)
    assert left == pytest.approx({(25, u2): z})
    assert right == pytest.approx({(25, u2 - round(F * 0.5 / z)): z})  # shift -f*B/Z


def test_bad_arguments_raise() -> None:
    calib, points = _calib(), np.zeros((4, 3))
    with pytest.raises(ValueError, match="depth"):
        project_lidar(points, calib, depth="range")
    with pytest.raises(ValueError, match="cam"):
        project_lidar(points, calib, cam=1)
    for shape in [(4,), (4, 2), (4, 5), (2, 4, 3)]:
        with pytest.raises(ValueError, match=re.escape(str(shape))):
            project_lidar(np.zeros(shape), calib)


def test_png16_round_trip() -> None:
    depth = np.array([[0.0, 0.001, 1.0, 12.3456], [79.9999, 255.99, 300.0, -1.0]], dtype=np.float32)
    encoded = depth_to_png16(depth)
    assert encoded.dtype == np.uint16
    assert encoded.tolist() == [[0, 0, 256, 3160], [20480, 65533, 65535, 0]]
    decoded = png16_to_depth(encoded)
    assert decoded.dtype == np.float32
    valid = (depth > 0) & (depth * 256 <= 65535)
    assert np.all(np.abs(decoded[valid] - depth[valid]) <= 1 / 512)
    assert np.all(decoded[depth <= 0] == 0)
    assert depth_to_png16(np.array([np.nan, np.inf])).tolist() == [0, 0]


# --- the real KITTI frame ---------------------------------------------------------------------------


def _agreement(ours: np.ndarray, reference: np.ndarray) -> float:
    """Share of reference pixels with a value of ours within 1 px (3x3) agreeing within 1 %."""
    rows, cols = np.nonzero(reference)
    ref = reference[rows, cols]
    padded = np.pad(ours, 1)
    ok = np.zeros(ref.shape, dtype=bool)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            near = padded[rows + 1 + dr, cols + 1 + dc]
            ok |= (near > 0) & (np.abs(near - ref) <= 0.01 * ref)
    return float(ok.mean())


@pytest.mark.parametrize("cam", [2, 3])
def test_matches_kitti_velodyne_raw(kitti_sample: Path, cam: int) -> None:
    calib = read_calibration(kitti_sample / "2011_09_26")
    points = read_velodyne(kitti_sample / "2011_09_26" / DRIVE / "velodyne_points/data/0000000005.bin")
    png = (
        kitti_sample
        / f"data_depth_annotated/train/{DRIVE}/proj_depth/velodyne_raw/image_0{cam}/0000000005.png"
    )
    raw = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
    assert raw is not None and raw.dtype == np.uint16, png
    reference = png16_to_depth(raw)

    ours = project_lidar(points, calib, cam=cam)
    assert ours.shape == reference.shape
    share = _agreement(ours, reference)
    assert share >= 0.80, f"camera {cam}: only {share:.1%} of velodyne_raw pixels reproduced"

    minus_one = np.zeros_like(ours)  # the eval scripts' "-1": every point one pixel up and left
    minus_one[:-1, :-1] = ours[1:, 1:]
    assert _agreement(minus_one, reference) < share - 0.03
    assert _agreement(project_lidar(points, calib, cam=cam, depth="x"), reference) < 0.5
