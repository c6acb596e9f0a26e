"""The SGBM stereo teacher: exact on synthetic shifts, accurate on Middlebury and on a real KITTI frame."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from edgedepth.labelgen.teachers.sgbm import SgbmConfig, sgbm_disparity
from edgedepth.labelgen.teachers.stereo import disparity_to_depth

DRIVE = "2011_09_26/2011_09_26_drive_0001_sync"
GT_DEPTH = "data_depth_annotated/train/2011_09_26_drive_0001_sync/proj_depth/groundtruth/image_02"


def _shifted_pair(d: int, h: int = 120, w: int = 200) -> tuple[np.ndarray, np.ndarray]:
    texture = np.random.default_rng(0).integers(0, 256, (h, w + d, 3), dtype=np.uint8)
    texture = cv2.GaussianBlur(texture, (0, 0), 1.0)
    return texture[:, :w].copy(), texture[:, d : w + d].copy()  # right(x) = left(x + d)


def test_constant_shift_is_recovered_exactly():
    d = 12
    left, right = _shifted_pair(d)
    disp, valid = sgbm_disparity(left, right, SgbmConfig(num_disparities=32))
    assert disp.dtype == np.float32 and valid.dtype == bool and disp.shape == valid.shape == (120, 200)
    interior = (slice(8, -8), slice(d + 8, -8))
    assert np.mean(np.abs(disp[interior] - d) <= 0.25) >= 0.95
    assert valid[interior].mean() >= 0.95
    # Left pixels x < d have their match outside the right image.
    assert valid[:, :d].mean() <= 0.05
    assert np.all(disp[~valid] == 0)


def test_lr_check_rule_on_hand_made_disparities(monkeypatch):
    """Left x is kept iff 0 <= x - round(dL) and the right pixel there is matched within lr_check px."""
    d_left = np.array([[1.0, 2.0, 2.0, 3.6, 3.0, 2.6, 0.6, -1.0, 2.0]], np.float32)
    d_right = np.array([[3.0, 2.5, 0.0, 2.0, 4.5, 0.0, 2.2, 2.0, 1.0]], np.float32)
    rng = np.random.default_rng(1)
    left, right = (rng.integers(0, 256, (1, 9, 3), dtype=np.uint8) for _ in range(2))

    def fake_match(matcher, a, b, pad):
        if np.array_equal(a, left) and np.array_equal(b, right):
            return d_left.copy()
        assert np.array_equal(a, right[:, ::-1]) and np.array_equal(b, left[:, ::-1])
        return d_right[:, ::-1].copy()  # the mirrored pair's disparity is the mirrored right view's

    monkeypatch.setattr("edgedepth.labelgen.teachers.sgbm._match", fake_match)
    disp, valid = sgbm_disparity(left, right, SgbmConfig(num_disparities=16))
    # x=0,1,3: match left of the image; x=5: |2.6-0| > 1; x=6: right pixel unmatched; x=7: no match.
    assert valid.tolist() == [[False, False, True, False, True, False, False, False, True]]
    np.testing.assert_array_equal(disp, [[0, 0, 2, 0, 3, 0, 0, 0, 2]])
    _, unchecked = sgbm_disparity(left, right, SgbmConfig(num_disparities=16, lr_check=None))
    assert unchecked.tolist() == [[False, False, True, False, True, True, True, False, True]]


def test_middlebury_motorcycle_and_the_lr_check_removes_mostly_wrong_pixels():
    left, right, gt = data.stereo_motorcycle()  # 500x741; gt disparity 7..60 px, inf where unknown
    known = np.isfinite(gt) & (gt > 0)
    checked, kept = sgbm_disparity(left, right, SgbmConfig(num_disparities=64))
    plain, matched = sgbm_disparity(left, right, SgbmConfig(num_disparities=64, lr_check=None))

    def share_within_2px(disp: np.ndarray, mask: np.ndarray) -> float:
        return float(np.mean(np.abs(disp[mask] - gt[mask]) <= 2.0))

    # Measured: 0.952 with the check (89% of known pixels covered), 0.940 without (92%).
    checked_share = share_within_2px(checked, kept & known)
    assert checked_share >= 0.90
    assert checked_share >= share_within_2px(plain, matched & known) + 0.005
    assert (kept & known).sum() / known.sum() >= 0.80
    # The check only removes pixels; those it removes are right 55% of the time, against 95% kept.
    assert not np.any(kept & ~matched) and np.array_equal(plain[kept], checked[kept])
    assert share_within_2px(plain, matched & ~kept & known) <= 0.75


def _rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, f"cannot read {path}"
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _focal_and_baseline(calib: Path) -> tuple[float, float]:
    rows = dict(line.split(":", 1) for line in calib.read_text().splitlines() if ":" in line)
    p2 = np.array(rows["P_rect_02"].split(), dtype=float).reshape(3, 4)
    p3 = np.array(rows["P_rect_03"].split(), dtype=float).reshape(3, 4)
    return p2[0, 0], (p2[0, 3] - p3[0, 3]) / p2[0, 0]


def test_real_kitti_frame_matches_annotated_depth(kitti_sample):
    root = kitti_sample
    left = _rgb(root / DRIVE / "image_02/data/0000000005.png")
    right = _rgb(root / DRIVE / "image_03/data/0000000005.png")
    focal, baseline = _focal_and_baseline(root / "2011_09_26/calib_cam_to_cam.txt")
    assert focal == pytest.approx(721.5377) and baseline == pytest.approx(0.5327, abs=1e-3)
    gt = cv2.imread(str(root / GT_DEPTH / "0000000005.png"), cv2.IMREAD_UNCHANGED).astype(np.float32) / 256

    disp, valid = sgbm_disparity(left, right)
    depth = disparity_to_depth(disp, focal, baseline, valid)
    both = (depth > 0) & (gt > 0)
    # Measured: Abs Rel 0.030, 98% of annotated pixels covered (0.14 s on 2 CPU cores).
    assert np.mean(np.abs(depth[both] - gt[both]) / gt[both]) < 0.08
    assert both.sum() / (gt > 0).sum() >= 0.85


def test_disparity_to_depth():
    disparity = np.array([[38.88, 0.0], [-3.0, 38.88]], dtype=np.float32)
    depth = disparity_to_depth(disparity, 720.0, 0.54)
    assert depth.dtype == np.float32
    np.testing.assert_allclose(depth, [[10.0, 0.0], [0.0, 10.0]], rtol=1e-6)
    masked = disparity_to_depth(disparity, 720.0, 0.54, valid=np.array([[True, True], [True, False]]))
    np.testing.assert_allclose(masked, [[10.0, 0.0], [0.0, 0.0]], rtol=1e-6)
    for focal, baseline in [(0.0, 0.54), (-720.0, 0.54), (720.0, 0.0)]:
        with pytest.raises(ValueError, match="focal and baseline must be positive"):
            disparity_to_depth(disparity, focal, baseline)


def test_bad_inputs_are_rejected():
    image = np.zeros((40, 64, 3), np.uint8)
    with pytest.raises(ValueError, match=r"differ in shape: \(40, 64, 3\) vs \(40, 48, 3\)"):
        sgbm_disparity(image, np.zeros((40, 48, 3), np.uint8))
    with pytest.raises(ValueError, match="left image must be HxWx3 uint8 RGB.*float32"):
        sgbm_disparity(image.astype(np.float32), image.astype(np.float32))
    with pytest.raises(ValueError, match=r"left image must be HxWx3 uint8 RGB, got shape \(40, 64\)"):
        sgbm_disparity(image[..., 0], image[..., 0])
    with pytest.raises(ValueError, match="multiple of 16"):
        SgbmConfig(num_disparities=100)


def test_config_provenance_is_plain_json():
    record = json.loads(json.dumps(SgbmConfig().to_dict()))
    assert record["mode"] == "SGBM_3WAY" and record["lr_check"] == 1.0
    assert record["p1"] == 8 * 3 * 25 and record["p2"] == 32 * 3 * 25
