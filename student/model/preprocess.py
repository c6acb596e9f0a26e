"""The student's input contract: an RGB uint8 image -> the normalised network input.

The same function serves training, evaluation, prediction and export calibration, so a model
always sees what it was trained on; mean and std come from the model's config.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from edgedepth.common import IMAGENET_MEAN, IMAGENET_STD

MEAN, STD = np.float32(IMAGENET_MEAN), np.float32(IMAGENET_STD)


def preprocess_image(image: np.ndarray, size: tuple[int, int], mean=MEAN, std=STD) -> torch.Tensor:
    """An RGB uint8 image (H,W,3) -> the network input (3,h,w) float32 at ``size`` = (h, w).

    Area resampling, then ``(x / 255 - mean) / std``: the same for training, evaluation, prediction
    and export calibration, so a model always sees what it was trained on.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
    height, width = size
    resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    return normalise(resized.astype(np.float32) / 255.0, mean, std)


def normalise(image01: np.ndarray, mean=MEAN, std=STD) -> torch.Tensor:
    normalised = (image01 - np.float32(mean)) / np.float32(std)
    return torch.from_numpy(np.ascontiguousarray(normalised.transpose(2, 0, 1), dtype=np.float32))


__all__ = ["normalise", "preprocess_image"]
