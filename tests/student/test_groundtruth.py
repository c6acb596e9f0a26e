"""Tests for edgedepth.student.evaluate.groundtruth: the public raw-LiDAR GT protocol and KITTI's annotated maps."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edgedepth.labelgen.kitti import Calibration, Frame, read_calibration, read_velodyne
from edgedepth.student.evaluate.groundtruth import (
    annotated_groundtruth_path,
    lidar_groundtruth,
    read_annotated,
)

DATE, DRIVE, INDEX = "2011_09_26", "2011_09_26_drive_0001_sync", 5
FOCAL = 8.0
HEIGHT, WIDTH = 8, 12


def _reference(points: np.ndarray, calib: Calibration, cam: int = 2) -> np.ndarray:
    """Straightforward per-point re-statement of the protocol (see lidar_groundtruth's docstring)."""
    height, width = calib.image_size
    p_rect = (calib.p_rect_02 if cam == 2 else calib.p_rect_03).tolist()
    r_rect = [[*row, 0.0] for row in calib.r_rect_00.tolist()] + [[0.0, 0.0, 0.0, 1.0]]
    velo = calib.velo_to_cam.tolist()

    def matmul(a, b):
        return [
            [sum(a[i][k] * b[k][j] for k in range(len(b))) for j in range(len(b[0]))] for i in range(len(a))
        ]

    proj = matmul(matmul(p_rect, r_rect), velo)
    kept = []  # (row, col, depth) in scan order
    for x, y, z, _ in points.tolist():
        if not x >= 0:
            continue
        hom = (x, y, z, 1.0)
        u, v, w = (sum(proj[i][k] * hom[k] for k in range(4)) for i in range(3))
        if w == 0:
            continue  # u / 0 is inf or nan: never inside the image
        col, row = round(u / w) - 1, round(v / w) - 1  # Python's round: half to even, like np.round
        if 0 <= col < width and 0 <= row < height:
            kept.append((row, col, x))
    out = np.zeros((height, width), dtype=np.float32)
    for row, col, depth in kept:
        out[row, col] = depth
    groups: dict[int, list[tuple[int, int, float]]] = {}
    for row, col, depth in kept:
        groups.setdefault(row * (width - 1) + col - 1, []).append((row, col, depth))
    for hits in groups.values():
        if len(hits) > 1:
            row, col, _ = hits[0]
            out[row, col] = min(depth for _, _, depth in hits)
    out[out < 0] = 0
    return out


def _synthetic_calibration() -> Calibration:
    """Camera looking along LiDAR +x: cam x = -y, cam y = -z, cam z = x; u = 8 * (-y / x), v = 8 * (-z / x)."""
    p_rect = np.array([[FOCAL, 0, 0, 0], [0, FOCAL, 0, 0], [0, 0, 1, 0]], dtype=np.float64)
    p_rect_03 = p_rect.copy()
    p_rect_03[0, 3] = -FOCAL * 0.5
    velo_to_cam = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
    return Calibration("synthetic", p_rect, p_rect_03, np.eye(3), velo_to_cam, (HEIGHT, WIDTH))


def _point_at(u: float, v: float, depth: float) -> list[float]:
    """A LiDAR point projecting to (u, v) at LiDAR x = depth (exact in binary for power-of-2 depths)."""
    return [depth, -u * depth / FOCAL, -v * depth / FOCAL, 0.5]


def test_hand_built_cases():
    calib = _synthetic_calibration()
    points = np.array(
        [
            _point_at(3.0, 2.0, 8.0),  # pixel (row 1, col 2): rounded, minus 1
            _point_at(3.0, 2.0, 4.0),  # same pixel, nearer: the minimum wins
            _point_at(3.0, 2.0, 16.0),  # same pixel, farther, written last
            _point_at(
                2.5, 5.0, 2.0
            ),  # u = 2.5 rounds half to even -> 2 -> col 1 (floor(u + .5) would give 2)
            _point_at(3.5, 5.0, 2.0),  # u = 3.5 -> 4 -> col 3
            _point_at(float(WIDTH), 4.0, 8.0),  # last column (11) of row 3 ...
            _point_at(1.0, 5.0, 4.0),  # ... and first column of row 4 share the quirky index
            _point_at(5.0, 5.0, -2.0),  # behind the LiDAR (x < 0), although it projects inside
            _point_at(0.0, 3.0, 2.0),  # u = 0 -> col -1: outside
            _point_at(5.0, float(HEIGHT + 1), 2.0),  # row 8: outside
        ],
        dtype=np.float32,
    )
    out = lidar_groundtruth(points, calib)
    assert out.dtype == np.float32 and out.shape == (HEIGHT, WIDTH)
    expected = np.zeros((HEIGHT, WIDTH), dtype=np.float32)
    expected[1, 2] = 4.0
    expected[4, 1] = 2.0
    expected[4, 3] = 2.0
    # the group of index 3 * 11 + 11 - 1 = 4 * 11 + 0 - 1 = 43: its first point's pixel (3, 11) gets the
    # minimum 4 of the pair; (4, 0) keeps its own last write 4 (here the same value)
    expected[3, 11] = 4.0
    expected[4, 0] = 4.0
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(out, _reference(points, calib))


def test_index_quirk_takes_the_pair_minimum_at_the_first_point_only():
    calib = _synthetic_calibration()
    last_col = _point_at(float(WIDTH), 4.0, 16.0)  # (3, 11), far
    first_col = _point_at(1.0, 5.0, 4.0)  # (4, 0), near
    out = lidar_groundtruth(np.array([last_col, first_col], dtype=np.float32), calib)
    assert (out[3, 11], out[4, 0]) == (4.0, 4.0)  # the far border pixel took its neighbour's depth
    out = lidar_groundtruth(np.array([first_col, last_col], dtype=np.float32), calib)
    assert (out[3, 11], out[4, 0]) == (16.0, 4.0)  # first point is (4, 0): min written there only
    assert not out[:3].any() and not out[5:].any()


@pytest.mark.parametrize("cam", [2, 3])
def test_random_points_match_the_reference(cam):
    calib = _synthetic_calibration()
    rng = np.random.default_rng(cam)
    depth = rng.uniform(-3.0, 30.0, size=600)
    u = rng.uniform(-3.0, WIDTH + 3.0, size=600)
    v = rng.uniform(-3.0, HEIGHT + 3.0, size=600)
    points = np.stack([depth, -u * depth / FOCAL, -v * depth / FOCAL, rng.uniform(size=600)], axis=1)
    points = np.concatenate([points, points[:50]]).astype(np.float32)  # exact duplicates too
    points[0] = _point_at(2.5, 3.0, 4.0)  # an exact .5
    points[1] = [0.0, 0.0, 0.0, 0.0]  # x = 0 is kept, then projects to 0 / 0: dropped
    out = lidar_groundtruth(points, calib, cam=cam)
    expected = _reference(points, calib, cam=cam)
    np.testing.assert_array_equal(out, expected)
    assert (out > 0).sum() > 40  # most of the 96 pixels are hit, many several times


def test_empty_and_bad_input():
    calib = _synthetic_calibration()
    assert not lidar_groundtruth(np.zeros((0, 4), dtype=np.float32), calib).any()
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        lidar_groundtruth(np.zeros((5, 3), dtype=np.float32), calib)
    with pytest.raises(ValueError, match="cam must be 2 or 3"):
        lidar_groundtruth(np.zeros((5, 4), dtype=np.float32), calib, cam=1)


# --- the real KITTI frame --------------------------------------------------------------------------------


def _real(kitti_sample: Path) -> tuple[np.ndarray, Calibration]:
    frame = Frame(DATE, DRIVE, INDEX)
    return read_velodyne(frame.velodyne_path(kitti_sample)), read_calibration(kitti_sample / DATE)


def test_real_scan_matches_the_reference(kitti_sample):
    points, calib = _real(kitti_sample)
    out = lidar_groundtruth(points, calib)
    assert out.shape == (375, 1242)
    np.testing.assert_array_equal(out, _reference(points, calib))
    assert 15_000 < (out > 0).sum() < 25_000


def _agreement(ours: np.ndarray, kitti: np.ndarray, shift: int, rel: float = 0.05) -> float:
    """Share of our valid pixels with a KITTI pixel within 1 px of (row + shift, col + shift), depth within rel."""
    rows, cols = np.nonzero(ours)
    height, width = kitti.shape
    found = np.zeros(rows.size, dtype=bool)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            r, c = rows + shift + dr, cols + shift + dc
            inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
            value = np.zeros(rows.size, dtype=np.float32)
            value[inside] = kitti[r[inside], c[inside]]
            found |= (value > 0) & (np.abs(value - ours[rows, cols]) <= rel * value)
    return float(found.mean())


def test_real_scan_agrees_with_kittis_velodyne_raw(kitti_sample):
    points, calib = _real(kitti_sample)
    ours = lidar_groundtruth(points, calib)
    raw_png = (
        kitti_sample / "data_depth_annotated" / "train" / DRIVE / "proj_depth" / "velodyne_raw" / "image_02"
    ) / f"{INDEX:010d}.png"
    kitti = read_annotated(raw_png)
    # Our pixel (r, c) is KITTI's (r + 1, c + 1): the protocol subtracts 1 after rounding. Depths differ
    # in kind (LiDAR x here, camera z there: about 0.27 m apart), hence the 5 % depth tolerance.
    aligned, unshifted = _agreement(ours, kitti, shift=1), _agreement(ours, kitti, shift=0)
    print(
        f"share of GT pixels matching velodyne_raw within 1 px / 5 %: {aligned:.4f} ({unshifted:.4f} unshifted)"
    )
    assert aligned > 0.5
    assert aligned > unshifted


# --- annotated maps --------------------------------------------------------------------------------------


def test_annotated_path_and_reader_on_the_real_frame(kitti_sample):
    frame = Frame(DATE, DRIVE, INDEX)
    path = annotated_groundtruth_path(kitti_sample, frame)
    assert (
        path
        == (
            kitti_sample
            / "data_depth_annotated"
            / "train"
            / DRIVE
            / "proj_depth"
            / "groundtruth"
            / "image_02"
        )
        / "0000000005.png"
    )
    assert annotated_groundtruth_path(kitti_sample, frame, cam=3).parent.name == "image_03"
    depth = read_annotated(path)
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert depth.dtype == np.float32 and depth.shape == (375, 1242)
    np.testing.assert_array_equal(depth, raw.astype(np.float32) / 256)
    assert annotated_groundtruth_path(kitti_sample, Frame(DATE, DRIVE, 6)) is None


def _write_png16(path: Path, value: int = 512) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((3, 4), value, dtype=np.uint16))
    return path


