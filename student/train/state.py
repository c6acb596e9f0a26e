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

from edgedepth.student.model import ModelConfig, TrainConfig


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

    def restore(self, checkpoint: dict[str, Any], source: str = "checkpoint") -> None:
        """Continue from a checkpoint written by ``payload``; anything missing or malformed is one
        ValueError naming ``source`` and the part (checked before any of it is applied)."""
        _check_layout(checkpoint, source)
        self._restore_model(checkpoint["model"], source)
        fresh_scheduler, fresh_scaler = self.scheduler.state_dict(), self.scaler.state_dict()
        _check_like(checkpoint["scheduler"], fresh_scheduler, f"{source}: scheduler")
        # an AMP scaler is on only on CUDA: a run resumed on another device starts its loss scale afresh
        carry_scaler = bool(checkpoint["scaler"]) and bool(fresh_scaler)
        if carry_scaler:
            _check_like(checkpoint["scaler"], fresh_scaler, f"{source}: scaler")
        try:
            self.optimizer.load_state_dict(checkpoint["optimizer"])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as err:
            raise ValueError(f"{source}: optimizer state does not fit this model ({_reason(err)})") from None
        self._check_optimizer(source)
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        if carry_scaler:
            self.scaler.load_state_dict(checkpoint["scaler"])
        try:
            set_rng_state(checkpoint["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as err:
            raise ValueError(f"{source}: rng: not a random-number-generator state ({_reason(err)})") from None
        self.history, self.step_losses = list(checkpoint["history"]), list(checkpoint["step_losses"])
        self.best = dict(checkpoint["best"])
        self.epoch, self.step = int(checkpoint["epoch"]), int(checkpoint["step"])

    def _restore_model(self, state: dict[str, Any], source: str) -> None:
        wanted = self.model.state_dict()
        missing = sorted(set(wanted) - set(state))
        extra = sorted(set(state) - set(wanted))
        if missing or extra:
            first = missing[0] if missing else extra[0]
            raise ValueError(
                f"{source}: model holds {len(extra)} unexpected and lacks {len(missing)} of this run's "
                f"tensors (first: {first}); it was trained with other settings"
            )
        for key, tensor in state.items():
            if tuple(tensor.shape) != tuple(wanted[key].shape):
                raise ValueError(
                    f"{source}: model tensor {key} has shape {tuple(tensor.shape)}, this run's is "
                    f"{tuple(wanted[key].shape)}"
                )
        self.model.load_state_dict(state)

    def _check_optimizer(self, source: str) -> None:
        """Adam's moments must match their parameters' shapes and be finite."""
        for group in self.optimizer.param_groups:
            for param in group["params"]:
                for key, value in self.optimizer.state.get(param, {}).items():
                    if not isinstance(value, torch.Tensor):
                        raise ValueError(f"{source}: optimizer state {key} is not a tensor")
                    if key != "step" and tuple(value.shape) != tuple(param.shape):
                        raise ValueError(
                            f"{source}: optimizer state {key} has shape {tuple(value.shape)}, its "
                            f"parameter {tuple(param.shape)}"
                        )
                    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                        raise ValueError(f"{source}: optimizer state {key} holds NaN or infinite values")


_LAYOUT = {
    "model": dict, "optimizer": dict, "scheduler": dict, "scaler": dict, "rng": dict, "history": list,
    "step_losses": list, "best": dict, "epoch": int, "step": int,
}  # fmt: skip
"""What a training checkpoint (``TrainState.payload``) holds: key -> type."""


def _check_layout(checkpoint: dict[str, Any], source: str) -> None:
    for key, kind in _LAYOUT.items():
        value = checkpoint.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            got = "missing" if key not in checkpoint else f"a {type(value).__name__}"
            raise ValueError(
                f"{source}: no training state {key!r} ({got}, expected a {kind.__name__}); "
                "not a checkpoint --resume can continue"
            )
    if checkpoint["epoch"] < 0 or checkpoint["step"] < 0:
        raise ValueError(f"{source}: negative epoch or step counter")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in checkpoint["step_losses"]):
        raise ValueError(f"{source}: step_losses holds something other than numbers")
    if not all(isinstance(row, dict) for row in checkpoint["history"]):
        raise ValueError(f"{source}: history holds something other than rows of metrics")
    best = checkpoint["best"]
    if not (
        isinstance(best.get("metric"), str)
        and isinstance(best.get("value"), int | float)
        and isinstance(best.get("epoch"), int)
    ):
        raise ValueError(f"{source}: best is not {{metric, value, epoch}}")


def _check_like(loaded: Any, fresh: Any, where: str) -> None:
    """``loaded`` has the structure of ``fresh`` (same keys, same kinds of values, finite numbers)."""
    if isinstance(fresh, dict):
        if not isinstance(loaded, dict) or set(loaded) != set(fresh):
            raise ValueError(f"{where}: not a state of this run's kind (keys differ)")
        for key in fresh:
            _check_like(loaded[key], fresh[key], f"{where}.{key}")
    elif isinstance(fresh, list | tuple):
        if not isinstance(loaded, list | tuple) or len(loaded) != len(fresh):
            raise ValueError(f"{where}: not a list of {len(fresh)}")
        for i, (a, b) in enumerate(zip(loaded, fresh, strict=True)):
            _check_like(a, b, f"{where}[{i}]")
    elif isinstance(fresh, bool) or fresh is None or isinstance(fresh, str):
        if type(loaded) is not type(fresh):
            raise ValueError(f"{where}: expected {type(fresh).__name__}, got {type(loaded).__name__}")
    elif isinstance(fresh, int | float):
        if isinstance(loaded, bool) or not isinstance(loaded, int | float) or not math.isfinite(loaded):
            raise ValueError(f"{where}: expected a finite number, got {loaded!r}")


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


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
