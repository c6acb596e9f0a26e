"""Configuration objects that travel with the work: one per model, one per training run.

``ModelConfig`` says what a student network is (variant, heads, depth space, input size,
normalisation); it is stored in every checkpoint and read back by evaluation, prediction and
export, so none of them has to guess. ``TrainConfig`` holds every training setting; both are
written into the run folder's ``config.json`` (format: docs/training.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from edgedepth.common import IMAGENET_MEAN, IMAGENET_STD, check_choice, check_integer, check_numbers
from edgedepth.student.model.build import build_student
from edgedepth.student.model.depth_code import MAX_LOG_DEPTH, MIN_LOG_DEPTH
from edgedepth.student.model.network import (
    ARCHS,
    DEFAULT_ARCH,
    ENCODER_STYLES,
    MAX_INPUT_SIDE,
    MAX_NUM_CLASSES,
    MIN_LINEAR_DEPTH,
    STRIDE,
    VARIANTS,
    DepthSegStudent,
    check_input_size,
    output_size,
)

DEPTH_SPACES = ("log", "linear")
"""``log``: the depth head predicts G(depth) (paper Sec. III-C); ``linear``: metres (Table II ablation)."""

LEGACY_KITTI_LABEL_RANGE = (1.0, MAX_LOG_DEPTH)
"""The labels' metres of a run on the default log space (KITTI: 1-80 m), for checkpoints without
``trained_range``."""

KERAS_MEAN = KERAS_STD = (0.5, 0.5, 0.5)
"""Keras MobileNetV2's input scaling, x / 127.5 - 1, written as mean and std of x / 255."""


MAX_BATCH_SIZE = 1024
"""Samples per batch and process (train, eval, predict)."""
MAX_TOTAL_STEPS = 10_000_000
"""epochs x iters-per-epoch: 115 days at 1 step/s (the paper's recipe is 20,000)."""
MAX_TRAINED_FRAMES = 100_000_000
"""The most training frames a checkpoint may claim (KITTI's Eigen-Zhou split has 39,810)."""


