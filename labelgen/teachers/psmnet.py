"""Learned stereo teacher: PSMNet with a public checkpoint, run as the authors' test code ran it.

Loading goes through ``edgedepth.common.checkpoints`` (weights-only, no arbitrary pickles) and is strict, so a
wrong or truncated file fails with a one-line error instead of giving silently poor labels.
Preprocessing follows the public test scripts exactly: RGB / 255, ImageNet mean and std, then zero
padding at the top and right to multiples of 16 (at least 256), and the output cropped back.
The network module itself lives in ``psmnet_model``.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from edgedepth.common import safe_load, state_dict_from
from edgedepth.labelgen.teachers import IMAGENET_MEAN, IMAGENET_STD
from edgedepth.labelgen.teachers.psmnet_model import PSMNet
from edgedepth.labelgen.teachers.stereo import lr_check_mask

__all__ = [
    "PSMNet",
    "crop_from_network",
    "load_psmnet",
    "lr_check_mask",
    "lr_consistency",
    "pad_for_network",
    "padded_size",
    "predict_disparity",
    "predict_disparity_batch",
    "psmnet_disparity",
]

MAX_DISP = 192
MIN_SIZE = 256
"""The SPP branch pools 64x64 cells of the 1/4-resolution features, so padded H and W must be >= 256."""
PRECISIONS = ("fp32", "fp16")


def load_psmnet(
    path: str | Path, align_corners: bool | None = None, device: str | torch.device = "cpu"
) -> PSMNet:
    """A PSMNet in eval mode with the weights of a public checkpoint (``module.`` prefix removed).

    ``align_corners`` defaults to True, the authors' advice for their 2018 KITTI / SceneFlow files
    (trained under torch 0.3 semantics); use False for checkpoints trained with torch >= 0.4.1.
    """
    path = Path(path)
    state = state_dict_from(safe_load(path, map_location="cpu"), path)
    model = PSMNet(MAX_DISP, align_corners=True if align_corners is None else align_corners)
    expected = model.state_dict()
    for key in expected:
        # Files from torch < 0.4.1 have no batch counters; they are unused at inference, so start at 0.
        stem = key.removesuffix("num_batches_tracked")
        if stem != key and key not in state and stem + "running_mean" in state:
            state[key] = torch.zeros((), dtype=torch.long)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} (model {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = [
        f"{label} {_first(keys)}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
        if keys
    ]
    if problems:
        raise ValueError(f"{path}: not a PSMNet stacked-hourglass checkpoint: {'; '.join(problems)}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:  # dtype oddities the checks above do not catch
        raise ValueError(f"{path}: cannot load into PSMNet: {str(err).splitlines()[0]}") from None
    return model.eval().to(device)


def _first(keys: list[str], count: int = 3) -> str:
    more = f" (+{len(keys) - count} more)" if len(keys) > count else ""
    return ", ".join(keys[:count]) + more


def padded_size(height: int, width: int) -> tuple[int, int]:
    """The network input size for an H x W image: next multiples of 16, at least 256."""
    return max(MIN_SIZE, -(-height // 16) * 16), max(MIN_SIZE, -(-width // 16) * 16)


def pad_for_network(images: Tensor) -> tuple[Tensor, int]:
    """Zero-pad normalised (B, C, H, W) images at the top and right to ``padded_size``; also the top pad."""
    h, w = images.shape[-2:]
    ph, pw = padded_size(h, w)
    return torch.nn.functional.pad(images, (0, pw - w, ph - h, 0)), ph - h


def crop_from_network(disparity: Tensor, top_pad: int, height: int, width: int) -> Tensor:
    """Undo ``pad_for_network`` on (B, H', W') output: rows [top_pad, top_pad + H), columns [0, W)."""
    return disparity[..., top_pad : top_pad + height, :width]


def _as_batch(images: Sequence[np.ndarray] | np.ndarray, name: str) -> np.ndarray:
    batch = np.stack(list(images)) if not isinstance(images, np.ndarray) else images
    if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8 or len(batch) == 0:
        raise ValueError(
            f"{name} must be equal-size HxWx3 uint8 RGB images, got shape {batch.shape} dtype {batch.dtype}"
        )
    return batch


def _normalise(batch: np.ndarray, device: torch.device) -> Tensor:
    images = torch.from_numpy(np.ascontiguousarray(batch)).to(device).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return (images - mean) / std


def predict_disparity_batch(
    model: PSMNet,
    lefts: Sequence[np.ndarray] | np.ndarray,
    rights: Sequence[np.ndarray] | np.ndarray,
    *,
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> np.ndarray:
    """Left-view disparities (N, H, W) float32 px for N equal-size rectified uint8 RGB pairs, in one pass.

    ``device`` defaults to the model's. ``fp16`` runs under CUDA autocast (CUDA only). Disparity <= 0
    means invalid (``disparity_to_depth`` treats it so).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    model_device = next(model.parameters()).device
    device = model_device if device is None else torch.device(device)
    if device != model_device and not (device.type == model_device.type == "cuda" and device.index is None):
        raise ValueError(f"the model is on {model_device}, not {device}; load it with device={str(device)!r}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision 'fp16' needs a CUDA device, got {device}")
    left, right = _as_batch(lefts, "lefts"), _as_batch(rights, "rights")
    if left.shape != right.shape:
        raise ValueError(f"left and right images differ in shape: {left.shape} vs {right.shape}")
    h, w = left.shape[1:3]
    with torch.inference_mode():
        left_t, top_pad = pad_for_network(_normalise(left, device))
        right_t, _ = pad_for_network(_normalise(right, device))
        fp16 = torch.autocast("cuda", dtype=torch.float16) if precision == "fp16" else nullcontext()
        with fp16:
            disparity = model(left_t, right_t)
        disparity = crop_from_network(disparity, top_pad, h, w)
        return disparity.float().cpu().numpy()


