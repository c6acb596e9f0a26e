"""Stereo geometry shared by the stereo teachers: the left-right check and disparity -> depth."""

from __future__ import annotations

import numpy as np


def lr_check_mask(disp_left: np.ndarray, disp_right: np.ndarray, max_diff_px: float) -> np.ndarray:
    """Left pixels x with dL(x) > 0 whose match x - round(dL(x)) lies in the image, is valid in the right
    view, and agrees: |dL(x) - dR(x - round(dL(x)))| <= max_diff_px.

    A match that is wrong in one view rarely agrees with the other view's, so this drops most
    occlusion and mismatch errors (it is how both stereo teachers build their ``valid`` mask).
    """
    if disp_left.shape != disp_right.shape or disp_left.ndim != 2:
        raise ValueError(
            f"need two equal (H, W) disparity maps, got {disp_left.shape} and {disp_right.shape}"
        )
    h, w = disp_left.shape
    x_r = np.arange(w)[None, :] - np.rint(disp_left).astype(np.int64)
    d_r = disp_right[np.arange(h)[:, None], np.clip(x_r, 0, w - 1)]
    inside = (x_r >= 0) & (x_r < w)
    return (disp_left > 0) & inside & (d_r > 0) & (np.abs(disp_left - d_r) <= max_diff_px)


def disparity_to_depth(
    disparity: np.ndarray,
    focal: float,
    baseline: float,
    valid: np.ndarray | None = None,
    doffs: float = 0.0,
) -> np.ndarray:
    """Metric depth focal * baseline / (disparity + doffs) as float32 metres; 0 where not valid.

    ``disparity`` (H, W) is in pixels (left x minus right x), ``focal`` in pixels, ``baseline`` in
    metres, ``doffs`` the right camera's principal point minus the left's (pixels; 0 on KITTI). A
    pixel gets a depth only where disparity > 0, disparity + doffs > 0 and ``valid`` (when given).
    """
    if focal <= 0 or baseline <= 0:
        raise ValueError(f"focal and baseline must be positive, got focal={focal}, baseline={baseline}")
    if not np.isfinite(doffs):
        raise ValueError(f"doffs must be finite, got {doffs}")
    disparity = np.asarray(disparity, dtype=np.float32)
    shifted = disparity + np.float32(doffs)
    usable = (disparity > 0) & (shifted > 0)
    if valid is not None:
        usable &= np.asarray(valid, dtype=bool)
    depth = np.zeros(disparity.shape, dtype=np.float32)
    depth[usable] = np.float32(focal * baseline) / shifted[usable]
    return depth


__all__ = ["disparity_to_depth", "lr_check_mask"]