@pytest.mark.parametrize(
    "layout",
    [
        "annotated/train/{drive}",
        "annotated/val/{drive}",
        "annotated/{drive}",
        "raw/data_depth_annotated/val/{drive}",
        "raw/{date}/{drive}",
    ],
)
def test_annotated_path_layouts(tmp_path, layout):
    frame = Frame("2011_09_28", "2011_09_28_drive_0002_sync", 7)
    folder = tmp_path / layout.format(drive=frame.drive, date=frame.date)
    png = _write_png16(folder / "proj_depth" / "groundtruth" / "image_02" / "0000000007.png")
    (tmp_path / "raw").mkdir(exist_ok=True)
    assert annotated_groundtruth_path(tmp_path / "raw", frame, tmp_path / "annotated") == png
    if not layout.startswith("annotated"):
        assert annotated_groundtruth_path(tmp_path / "raw", frame) == png
    assert annotated_groundtruth_path(tmp_path / "raw", Frame(frame.date, frame.drive, 8), tmp_path) is None
    assert read_annotated(png)[0, 0] == 2.0


def test_read_annotated_refuses_other_files(tmp_path):
    eight_bit = tmp_path / "eight.png"
    cv2.imwrite(str(eight_bit), np.zeros((3, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"eight\.png: not a 16-bit single-channel depth PNG"):
        read_annotated(eight_bit)
    colour = tmp_path / "colour.png"
    cv2.imwrite(str(colour), np.zeros((3, 4, 3), dtype=np.uint16))
    with pytest.raises(ValueError, match="3 channel"):
        read_annotated(colour)
    text = tmp_path / "fake.png"
    text.write_text("hello")
    with pytest.raises(ValueError, match=r"fake\.png: not a PNG file"):
        read_annotated(text)
    tiff = tmp_path / "depth.tif"
    cv2.imwrite(str(tiff), np.zeros((3, 4), dtype=np.uint16))
    with pytest.raises(ValueError, match="not a PNG file"):
        read_annotated(tiff)
    with pytest.raises(FileNotFoundError, match="missing.png: depth PNG not found"):
        read_annotated(tmp_path / "missing.png")