def predict_disparity(
    model: PSMNet,
    left: np.ndarray,
    right: np.ndarray,
    *,
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> np.ndarray:
    """Left-view disparity (H, W) float32 px of one rectified HxWx3 uint8 RGB pair; <= 0 is invalid."""
    return predict_disparity_batch(model, [left], [right], device=device, precision=precision)[0]


def lr_consistency(
    model: PSMNet,
    left: np.ndarray,
    right: np.ndarray,
    max_diff_px: float = 1.0,
    *,
    disparity: np.ndarray | None = None,
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> np.ndarray:
    """Validity mask (H, W) bool of the left-view disparity by a left-right check.

    The right view's disparity is the network run on the mirrored, swapped pair (flip(right) as left,
    flip(left) as right), flipped back. Pass ``disparity`` (the left view's) to skip recomputing it;
    otherwise both views run as one batch of two.
    """
    if max_diff_px < 0:
        raise ValueError(f"max_diff_px must be >= 0, got {max_diff_px}")
    mirrored_left, mirrored_right = right[:, ::-1], left[:, ::-1]
    options = {"device": device, "precision": precision}
    if disparity is None:
        disparity, mirrored = predict_disparity_batch(
            model, [left, mirrored_left], [right, mirrored_right], **options
        )
    else:
        mirrored = predict_disparity(model, mirrored_left, mirrored_right, **options)
    return lr_check_mask(disparity, mirrored[:, ::-1], max_diff_px)


def psmnet_disparity(
    model: PSMNet,
    left: np.ndarray,
    right: np.ndarray,
    *,
    lr_check: float | None = None,
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> tuple[np.ndarray, np.ndarray]:
    """Disparity (float32 px, 0 where invalid) and validity mask, as ``sgbm_disparity`` returns them.

    With ``lr_check`` set, pixels failing the left-right check (see ``lr_consistency``) are invalid too.
    """
    options = {"device": device, "precision": precision}
    disparity = predict_disparity(model, left, right, **options)
    if lr_check is None:
        valid = disparity > 0
    else:
        valid = lr_consistency(model, left, right, lr_check, disparity=disparity, **options)
    disparity[~valid] = 0.0
    return disparity, valid
