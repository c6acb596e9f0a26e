"""The depth + segmentation student: network, losses, metrics, training, evaluation, prediction.

The package face; modules may move, these names stay::

    build_student, ModelConfig, TrainConfig         the network and its settings  (model, config)
    MultiScaleLoss, evaluate_depth                  loss and KITTI metrics        (losses, metrics)
    LabelDataset                                    training samples              (data)
    load_student                                    checkpoints                   (checkpoint)
    student.train.train                             training (its module's name is taken)
    evaluate_checkpoint, predict_images             Eigen evaluation, prediction  (evaluate, predict)

Heavy entry points are imported on first use, so ``import student`` stays light.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_HOMES = {
    "build_student": "student.model",
    "ModelConfig": "student.config",
    "TrainConfig": "student.config",
    "MultiScaleLoss": "student.losses",
    "evaluate_depth": "student.metrics",
    "LabelDataset": "student.data",
    "load_student": "student.checkpoint",
    "evaluate_checkpoint": "student.evaluate",
    "predict_images": "student.predict",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'student' has no attribute {name!r}")
    return getattr(import_module(_HOMES[name]), name)
