"""Validation after every epoch: the student's depth against the held-out drives' labels.

Two references, both at the shards' full resolution (predictions are upsampled bilinearly, as in
``student.metrics``): the depth labels the run trains on (teacher, bias table applied; no crop,
since they are dense) and, where the label folder has a ``lidar`` stage, the projected LiDAR
(Garg crop for KITTI, none for the rig layout). Pixels count within the run's label depth range.
Metrics are computed per image and averaged over images.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.data import DataLoader

from student.data import LabelDataset, collate_full_res
from student.metrics import MAX_DEPTH, METRIC_NAMES, MIN_DEPTH, evaluate_image


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


__all__ = ["validate"]
