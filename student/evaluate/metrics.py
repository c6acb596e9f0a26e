"""KITTI depth metrics (abs_rel, sq_rel, rmse, rmse_log, a1, a2, a3).

Follows the convention of the public KITTI depth benchmarks and monodepth2: metrics are computed per
image on the valid ground-truth pixels inside the Garg crop, then averaged over images. Predictions
are resized to the ground-truth size and clamped to the depth range; median scaling is off by default
because the student predicts metric depth. The Eigen (NIPS 2014) crop and no crop are also available
(``crop="eigen"`` / ``crop="none"``); protocol notes are in docs/evaluation.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from edgedepth.common import check_choice

METRIC_NAMES: tuple[str, ...] = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")
MIN_DEPTH = 1e-3
MAX_DEPTH = 80.0
RESIZE_MODES = ("depth", "disparity")
CROPS = ("garg", "eigen", "none")

# Garg et al. (ECCV 2016) crop as fractions of the image height/width, as used by monodepth2.
_GARG_ROWS = (0.40810811, 0.99189189)
_GARG_COLS = (0.03594771, 0.96405229)
# Eigen et al. (NIPS 2014) crop, with the fractions of monodepth (v1)'s evaluation script.
_EIGEN_ROWS = (0.3324324, 0.91351351)
_EIGEN_COLS = (0.0359477, 0.96405229)


def _fraction_mask(
    height: int, width: int, rows: tuple[float, float], cols: tuple[float, float]
) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    top, bottom = int(rows[0] * height), int(rows[1] * height)
    left, right = int(cols[0] * width), int(cols[1] * width)
    mask[top:bottom, left:right] = True
    return mask


def garg_crop_mask(height: int, width: int) -> np.ndarray:
    """Boolean mask of the Garg crop; bounds are the float products truncated to int, end exclusive.

    On 375x1242 this keeps rows 153:371 and columns 44:1197.
    """
    return _fraction_mask(height, width, _GARG_ROWS, _GARG_COLS)


def eigen_crop_mask(height: int, width: int) -> np.ndarray:
    """Boolean mask of the Eigen (NIPS 2014) crop; float products truncated to int, end exclusive.

    On 375x1242 this keeps rows 124:342 and columns 44:1197. Papers reporting "Eigen split" numbers
    use the Garg crop; this one gives different (usually worse) numbers.
    """
    return _fraction_mask(height, width, _EIGEN_ROWS, _EIGEN_COLS)


def normalise_crop(crop: str | bool | None) -> str:
    """``"garg"``, ``"eigen"`` or ``"none"`` from a crop name or the legacy bool (True = garg, False = none)."""
    if crop is None:
        return "none"
    if isinstance(crop, bool | np.bool_):
        return "garg" if crop else "none"
    return check_choice(crop.lower() if isinstance(crop, str) else crop, CROPS, "crop")


def crop_mask(crop: str | bool | None, height: int, width: int) -> np.ndarray:
    """The boolean evaluation mask of a crop (see `normalise_crop`); all True for ``"none"``."""
    kind = normalise_crop(crop)
    if kind == "garg":
        return garg_crop_mask(height, width)
    if kind == "eigen":
        return eigen_crop_mask(height, width)
    return np.ones((height, width), dtype=bool)


def _to_numpy(x: Any) -> np.ndarray:
    """Convert a numpy array, torch tensor or nested sequence to a float64 numpy array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _as_2d(x: Any, name: str) -> np.ndarray:
    """Return `x` as a 2-D float64 map, squeezing leading singleton dims such as (1, h, w) or (1, 1, h, w)."""
    arr = _to_numpy(x)
    shape = arr.shape
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D map (leading singleton dims allowed), got shape {shape}")
    return arr


