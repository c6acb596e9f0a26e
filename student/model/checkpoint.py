"""Student checkpoint files: written atomically, read with the toolkit's safe loader.

A checkpoint is a plain dict (tensors, numbers, strings, lists), so ``torch.load(weights_only=True)``
reads it without unpickling any object::

    format          "edgedepth-student"       format_version  2 (1: before ``arch``; read as ``fast``)
    model_config    ModelConfig.to_dict()      model           the network's state dict
    epoch           completed epochs           step            optimiser steps so far
    train_config    TrainConfig.to_dict()      (training checkpoints only, with the keys below)
    optimizer, scheduler, scaler, rng, history, provenance

``load_student`` rebuilds the network from ``model_config`` (optionally cut to a smaller variant)
and is what evaluation, prediction and export use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from edgedepth.common import atomic_writer, check_choice, safe_load
from edgedepth.student.model.config import ModelConfig
from edgedepth.student.model.network import VARIANTS, DepthSegStudent, load_student_weights

FORMAT = "edgedepth-student"
FORMAT_VERSION = 2
LEGACY_ARCH = "fast"
"""Version-1 checkpoints carry no ``arch``: they were trained with the decoder now named ``fast``."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (with the format keys added) to ``path`` atomically: temp file, fsync, rename."""
    with atomic_writer(path) as handle:
        torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **payload}, handle)
    return Path(path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict, once it is known to be a student checkpoint of a readable version."""
    data = safe_load(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path}: not an edgedepth student checkpoint (made by `edgedepth student train`)")
    if data.get("format_version") not in (1, FORMAT_VERSION):
        raise ValueError(
            f"{path}: student checkpoint format version {data.get('format_version')}, "
            f"this edgedepth reads 1 and {FORMAT_VERSION}"
        )
    for key in ("model_config", "model"):
        if not isinstance(data.get(key), dict):
            raise ValueError(f"{path}: student checkpoint without {key!r} (damaged?)")
    check_weights(data["model"], path)
    if data["format_version"] == 1:
        data["model_config"] = {"arch": LEGACY_ARCH, **data["model_config"]}
    return data


def check_weights(state: Any, path: str | Path, what: str = "model") -> None:
    """Refuse a state dict that is not names -> tensors, or whose floating-point tensors (weights
    and buffers alike) hold NaN or inf: such a network would only ever predict NaN."""
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise ValueError(f"{path}: {what} is not a mapping of names to tensors (damaged?)")
    for key, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{path}: {what} entry {key} is a {type(tensor).__name__}, not a tensor")
        if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ValueError(
                f"{path}: tensor {key} holds {bad} NaN or infinite values; the checkpoint is damaged "
                "or its training diverged"
            )


def load_student(
    path: str | Path,
    variant: str | None = None,
    device: str | torch.device = "cpu",
    return_classes: bool = False,
) -> tuple[DepthSegStudent, ModelConfig]:
    """The trained network of a checkpoint in eval mode, and its configuration.

    ``variant`` cuts it to a smaller variant (L -> M, S, XS: the detachable decoders); asking for a
    larger variant than the checkpoint holds is refused with a one-line error.
    """
    data = read_checkpoint(path)
    config = ModelConfig.from_dict(data["model_config"], source=str(path))
    if variant is not None:
        wanted = check_choice(variant, VARIANTS, "variant", upper=True)
        if VARIANTS[wanted] > config.num_blocks:
            raise ValueError(
                f"{path}: holds variant {config.variant} ({config.num_blocks} decoder blocks); "
                f"variant {wanted} needs {VARIANTS[wanted]}"
            )
        config = config.with_variant(wanted)
    model = config.build(return_classes=return_classes)
    try:
        load_student_weights(model, data["model"])
    except ValueError as err:
        raise ValueError(f"{path}: {str(err).removeprefix('state dict: ')}") from None
    return model.to(device).eval(), config


__all__ = ["FORMAT", "FORMAT_VERSION", "check_weights", "load_student", "read_checkpoint", "save_checkpoint"]
