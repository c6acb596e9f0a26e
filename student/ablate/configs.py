"""The ablation's configurations (``CONFIGS``: each changes one choice of the base recipe) and the
experiment's settings (``AblateSettings``, saved as ``settings.json``); what one run trains with
(``run_configs``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from edgedepth.labelgen import LabelFolder
from edgedepth.student.model import ModelConfig, TrainConfig


@dataclass(frozen=True)
class Ablation:
    """One row of the experiment: what it changes from the base recipe, and what it needs."""

    name: str
    label: str
    changes: dict[str, Any]
    needs: str = ""  # "seg": segmentation labels; "encoder": --encoder-weights; "lidar": a lidar stage


CONFIGS: dict[str, Ablation] = {
    a.name: a
    for a in (
        Ablation("lidar", "sparse LiDAR labels (Table I row 1)", {"teacher": "lidar"}, "lidar"),
        Ablation("teacher", "teacher labels (the base)", {}),
        Ablation("teacher_lut", "teacher + bias table (Table I row 3)", {"lut": True}, "lidar"),
        Ablation("linear", "linear depth instead of log (Table II)", {"depth_space": "linear"}),
        Ablation("depth_only", "depth only, no segmentation (Table III)", {"seg": False}, "seg"),
        Ablation("random_init", "random encoder instead of ImageNet", {"encoder_weights": None}, "encoder"),
        Ablation("fast", "the speed-tuned decoder (--arch fast)", {"arch": "fast"}),
    )
}
"""Configurations in table order; the base uses teacher labels, log depth, segmentation when the
folder has it, the paper's decoder, and the ImageNet encoder when one is given."""


@dataclass(frozen=True)
class AblateSettings:
    """Everything that decides the experiment's numbers (saved as settings.json)."""

    labels_dir: str
    eval_root: str
    out_dir: str
    teacher: str = "psmnet"
    configs: tuple[str, ...] = tuple(CONFIGS)
    seeds: int = 3
    size: tuple[int, int] | None = None  # (h, w); None: picked by the budget, else DEFAULT_WIDTH wide
    epochs: int = 4
    iters_per_epoch: int = 75
    batch_size: int = 8
    lr: float = 1e-3
    lr_decay: float = 0.7
    crop_zoom: float = 1.0
    train_frames: str | None = None
    val_frames: str | None = None
    eval_frames: str | None = None
    encoder_weights: str | None = None
    lut: str | None = None  # None: fitted on the training frames when teacher_lut runs
    budget_minutes: float | None = None
    device: str = "cpu"
    workers: int = 2
    fps_size: tuple[int, int] = (320, 480)  # Table VI's input size

    def __post_init__(self) -> None:
        unknown = [c for c in self.configs if c not in CONFIGS]
        if unknown:
            raise ValueError(f"unknown configuration {unknown[0]!r}; choose from {', '.join(CONFIGS)}")
        if not self.configs:
            raise ValueError(f"no configuration given; choose from {', '.join(CONFIGS)}")
        checks = (
            (self.seeds >= 1, f"seeds must be at least 1, got {self.seeds}"),
            (self.budget_minutes is None or self.budget_minutes > 0, "the budget must be positive minutes"),
            (self.crop_zoom >= 1, f"crop zoom must be at least 1, got {self.crop_zoom}"),
        )
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("configs", "size", "fps_size"):
            data[key] = list(data[key]) if data[key] is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AblateSettings:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("configs", "size", "fps_size"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(**values)


def available_configs(settings: AblateSettings, folder: LabelFolder) -> tuple[list[str], list[str]]:
    """(configurations to run, notes on the ones left out and why)."""
    have = {
        "seg": folder.has_stage("seg"),
        "encoder": settings.encoder_weights is not None,
        "lidar": folder.has_stage("lidar"),
        "": True,
    }
    why = {
        "seg": "the label folder has no seg stage",
        "encoder": "no --encoder-weights given",
        "lidar": "the label folder has no lidar stage",
    }
    run = [c for c in settings.configs if have[CONFIGS[c].needs]]
    notes = [f"{c}: left out, {why[CONFIGS[c].needs]}" for c in settings.configs if c not in run]
    return run, notes


def run_configs(settings: AblateSettings, config: str, seed: int, size: tuple[int, int], lut: str | None):
    """The TrainConfig and ModelConfig of one run (``config`` at ``seed``)."""
    changes = CONFIGS[config].changes
    run_dir = Path(settings.out_dir) / "runs" / config / f"seed{seed}"
    train = TrainConfig(
        labels_dir=settings.labels_dir,
        out_dir=str(run_dir),
        teacher=changes.get("teacher", settings.teacher),
        lut=lut if changes.get("lut") else None,
        seg_stage="seg" if changes.get("seg", True) else None,
        epochs=settings.epochs,
        iters_per_epoch=settings.iters_per_epoch,
        batch_size=settings.batch_size,
        lr=settings.lr,
        lr_decay=settings.lr_decay,
        device=settings.device,
        workers=settings.workers,
        encoder_weights=changes.get("encoder_weights", settings.encoder_weights),
        crop_zoom=settings.crop_zoom,
        train_frames=settings.train_frames,
        val_frames=settings.val_frames,
        val_fraction=0.0,
        seed=seed,
    )
    model = ModelConfig(
        variant="L",
        seg=changes.get("seg", True),
        depth_space=changes.get("depth_space", "log"),
        input_size=size,
        arch=changes.get("arch", "paper"),
    )
    return train, model


__all__ = ["CONFIGS", "Ablation", "AblateSettings", "available_configs", "run_configs"]