def resize_prediction(pred: Any, height: int, width: int, *, mode: str = "depth") -> np.ndarray:
    """Resize a 2-D depth map to (height, width) with bilinear, half-pixel (align_corners=False) sampling.

    mode="depth" interpolates depth directly. mode="disparity" interpolates 1/depth and inverts back,
    as monodepth2 does when it resizes the network's disparity; depths are floored at MIN_DEPTH first
    so that zeros do not become infinite disparities.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    arr = _as_2d(pred, "pred")
    if arr.shape == (height, width):
        return arr
    if mode == "disparity":
        arr = 1.0 / np.maximum(arr, MIN_DEPTH)
    resized = F.interpolate(
        torch.from_numpy(np.ascontiguousarray(arr))[None, None],
        size=(height, width),
        mode="bilinear",
        align_corners=False,
    )[0, 0].numpy()
    return 1.0 / resized if mode == "disparity" else resized


def compute_errors(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """The seven KITTI metrics on 1-D arrays of already masked (and clamped) pixels."""
    gt, pred = _to_numpy(gt).ravel(), _to_numpy(pred).ravel()
    if gt.shape != pred.shape:
        raise ValueError(f"gt and pred must have the same number of pixels, got {gt.size} and {pred.size}")
    if gt.size == 0:
        raise ValueError("compute_errors needs at least one pixel")
    thresh = np.maximum(gt / pred, pred / gt)
    diff = gt - pred
    return {
        "abs_rel": float(np.mean(np.abs(diff) / gt)),
        "sq_rel": float(np.mean(diff**2 / gt)),
        "rmse": float(np.sqrt(np.mean(diff**2))),
        "rmse_log": float(np.sqrt(np.mean((np.log(gt) - np.log(pred)) ** 2))),
        "a1": float(np.mean(thresh < 1.25)),
        "a2": float(np.mean(thresh < 1.25**2)),
        "a3": float(np.mean(thresh < 1.25**3)),
    }


def evaluate_image(
    pred: Any,
    gt: Any,
    *,
    min_depth: float = MIN_DEPTH,
    max_depth: float = MAX_DEPTH,
    crop: str | bool = "garg",
    resize_in: str = "depth",
    median_scaling: bool = False,
) -> dict[str, float] | None:
    """Metrics of one image, or None when no ground-truth pixel survives the mask.

    Valid pixels have min_depth < gt <= max_depth (monodepth2 uses gt < max_depth, which differs only
    for pixels exactly at 80 m) and lie inside the crop: "garg" (default; True means the same),
    "eigen", or "none" (False means the same). The prediction is resized
    to the gt size (see `resize_prediction`; resize_in is its mode), masked, optionally median scaled
    (median(gt) / median(pred) over the valid pixels), then clamped to [min_depth, max_depth].
    """
    if not 0 <= min_depth < max_depth:
        raise ValueError(f"need 0 <= min_depth < max_depth, got {min_depth} and {max_depth}")
    crop = normalise_crop(crop)
    gt_map = _as_2d(gt, "gt")
    height, width = gt_map.shape
    pred_map = resize_prediction(pred, height, width, mode=resize_in)

    mask = (gt_map > min_depth) & (gt_map <= max_depth)
    if crop != "none":
        mask &= crop_mask(crop, height, width)
    if not mask.any():
        return None

    gt_valid, pred_valid = gt_map[mask], pred_map[mask]
    if median_scaling:
        pred_median = np.median(pred_valid)
        if not pred_median > 0:
            raise ValueError(f"median scaling needs a positive median prediction, got {pred_median}")
        pred_valid = pred_valid * (np.median(gt_valid) / pred_median)
    pred_valid = np.clip(pred_valid, min_depth, max_depth)
    return compute_errors(gt_valid, pred_valid)


@dataclass(frozen=True)
class DepthMetrics:
    """Per-image KITTI metrics averaged over the evaluated images, plus how many images were skipped."""

    abs_rel: float
    sq_rel: float
    rmse: float
    rmse_log: float
    a1: float
    a2: float
    a3: float
    num_images: int
    num_skipped: int

    def as_dict(self) -> dict[str, float]:
        """The seven metrics keyed by name, in METRIC_NAMES order (counts are attributes)."""
        return {name: getattr(self, name) for name in METRIC_NAMES}

    def format_table(self) -> str:
        """Two aligned lines: the metric names and their values with 3 decimals."""
        header = " ".join(f"{name:>9}" for name in METRIC_NAMES)
        values = " ".join(f"{getattr(self, name):9.3f}" for name in METRIC_NAMES)
        return f"{header}\n{values}"


def evaluate_depth(
    preds: Sequence[Any],
    gts: Sequence[Any],
    *,
    min_depth: float = MIN_DEPTH,
    max_depth: float = MAX_DEPTH,
    crop: str | bool = "garg",
    resize_in: str = "depth",
    median_scaling: bool = False,
) -> DepthMetrics:
    """Evaluate a set of predictions: metrics per image (see `evaluate_image`), then the mean over images.

    Images may differ in size. Images with no valid pixel are skipped and counted; if all are skipped
    a ValueError is raised rather than returning NaN.
    """
    if len(preds) != len(gts):
        raise ValueError(f"got {len(preds)} predictions but {len(gts)} ground-truth maps")
    crop = normalise_crop(crop)
    totals = dict.fromkeys(METRIC_NAMES, 0.0)
    num_images = num_skipped = 0
    for index, (pred, gt) in enumerate(zip(preds, gts, strict=True)):
        try:
            errors = evaluate_image(
                pred,
                gt,
                min_depth=min_depth,
                max_depth=max_depth,
                crop=crop,
                resize_in=resize_in,
                median_scaling=median_scaling,
            )
        except ValueError as exc:
            raise ValueError(f"image {index}: {exc}") from exc
        if errors is None:
            num_skipped += 1
            continue
        num_images += 1
        for name in METRIC_NAMES:
            totals[name] += errors[name]
    if num_images == 0:
        raise ValueError(f"no valid ground-truth pixel in any of the {len(gts)} images")
    means = {name: total / num_images for name, total in totals.items()}
    return DepthMetrics(**means, num_images=num_images, num_skipped=num_skipped)
