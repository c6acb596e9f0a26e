"""Everything a training run carries from step to step, and its checkpoint form.

``TrainState`` holds the network, Adam, the learning-rate schedule, the AMP scaler, the metrics
history, the per-step losses, the best epoch so far and the counters; ``payload`` turns it into the
plain dict a checkpoint stores (with the RNG states), ``restore`` puts a checkpoint back.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from student.config import ModelConfig, TrainConfig


@dataclass
class TrainState:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    history: list[dict[str, float]] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"metric": "", "value": math.inf, "epoch": 0})
    epoch: int = 0  # completed epochs
    step: int = 0  # optimiser steps taken

    @classmethod
    def create(cls, model: nn.Module, config: TrainConfig, device: torch.device) -> TrainState:
        """Adam at ``lr``, the rate multiplied by ``lr_decay`` after every epoch (paper Sec. IV)."""
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.lr_decay)
        scaler = torch.amp.GradScaler(device.type, enabled=config.amp and device.type == "cuda")
        return cls(model, optimizer, scheduler, scaler)

    def update_best(self, row: dict[str, float]) -> bool:
        """Record ``row`` (this epoch's metrics) if it is the best so far; True when it is."""
        metric, value = best_metric(row)
        if value < self.best["value"] or self.best["metric"] != metric:
            self.best = {"metric": metric, "value": value, "epoch": int(row["epoch"])}
            return True
        return False

    def payload(self, config: TrainConfig, model_config: ModelConfig) -> dict[str, Any]:
        """The checkpoint dict (plain types and tensors only: it loads with weights_only=True)."""
        return {
            "model_config": model_config.to_dict(),
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "epoch": self.epoch,
            "step": self.step,
            "train_config": config.to_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "history": self.history,
            "step_losses": self.step_losses,
            "best": self.best,
        }

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Continue from a checkpoint written by ``payload``."""
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        set_rng_state(checkpoint["rng"])
        self.history, self.step_losses = list(checkpoint["history"]), list(checkpoint["step_losses"])
        self.best = dict(checkpoint["best"])
        self.epoch, self.step = int(checkpoint["epoch"]), int(checkpoint["step"])


def best_metric(row: dict[str, float]) -> tuple[str, float]:
    """What best.pt is chosen by: validation RMSE vs LiDAR, else vs teacher, else training loss."""
    for key in ("val_lidar/rmse", "val_teacher/rmse"):
        if key in row and not math.isnan(row[key]):
            return key, row[key]
    return "train/total", row["train/total"]


def rng_state() -> dict[str, Any]:
    """torch (CPU and CUDA), NumPy and Python RNG states as plain types and tensors."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "gauss": [has_gauss, cached],
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    numpy = state["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["pos"], *numpy["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


__all__ = ["TrainState", "best_metric", "rng_state", "set_rng_state"]
