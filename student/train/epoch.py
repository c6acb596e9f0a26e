"""One training epoch: the optimiser steps, the loss terms averaged over ranks, the progress bar.

``train_epoch`` runs ``config.iters_per_epoch`` steps of the loader (AMP, gradient scaling) and
returns the epoch's row of metrics.csv; ``edgedepth.student.train.loop`` runs it once per epoch.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from edgedepth.student.model import TrainConfig
from edgedepth.student.train.distributed import DistInfo
from edgedepth.student.train.losses import MultiScaleLoss
from edgedepth.student.train.state import TrainState


def train_epoch(
    state: TrainState,
    ddp: torch.nn.Module,
    loss_fn: MultiScaleLoss,
    loader: DataLoader,
    config: TrainConfig,
    info: DistInfo,
    device: torch.device,
    writer: Any,
    progress: bool,
) -> dict[str, float]:
    """One epoch of optimiser steps; returns its row of metrics.csv (loss terms, lr, speed).

    ``ddp`` is ``state.model``, wrapped in DistributedDataParallel when the run is distributed;
    ``writer`` is a TensorBoard ``SummaryWriter`` (rank 0) or None.
    """
    state.model.train()
    sums: dict[str, float] = {}
    started, seen = time.perf_counter(), 0
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    bar = tqdm(
        loader,
        total=config.iters_per_epoch,
        desc=f"epoch {state.epoch + 1}/{config.epochs}",
        unit="step",
        disable=not (progress and info.is_main),
        dynamic_ncols=True,
    )
    for batch in bar:
        images = batch["image"].to(device, non_blocking=True)
        depth = batch["depth"].to(device, non_blocking=True)
        labels = batch["labels"].to(device, non_blocking=True) if "labels" in batch else None
        with torch.autocast(device.type, dtype=amp_dtype, enabled=config.amp):
            outputs = ddp(images)
        terms = loss_fn(outputs, depth, labels)
        state.optimizer.zero_grad(set_to_none=True)
        state.scaler.scale(terms.total).backward()
        state.scaler.step(state.optimizer)
        state.scaler.update()
        state.step += 1
        values = _global_terms(terms.as_dict(), info, device)
        state.step_losses.append(values["total"])
        for key, value in values.items():
            sums[key] = sums.get(key, 0.0) + value
        seen += images.shape[0] * info.world_size
        bar.set_postfix(_postfix(values, seen / max(time.perf_counter() - started, 1e-9)), refresh=False)
        if writer is not None:
            writer.add_scalar("train_step/total", values["total"], state.step)
    bar.close()
    if seen and not any(v for k, v in sums.items() if k.startswith("depth/")):
        table = f" after the table {config.lut}" if config.lut else ""
        raise ValueError(
            f"{config.labels_dir}: epoch {state.epoch + 1} saw no valid depth label in any training frame "
            f"(teacher {config.teacher}{table}): every label is 0, non-finite or outside the training depth "
            "range; check --teacher, --lut and --min-depth/--max-depth"
        )
    seconds = time.perf_counter() - started
    row = {
        "epoch": state.epoch + 1,
        "step": state.step,
        "lr": state.optimizer.param_groups[0]["lr"],
        "images_per_s": seen / seconds,
        "seconds": seconds,
    }
    row.update({f"train/{k}": v / config.iters_per_epoch for k, v in sums.items()})
    return row


def _global_terms(values: dict[str, float], info: DistInfo, device: torch.device) -> dict[str, float]:
    """Each rank's loss already is the global batch's (see DistributedReducer); average to log it."""
    if not info.enabled:
        return values
    import torch.distributed as dist

    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return dict(zip(keys, (tensor / info.world_size).tolist(), strict=True))


def _postfix(values: dict[str, float], rate: float) -> dict[str, str]:
    depth = sum(v for k, v in values.items() if k.startswith("depth/"))
    seg = sum(v for k, v in values.items() if k.startswith("seg/"))
    out = {"loss": f"{values['total']:.3f}", "depth": f"{depth:.3f}"}
    if any(k.startswith("seg/") for k in values):
        out["seg"] = f"{seg:.3f}"
    out["img/s"] = f"{rate:.1f}"
    return out


__all__ = ["train_epoch"]