@dataclass(frozen=True)
class ModelConfig:
    """What a student network is. Sizes are (height, width) in pixels; mean/std are RGB in [0, 1].

    ``arch`` names the decoder (``edgedepth.student.model.network.ARCHS``), ``encoder_style`` the encoder's padding
    and batch-norm convention (``keras`` for the paper's Keras ImageNet weights, whose input
    scaling is mean = std = 0.5), ``depth_range`` the (m, M) metres of the log-depth space G,
    normally the training data's depth range. ``trained_range`` the metres of the labels the
    network was trained on (recorded by training); predictions are clamped into ``output_range``.
    ``trained_frames`` how many frames it was trained on (recorded by training; ``student predict``
    warns when they are few: docs/evaluation.md, "Border stripes").
    """

    variant: str = "L"
    num_classes: int = 19
    seg: bool = True
    depth_space: str = "log"
    input_size: tuple[int, int] = (320, 1056)
    mean: tuple[float, float, float] = tuple(IMAGENET_MEAN)
    std: tuple[float, float, float] = tuple(IMAGENET_STD)
    arch: str = DEFAULT_ARCH
    encoder_style: str = "torchvision"
    depth_range: tuple[float, float] = (MIN_LOG_DEPTH, MAX_LOG_DEPTH)
    trained_range: tuple[float, float] | None = None
    trained_frames: int | None = None

    def __post_init__(self) -> None:
        """Every setting's type and range, before anything is sized by it (a crafted checkpoint
        must never reach an allocation): one ValueError naming the setting."""
        variant = check_choice(self.variant, VARIANTS, "model setting variant", upper=True)
        object.__setattr__(self, "variant", variant)
        check_integer(self.num_classes, 1, MAX_NUM_CLASSES, "model setting num_classes")
        if not isinstance(self.seg, bool):
            raise ValueError(f"model setting seg must be true or false, got {self.seg!r}")
        check_choice(self.depth_space, DEPTH_SPACES, "model setting depth_space")
        check_choice(self.arch, ARCHS, "model setting arch")
        check_choice(self.encoder_style, ENCODER_STYLES, "model setting encoder_style")
        size = check_numbers(self.input_size, 2, "model setting input_size", integer=True)
        for side in size:
            if not 0 < side <= MAX_INPUT_SIDE:
                raise ValueError(
                    f"model setting input_size {list(size)}: each side must be 1..{MAX_INPUT_SIDE} pixels"
                )
        object.__setattr__(self, "input_size", (int(size[0]), int(size[1])))
        object.__setattr__(self, "mean", check_numbers(self.mean, 3, "model setting mean"))
        std = check_numbers(self.std, 3, "model setting std")
        if min(std) <= 0:
            raise ValueError(f"model setting std {list(std)}: every value must be positive")
        object.__setattr__(self, "std", std)
        depth_range = check_numbers(self.depth_range, 2, "model setting depth_range")
        if not 0 < depth_range[0] < depth_range[1]:
            raise ValueError(
                f"model setting depth_range {list(depth_range)}: must be (min, max) metres with 0 < min < max"
            )
        object.__setattr__(self, "depth_range", depth_range)
        if self.trained_range is not None:
            trained = check_numbers(self.trained_range, 2, "model setting trained_range")
            if not 0 <= trained[0] < trained[1]:
                raise ValueError(
                    f"model setting trained_range {list(trained)}: must be (min, max) metres with 0 <= min < max"
                )
            object.__setattr__(self, "trained_range", trained)
        if self.trained_frames is not None:
            frames = check_integer(self.trained_frames, 1, MAX_TRAINED_FRAMES, "model setting trained_frames")
            object.__setattr__(self, "trained_frames", frames)
        check_input_size(*self.input_size)

    @property
    def num_blocks(self) -> int:
        return VARIANTS[self.variant]

    @property
    def stride(self) -> int:
        """Input pixels per output pixel of the variant's last block (2 for L ... 16 for XS)."""
        return 2 ** (5 - self.num_blocks)

    @property
    def output_size(self) -> tuple[int, int]:
        return output_size(self.variant, *self.input_size)

    @property
    def output_range(self) -> tuple[float, float]:
        """The metres predictions are clamped into: ``trained_range``; for a checkpoint without it
        (before it was recorded) the log space's range, which training set to the data's range,
        except the KITTI default 4-80 m, whose labels were 1-80 m (docs/training.md)."""
        if self.trained_range is not None:
            lo, hi = self.trained_range
        elif self.depth_range == (MIN_LOG_DEPTH, MAX_LOG_DEPTH):
            lo, hi = LEGACY_KITTI_LABEL_RANGE
        else:
            lo, hi = self.depth_range
        return max(float(lo), MIN_LINEAR_DEPTH), float(hi)

    def build(self, return_classes: bool = False) -> DepthSegStudent:
        """A randomly initialised network of this configuration, its predictions clamped into
        ``output_range``."""
        model = build_student(
            self.variant,
            num_classes=self.num_classes,
            seg=self.seg,
            depth_space=self.depth_space,
            return_classes=return_classes and self.seg,
            arch=self.arch,
            encoder_style=self.encoder_style,
            depth_range=self.depth_range,
        )
        model.output_range = self.output_range
        return model

    def with_variant(self, variant: str) -> ModelConfig:
        """The same network cut to another (smaller) variant: the detachable decoders."""
        return replace(self, variant=variant)

    def with_size(self, size: tuple[int, int]) -> ModelConfig:
        return replace(self, input_size=size)

    def with_encoder_style(self, style: str) -> ModelConfig:
        """The same network with another encoder convention; ``keras`` also takes Keras's input
        scaling (mean = std = 0.5), ``torchvision`` ImageNet's mean and std."""
        mean, std = (KERAS_MEAN, KERAS_STD) if style == "keras" else (IMAGENET_MEAN, IMAGENET_STD)
        return replace(self, encoder_style=style, mean=tuple(mean), std=tuple(std))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_size"] = list(self.input_size)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        data["depth_range"] = list(self.depth_range)
        data["trained_range"] = list(self.trained_range) if self.trained_range is not None else None
        return data

    @classmethod
    def from_dict(cls, data: Any, source: str = "config") -> ModelConfig:
        """The settings of a file (a checkpoint, config.json); errors name ``source`` and the setting."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: model settings are a {type(data).__name__}, not a mapping")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(map(str, data)) - known)
        if unknown:
            raise ValueError(f"{source}: unknown model settings {', '.join(unknown)}")
        try:
            return cls(**data)
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run; defaults are the paper's recipe (Sec. IV)."""

    labels_dir: str
    out_dir: str
    teacher: str = "psmnet"
    lut: str | None = None
    seg_stage: str | None = "seg"
    epochs: int = 20
    iters_per_epoch: int = 1000
    batch_size: int = 8  # per process; the effective batch is batch_size * world size
    lr: float = 0.01
    lr_decay: float = 0.9
    alpha: float = 0.25
    beta: float = 0.75
    # teacher labels outside [min_depth, max_depth] metres are ignored; None: the data's
    # depth_range_m (rig layout), else 1 and 80 m (KITTI)
    min_depth: float | None = None
    max_depth: float | None = None
    device: str = "cpu"
    amp: bool = False
    workers: int = 2
    encoder_weights: str | None = None
    augment: bool = True
    crop_zoom: float = 1.0  # augmentation: random crops of 1/z of each side, z in [1, crop_zoom]
    # augmentation: train on random windows of this share of each side of the input, at its scale
    window: float = 1.0
    val_drives: tuple[str, ...] | None = None
    val_fraction: float = 0.1
    train_frames: str | None = None  # frame-list files: train / validate on these frames only
    val_frames: str | None = None
    val_max_frames: int = 200  # validate on at most this many held-out frames (seeded, fixed); 0: all
    sync_bn: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        checks = (
            (self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (self.iters_per_epoch >= 1, f"iters per epoch must be at least 1, got {self.iters_per_epoch}"),
            (
                1 <= self.batch_size <= MAX_BATCH_SIZE,
                f"batch size must be 1..{MAX_BATCH_SIZE}, got {self.batch_size}",
            ),
            (
                self.epochs * self.iters_per_epoch <= MAX_TOTAL_STEPS,
                f"--epochs {self.epochs} x --iters-per-epoch {self.iters_per_epoch} = "
                f"{self.epochs * self.iters_per_epoch:,} steps; at most {MAX_TOTAL_STEPS:,}",
            ),
            (self.val_max_frames >= 0, f"val max frames must be 0 (all) or more, got {self.val_max_frames}"),
            (self.lr > 0, f"learning rate must be positive, got {self.lr}"),
            (0 < self.lr_decay <= 1, f"lr decay must be in (0, 1], got {self.lr_decay}"),
            (self.workers >= 0, f"workers must be 0 or more, got {self.workers}"),
            (0 <= self.val_fraction < 1, f"val fraction must be in [0, 1), got {self.val_fraction}"),
            (self.crop_zoom >= 1, f"crop zoom must be at least 1 (1 = no crops), got {self.crop_zoom}"),
            (0 < self.window <= 1, f"window must be in (0, 1] (1 = the whole input), got {self.window}"),
            (
                (self.min_depth is None) == (self.max_depth is None)
                and (self.min_depth is None or 0 <= self.min_depth < self.max_depth),
                f"need both of min depth and max depth, 0 <= min < max, got {self.min_depth} and {self.max_depth}",
            ),
            (
                self.val_drives is None or (self.train_frames is None and self.val_frames is None),
                "give validation drives or frame lists (train/val frames), not both",
            ),
        )
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if self.val_drives is not None:
            object.__setattr__(self, "val_drives", tuple(self.val_drives))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["val_drives"] = list(self.val_drives) if self.val_drives is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if values.get("val_drives") is not None:
            values["val_drives"] = tuple(values["val_drives"])
        return cls(**values)


__all__ = [
    "DEPTH_SPACES",
    "MAX_BATCH_SIZE",
    "MAX_INPUT_SIDE",
    "MAX_NUM_CLASSES",
    "MAX_TOTAL_STEPS",
    "MAX_TRAINED_FRAMES",
    "STRIDE",
    "ModelConfig",
    "TrainConfig",
]
