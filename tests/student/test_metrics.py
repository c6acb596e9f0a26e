"""Tests for edgedepth.student.evaluate.metrics; expected values are derived by hand in the comments."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from edgedepth.student.evaluate.metrics import (
    METRIC_NAMES,
    DepthMetrics,
    compute_errors,
    crop_mask,
    eigen_crop_mask,
    evaluate_depth,
    evaluate_image,
    garg_crop_mask,
    normalise_crop,
    resize_prediction,
)

KITTI_SIZES = [(375, 1242), (370, 1224), (374, 1238), (370, 1226), (376, 1241)]


def _perfect(errors: dict[str, float]) -> None:
    for name in ("abs_rel", "sq_rel", "rmse", "rmse_log"):
        assert errors[name] == pytest.approx(0.0, abs=1e-12), name
    for name in ("a1", "a2", "a3"):
        assert errors[name] == 1.0, name


# --- compute_errors -------------------------------------------------------------------------------------


def test_compute_errors_by_hand():
    errors = compute_errors(np.array([1.0, 2.0, 4.0]), np.array([1.0, 1.0, 8.0]))
    assert list(errors) == list(METRIC_NAMES)
    # |gt - pred| / gt = 0, 1/2, 4/4 -> (0 + 0.5 + 1) / 3
    assert errors["abs_rel"] == pytest.approx(0.5)
    # (gt - pred)^2 / gt = 0, 1/2, 16/4 -> (0 + 0.5 + 4) / 3
    assert errors["sq_rel"] == pytest.approx(1.5)
    # sqrt((0 + 1 + 16) / 3) = sqrt(17 / 3)
    assert errors["rmse"] == pytest.approx(2.3804761428476167)
    # ln gt - ln pred = 0, ln 2, -ln 2 -> sqrt(2 ln^2 2 / 3) = ln 2 * sqrt(2/3)
    assert errors["rmse_log"] == pytest.approx(0.5659524505612374)
    # max ratios 1, 2, 2: only the first is below 1.25, 1.5625 and 1.953125
    assert errors["a1"] == pytest.approx(1 / 3)
    assert errors["a2"] == pytest.approx(1 / 3)
    assert errors["a3"] == pytest.approx(1 / 3)


def test_compute_errors_thresholds_are_strict_and_distinct():
    gt = np.ones(4)
    # ratios 1.25, 1.5625, 1.953125 (exactly 1.25^1..3, all exact in binary) and 1.2
    errors = compute_errors(gt, np.array([1.25, 1.5625, 1.953125, 1.2]))
    assert errors["a1"] == pytest.approx(1 / 4)  # only 1.2 < 1.25
    assert errors["a2"] == pytest.approx(2 / 4)  # 1.2, 1.25 < 1.5625
    assert errors["a3"] == pytest.approx(3 / 4)  # 1.2, 1.25, 1.5625 < 1.953125
    # the ratio is symmetric: pred = gt / 1.2 is as good as pred = gt * 1.2
    assert compute_errors(np.array([1.2]), np.array([1.0]))["a1"] == 1.0


# --- per-image averaging ---------------------------------------------------------------------------------


def test_mean_over_images_not_pooled():
    gts = [np.array([[1.0]]), np.array([[1.0, 1.0, 1.0]])]
    preds = [np.array([[2.0]]), np.array([[1.0, 1.0, 1.0]])]
    metrics = evaluate_depth(preds, gts, crop=False)
    # image 1: |1 - 2| / 1 = 1; image 2: 0 -> (1 + 0) / 2
    assert metrics.abs_rel == pytest.approx(0.5)
    # pooled over the 4 pixels it would be (1 + 0 + 0 + 0) / 4
    pooled = compute_errors(np.ones(4), np.array([2.0, 1.0, 1.0, 1.0]))["abs_rel"]
    assert pooled == pytest.approx(0.25)
    assert metrics.abs_rel != pytest.approx(pooled)
    # a1: image 1 ratio 2 -> 0, image 2 -> 1; mean 0.5 (pooled 0.75)
    assert metrics.a1 == pytest.approx(0.5)
    assert (metrics.num_images, metrics.num_skipped) == (2, 0)


# --- mask and clamping -----------------------------------------------------------------------------------


def test_depth_range_mask_and_prediction_clamp():
    gt = np.array([[0.0, 1e-3, 80.0, 80.5, 10.0, 10.0]])
    pred = np.array([[5.0, 5.0, 200.0, 5.0, 0.0, 10.0]])
    errors = evaluate_image(pred, gt, crop=False)
    assert errors is not None
    # valid gt: 80 (pred 200 -> 80), 10 (pred 0 -> 1e-3), 10 (pred 10); 0, 1e-3 and 80.5 excluded
    # abs_rel = (0 + 9.999 / 10 + 0) / 3
    assert errors["abs_rel"] == pytest.approx(0.3333)
    # rmse = sqrt((0 + 9.999^2 + 0) / 3)
    assert errors["rmse"] == pytest.approx(math.sqrt(9.999**2 / 3))
    # rmse_log = sqrt((0 + ln(10 / 1e-3)^2 + 0) / 3) = ln(1e4) / sqrt(3)
    assert errors["rmse_log"] == pytest.approx(math.log(1e4) / math.sqrt(3))
    # ratios 1, 1e4, 1
    assert errors["a1"] == pytest.approx(2 / 3)


def test_image_without_valid_pixel_is_skipped_and_counted():
    assert evaluate_image(np.ones((2, 2)), np.zeros((2, 2)), crop=False) is None
    gts = [np.zeros((2, 3)), np.full((2, 3), 4.0)]
    preds = [np.ones((2, 3)), np.full((2, 3), 2.0)]
    metrics = evaluate_depth(preds, gts, crop=False)
    assert (metrics.num_images, metrics.num_skipped) == (1, 1)
    assert metrics.abs_rel == pytest.approx(0.5)  # |4 - 2| / 4, not averaged with a NaN or a 0
    assert all(math.isfinite(v) for v in metrics.as_dict().values())


# --- Garg crop -------------------------------------------------------------------------------------------


def _bounds(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def test_garg_crop_known_indices():
    mask = garg_crop_mask(375, 1242)
    assert mask.shape == (375, 1242) and mask.dtype == bool
    assert _bounds(mask) == (153, 371, 44, 1197)
    assert mask.sum() == (371 - 153) * (1197 - 44)  # a full rectangle
    # 0.03594771 * 1224 = 43.99999704 truncates to 43 (rounding would give 44)
    assert _bounds(garg_crop_mask(370, 1224))[2:] == (43, 1180)


@pytest.mark.parametrize(("height", "width"), KITTI_SIZES)
def test_garg_crop_matches_truncation_formula(height, width):
    expected = (
        int(0.40810811 * height),
        int(0.99189189 * height),
        int(0.03594771 * width),
        int(0.96405229 * width),
    )
    assert _bounds(garg_crop_mask(height, width)) == expected


def test_crop_switch():
    height, width = 20, 40  # Garg crop keeps rows 8:19 and columns 1:38
    gt = np.full((height, width), 10.0)
    pred = np.full((height, width), 10.0)
    pred[0, 0] = 20.0  # outside the crop
    _perfect(evaluate_image(pred, gt, crop=True))
    # without the crop all 800 pixels count: abs_rel = (10 / 10) / 800
    assert evaluate_image(pred, gt, crop=False)["abs_rel"] == pytest.approx(1 / 800)


# --- Eigen crop and crop names ---------------------------------------------------------------------------


def test_eigen_crop_known_indices():
    mask = eigen_crop_mask(375, 1242)
    # 0.3324324 * 375 = 124.66, 0.91351351 * 375 = 342.57, 0.0359477 * 1242 = 44.65, 0.96405229 * 1242 = 1197.35
    assert _bounds(mask) == (124, 342, 44, 1197)
    assert mask.sum() == (342 - 124) * (1197 - 44)


@pytest.mark.parametrize(("height", "width"), KITTI_SIZES)
def test_eigen_crop_matches_truncation_formula(height, width):
    expected = (
        int(0.3324324 * height),
        int(0.91351351 * height),
        int(0.0359477 * width),
        int(0.96405229 * width),
    )
    assert _bounds(eigen_crop_mask(height, width)) == expected


def test_crop_names_and_legacy_bools():
    assert normalise_crop(True) == normalise_crop("garg") == normalise_crop("GARG") == "garg"
    assert normalise_crop(False) == normalise_crop(None) == normalise_crop("none") == "none"
    assert normalise_crop(np.bool_(True)) == "garg"
    assert normalise_crop("eigen") == "eigen"
    np.testing.assert_array_equal(crop_mask("garg", 375, 1242), garg_crop_mask(375, 1242))
    np.testing.assert_array_equal(crop_mask("eigen", 375, 1242), eigen_crop_mask(375, 1242))
    assert crop_mask(False, 3, 4).all()
    for bad in ("kb", "", 1):
        with pytest.raises(ValueError, match="unknown crop"):
            normalise_crop(bad)
    with pytest.raises(ValueError, match="unknown crop 'kb'; choose one of garg, eigen, none"):
        evaluate_image(np.ones((4, 4)), np.ones((4, 4)), crop="kb")


def test_eigen_crop_selects_other_rows_than_garg():
    height, width = 375, 1242
    gt = np.full((height, width), 10.0)
    pred = np.full((height, width), 10.0)
    pred[124:153, 44:1197] = 20.0  # inside the Eigen crop, above the Garg crop
    _perfect(evaluate_image(pred, gt, crop="garg"))
    _perfect(evaluate_image(pred, gt, crop=True))
    # Eigen crop: 29 of its 218 rows are wrong by |10 - 20| / 10 = 1
    assert evaluate_image(pred, gt, crop="eigen")["abs_rel"] == pytest.approx(29 / 218)
    metrics = evaluate_depth([pred], [gt], crop="eigen")
    assert metrics.abs_rel == pytest.approx(29 / 218)
    # no crop: 29 * 1153 wrong pixels of 375 * 1242
    assert evaluate_image(pred, gt, crop="none")["abs_rel"] == pytest.approx(29 * 1153 / (375 * 1242))
    assert evaluate_image(pred, gt, crop=False) == evaluate_image(pred, gt, crop="none")


# --- resizing --------------------------------------------------------------------------------------------


def test_constant_prediction_is_resolution_independent():
    rng = np.random.default_rng(0)
    gt = rng.uniform(1.0, 70.0, size=(16, 40))
    full = evaluate_image(np.full((16, 40), 12.0), gt)
    small = evaluate_image(np.full((4, 10), 12.0), gt)
    assert small == pytest.approx(full)
    assert evaluate_image(np.full((4, 10), 12.0), gt, resize_in="disparity") == pytest.approx(full)


def test_bilinear_half_pixel_upsample():
    small = np.array([[1.0, 2.0], [3.0, 4.0]])
    up = resize_prediction(small, 4, 4)
    # output index i samples source coordinate (i + 0.5) / 2 - 0.5, clamped to [0, 1]
    # (0, 0): source (-0.25, -0.25) -> clamped to (0, 0) -> 1
    assert up[0, 0] == pytest.approx(1.0)
    # (1, 1): source (0.25, 0.25) -> 0.75 * (0.75*1 + 0.25*2) + 0.25 * (0.75*3 + 0.25*4) = 0.9375 + 0.8125
    assert up[1, 1] == pytest.approx(1.75)
    # (1, 2): source (0.25, 0.75) -> 0.75 * (0.25*1 + 0.75*2) + 0.25 * (0.25*3 + 0.75*4) = 1.3125 + 0.9375
    assert up[1, 2] == pytest.approx(2.25)
    # (3, 3): source (1.25, 1.25) -> clamped to (1, 1) -> 4
    assert up[3, 3] == pytest.approx(4.0)
    # evaluate_image resizes the same way: gt equal to those values (others invalid) is matched exactly
    gt = np.zeros((4, 4))
    gt[0, 0], gt[1, 1], gt[1, 2], gt[3, 3] = 1.0, 1.75, 2.25, 4.0
    _perfect(evaluate_image(small, gt, crop=False))


def test_disparity_resize_differs_from_depth_resize():
    small = np.array([[1.0, 2.0], [3.0, 4.0]])
    disp = resize_prediction(small, 4, 4, mode="disparity")
    # disparities 1, 1/2, 1/3, 1/4; at (1, 1): 0.75 * (0.75*1 + 0.25/2) + 0.25 * (0.75/3 + 0.25/4)
    #   = 0.65625 + 0.078125 = 0.734375 -> depth 1 / 0.734375
    assert disp[1, 1] == pytest.approx(1 / 0.734375)
    assert disp[0, 0] == pytest.approx(1.0)
    gt = np.full((4, 4), 2.0)
    by_depth = evaluate_image(small, gt, crop=False)
    by_disp = evaluate_image(small, gt, crop=False, resize_in="disparity")
    assert by_depth["abs_rel"] != pytest.approx(by_disp["abs_rel"])
    with pytest.raises(ValueError, match="inverse"):
        evaluate_image(small, gt, resize_in="inverse")


def test_accepts_tensors_and_leading_singleton_dims():
    gt = np.array([[2.0, 4.0], [8.0, 16.0]])
    pred = gt / 2  # abs_rel = 0.5 everywhere
    for wrapped in (pred[None], pred[None, None], torch.from_numpy(pred)[None, None].float()):
        errors = evaluate_image(wrapped, gt, crop=False)
        assert errors["abs_rel"] == pytest.approx(0.5)
    metrics = evaluate_depth(torch.from_numpy(pred)[None], [torch.from_numpy(gt)], crop=False)
    assert metrics.abs_rel == pytest.approx(0.5)


# --- median scaling --------------------------------------------------------------------------------------


def test_median_scaling():
    gt = np.array([[1.0, 5.0, 10.0, 50.0]])  # 50 -> pred 100, above max_depth until rescaled
    pred = 2.0 * gt
    # medians: gt (5 + 10) / 2 = 7.5, pred 15 -> factor 0.5, applied before the clamp to 80
    _perfect(evaluate_image(pred, gt, crop=False, median_scaling=True))
    # without scaling the 100 is clamped to 80: (1 + 1 + 1 + |50 - 80| / 50) / 4 = 3.6 / 4
    assert evaluate_image(pred, gt, crop=False)["abs_rel"] == pytest.approx(0.9)
    # all of 2 * gt inside the range: |gt - 2 gt| / gt = 1 for every pixel
    gt_low = np.array([[1.0, 5.0, 10.0, 20.0]])
    plain = evaluate_depth([2.0 * gt_low[np.newaxis, :, :]], [gt_low], crop=False)
    assert plain.abs_rel == pytest.approx(1.0)
    assert plain.a3 == 0.0  # ratio 2 >= 1.953125
    _perfect(evaluate_depth([2.0 * gt_low], [gt_low], crop=False, median_scaling=True).as_dict())


# --- result object and errors ----------------------------------------------------------------------------


def test_depth_metrics_dict_and_table():
    metrics = evaluate_depth([np.array([[1.0, 1.0, 8.0]])], [np.array([[1.0, 2.0, 4.0]])], crop=False)
    assert isinstance(metrics, DepthMetrics)
    assert metrics.as_dict() == pytest.approx(compute_errors([1.0, 2.0, 4.0], [1.0, 1.0, 8.0]))
    assert list(metrics.as_dict()) == list(METRIC_NAMES)
    header, values = metrics.format_table().splitlines()
    assert header.split() == list(METRIC_NAMES)
    assert values.split() == ["0.500", "1.500", "2.380", "0.566", "0.333", "0.333", "0.333"]
    with pytest.raises(AttributeError):
        metrics.abs_rel = 0.0  # frozen


def test_mismatched_counts():
    with pytest.raises(ValueError, match=r"2 predictions but 3"):
        evaluate_depth([np.ones((2, 2))] * 2, [np.ones((2, 2))] * 3)


def test_non_2d_map():
    with pytest.raises(ValueError, match=r"\(2, 4, 5\)"):
        evaluate_depth([np.ones((2, 4, 5))], [np.ones((4, 5))])
    with pytest.raises(ValueError, match=r"\(6,\)"):
        evaluate_image(np.ones((2, 3)), np.ones(6))


def test_all_images_empty():
    gts = [np.zeros((3, 3)), np.full((3, 3), 90.0)]  # nothing in (1e-3, 80]
    with pytest.raises(ValueError, match="no valid ground-truth pixel in any of the 2 images"):
        evaluate_depth([np.ones((3, 3))] * 2, gts)
