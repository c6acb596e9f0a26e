"""Validation after every epoch: the student's depth against held-out labels, at the training size.

Which frames: at most ``val_max_frames`` of the held-out frames (``validation_subset``: a seeded
choice, the same frames every epoch and after a resume; 0 = all), so an epoch's validation costs
the same at 1,000 and at 40,000 frames. At what size: the training input size, as the loss sees
the labels (depth labels and LiDAR resized with nearest neighbour, never blended; for LiDAR that
keeps the points that land on a sampled pixel). Two references: the depth labels the run trains
on (teacher, bias table applied; no crop, since they are dense) and, where the label folder has a
``lidar`` stage, the projected LiDAR (Garg crop for KITTI, none for the rig layout). Pixels count
within the run's label depth range. Metrics are computed per image and averaged over images. These
are for choosing ``best.pt`` and watching a run; the full-resolution figures of the paper's
protocol are ``edgedepth student eval``'s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from edgedepth.student.evaluate import MAX_DEPTH, METRIC_NAMES, MIN_DEPTH, evaluate_image
from edgedepth.student.train.data import LabelDataset, collate_full_res

VAL_SUBSET_KEY = 0x7A1
"""Mixed into the run's seed for the choice of validation frames (independent of the sample order)."""


def validation_subset(frame_ids: Sequence[str], max_frames: int, seed: int) -> list[str]:
    """At most ``max_frames`` of ``frame_ids`` (0: all), drawn by ``seed``, kept in their given order:
    a pure function of its arguments, so every epoch and every resume validates the same frames."""
    if max_frames < 0:
        raise ValueError(f"--val-max-frames must be 0 (all) or more, got {max_frames}")
    if max_frames == 0 or len(frame_ids) <= max_frames:
        return list(frame_ids)
    rng = np.random.default_rng([seed, VAL_SUBSET_KEY])
    picked = np.sort(rng.choice(len(frame_ids), size=max_frames, replace=False))
    return [frame_ids[i] for i in picked]


def validate(
    model: nn.Module,
    dataset: LabelDataset,
    device: torch.device,
    batch_size: int = 4,
    workers: int = 0,
    depth_range: tuple[float, float] = (MIN_DEPTH, MAX_DEPTH),
    lidar_crop: str = "garg",
) -> dict[str, float]:
    """``{"val_teacher/<metric>": ..., "val_lidar/<metric>": ...}`` (NaN where no image had labels)."""
    lo, hi = max(float(depth_range[0]), MIN_DEPTH), float(depth_range[1])
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_full_res, num_workers=workers)
    totals = {"val_teacher": dict.fromkeys(METRIC_NAMES, 0.0), "val_lidar": dict.fromkeys(METRIC_NAMES, 0.0)}
    counts = {"val_teacher": 0, "val_lidar": 0}
    try:
        with torch.inference_mode():
            for batch in loader:
                depth = model(batch["image"].to(device)).float().cpu().numpy()[:, 0]
                for i, pred in enumerate(depth):
                    refs = [("val_teacher", batch["depth"][i], "none")]
                    if "lidar" in batch:
                        refs.append(("val_lidar", batch["lidar"][i], lidar_crop))
                    for name, gt, crop in refs:
                        errors = evaluate_image(pred, gt.numpy(), crop=crop, min_depth=lo, max_depth=hi)
                        if errors is not None:
                            counts[name] += 1
                            for key in METRIC_NAMES:
                                totals[name][key] += errors[key]
    finally:
        model.train(was_training)
    out: dict[str, float] = {}
    for name, sums in totals.items():
        if name == "val_lidar" and not dataset.lidar:
            continue
        for key in METRIC_NAMES:
            out[f"{name}/{key}"] = sums[key] / counts[name] if counts[name] else math.nan
    return out


__all__ = ["VAL_SUBSET_KEY", "validate", "validation_subset"]
