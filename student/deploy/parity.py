"""Parity of an exported file, whatever runs it: FP32 against PyTorch, FP16 / INT8 against FP32.

A *runner* is a callable ``run(image) -> [depth, (classes)]`` over one input array in the file's
contract (N, 3, H, W) RGB 0..255 (``edgedepth.student.deploy.calibration.to_export_input``): an ONNX
Runtime session, an OpenVINO compiled model or a LiteRT interpreter. The bounds below fail the
export when crossed, for every runtime alike (docs/export.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from edgedepth.student.evaluate import compute_errors

Runner = Callable[[np.ndarray], Sequence[np.ndarray]]

FP32_MAX_REL_ERR = 1e-4
"""FP32 file vs PyTorch: max |a - b| / max |b| of depth."""
CLASS_AGREEMENT_MIN = 0.999
"""FP32 file vs PyTorch: share of pixels with the same class (ties may flip)."""
FP16_ABS_REL_MAX, FP16_RMSE_MAX = 0.01, 0.1
"""FP16 copy vs FP32 file on real frames: Abs Rel, and RMSE in metres."""
INT8_ABS_REL_MAX, INT8_RMSE_MAX = 0.05, 1.0
"""INT8 copy vs FP32 file on real frames: Abs Rel, and RMSE in metres."""
BOUNDS = {"fp16": (FP16_ABS_REL_MAX, FP16_RMSE_MAX), "int8": (INT8_ABS_REL_MAX, INT8_RMSE_MAX)}


def max_rel_err(test: np.ndarray, ref: np.ndarray) -> float:
    """max |test - ref| / max |ref|; infinite when either holds NaN or inf (never a match)."""
    if not (np.isfinite(test).all() and np.isfinite(ref).all()):
        return math.inf
    return float(np.abs(test.astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-12))


def depth_figures(test: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Abs Rel and RMSE (metres) of ``test`` depth against ``ref`` depth, all pixels."""
    errors = compute_errors(ref.astype(np.float64), test.astype(np.float64))
    return {"abs_rel": errors["abs_rel"], "rmse": errors["rmse"]}


def fp32_parity_of(
    run: Runner,
    name: str,
    wrapper: torch.nn.Module,
    images: Sequence[np.ndarray],
    runtime: str = "the runtime",
    checkpoint: str = "",
) -> dict:
    """``run`` vs the PyTorch export model on ``images``; raises past the FP32 bounds.

    Returns ``{"images": n, "max_rel_err": e}`` (and ``class_agreement`` with a class output).
    """
    rel, agree, count = 0.0, [], 0
    for image in images:
        got = list(run(image))
        with torch.no_grad():
            want = [t.numpy() for t in wrapper(torch.from_numpy(image))]
        for who, output in ((runtime, got[0]), ("PyTorch", want[0])):
            if not np.isfinite(output).all():
                raise ValueError(
                    f"{checkpoint or name}: {who} outputs NaN or infinite depth in {name}; "
                    "the checkpoint is damaged or its training diverged (file removed)"
                )
        rel = max(rel, max_rel_err(got[0], want[0]))
        count += image.shape[0]
        if len(want) > 1:
            agree.append(float(np.mean(got[1] == want[1])))
    figures: dict = {"images": count, "max_rel_err": rel}
    if not rel < FP32_MAX_REL_ERR:
        raise ValueError(f"{name}: FP32 max relative error {rel:.3g} vs PyTorch >= {FP32_MAX_REL_ERR}")
    if agree:
        figures["class_agreement"] = min(agree)
        if min(agree) < CLASS_AGREEMENT_MIN:
            raise ValueError(f"{name}: class agreement {min(agree):.4f} vs PyTorch < {CLASS_AGREEMENT_MIN}")
    return figures


def copy_parity_of(
    run: Runner, name: str, precision: str, real: Sequence[np.ndarray], ref: Sequence[np.ndarray]
) -> dict:
    """FP16 / INT8 depth of ``run`` vs the FP32 depth ``ref`` on the real frames; raises past the
    bounds. Returns Abs Rel, RMSE (m), the frame count and the bounds."""
    got = np.concatenate([np.asarray(run(x)[0]).ravel() for x in real])
    figures: dict = depth_figures(got, np.concatenate([np.asarray(r).ravel() for r in ref]))
    figures["images"] = len(real)
    bounds = BOUNDS[precision]
    figures["bounds"] = {"abs_rel": bounds[0], "rmse": bounds[1]}
    for key, bound in zip(("abs_rel", "rmse"), bounds, strict=True):
        if not figures[key] <= bound:
            raise ValueError(f"{name}: {precision} {key} {figures[key]:.4g} vs FP32 exceeds {bound}")
    return figures


__all__ = [
    "BOUNDS",
    "CLASS_AGREEMENT_MIN",
    "FP16_ABS_REL_MAX",
    "FP16_RMSE_MAX",
    "FP32_MAX_REL_ERR",
    "INT8_ABS_REL_MAX",
    "INT8_RMSE_MAX",
    "Runner",
    "copy_parity_of",
    "depth_figures",
    "fp32_parity_of",
    "max_rel_err",
]
