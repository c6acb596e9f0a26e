"""Train the student from label shards with the paper's recipe (Sec. IV), on one process or many.

``train(TrainConfig, ModelConfig)``: Adam at ``lr``, the rate multiplied by ``lr_decay`` after every
epoch, ``epochs`` x ``iters_per_epoch`` steps, the multi-scale multi-task loss; validation after
every epoch against the teacher labels and, where the folder has them, the LiDAR; everything is
written into the run folder (``edgedepth.student.train.run_folder``). ``resume=True`` continues from ``last.pt``
exactly as if the run had never stopped: the sample order and augmentations are functions of
(seed, epoch, step) (``edgedepth.student.train.sampler``), and the weights, optimiser, scheduler, AMP scaler and RNG
states are restored.

Started by ``torchrun`` the same function trains with DistributedDataParallel (see
``edgedepth.student.train.distributed``); each rank takes ``batch_size`` samples of every global batch.
One epoch's optimiser steps are ``edgedepth.student.train.epoch``'s.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from edgedepth.calib import load_lut
from edgedepth.common import __version__, keep_freed_memory, resolve_device
from edgedepth.labelgen import LabelFolder
from edgedepth.student.model import (
    ModelConfig,
    TrainConfig,
    load_encoder_weights,
    read_checkpoint,
    save_checkpoint,
)
from edgedepth.student.train import run_folder as rf
from edgedepth.student.train.curves import plot_training_curves
from edgedepth.student.train.data import (
    LabelDataset,
    check_lut,
    find_sources,
    split_by_drive,
    split_by_frames,
    window_size,
)
from edgedepth.student.train.distributed import (
    DistInfo,
    barrier,
    convert_batchnorm,
    from_environment,
    init_distributed,
    reducer_for,
    shutdown,
)
from edgedepth.student.train.epoch import train_epoch
from edgedepth.student.train.losses import MultiScaleLoss
from edgedepth.student.train.sampler import EpochSampler
from edgedepth.student.train.state import TrainState
from edgedepth.student.train.validation import validate, validation_subset

Log = Callable[[str], None]


@dataclass(frozen=True)
class TrainResult:
    """Where a finished run is and how it ended."""

    run_dir: Path
    epochs: int
    steps: int
    best_metric: str
    best_value: float
    history: tuple[dict[str, float], ...]
    rank: int = 0


def _device(name: str, info: DistInfo) -> torch.device:
    """Each torchrun process on CUDA gets the GPU of its LOCAL_RANK."""
    if name == "cuda" and info.enabled:
        name = f"cuda:{info.local_rank}"
    return torch.device(name)


def _settings(config: TrainConfig, model_config: ModelConfig) -> dict[str, Any]:
    """config.json's settings; the model's ``trained_frames`` is known only once the training set
    is read (after the run folder is taken), and the split counts hold it."""
    model = {k: v for k, v in model_config.to_dict().items() if k != "trained_frames"}
    return {"train": config.to_dict(), "model": model}


def encoder_weights_style(path: str | Path) -> str:
    """``keras`` for an HDF5 file (Keras weights), else ``torchvision`` (a PyTorch state dict)."""
    from edgedepth.student.model import is_keras_weights_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: encoder weights file not found")
    return "keras" if is_keras_weights_file(path) else "torchvision"


KITTI_LABEL_RANGE = (1.0, 80.0)
"""Metres of the teacher labels used when the data declares no depth range (KITTI)."""


def resolve_ranges(
    config: TrainConfig, model_config: ModelConfig, data_range: tuple[float, float] | None
) -> tuple[TrainConfig, ModelConfig, str]:
    """Fill in the depth ranges the data decides, and the encoder convention its weights decide.

    Labels: ``--min-depth/--max-depth`` when given, else the data's ``depth_range_m`` (rig layout),
    else 1-80 m. The log-depth space G spans the data's range when it declares one, else the
    paper's 4-80 m. Keras encoder weights switch the model to the Keras encoder style and input
    scaling. Returns both configs and a line saying what was chosen.
    """
    if config.min_depth is None:
        lo, hi = data_range or KITTI_LABEL_RANGE
        config = replace(config, min_depth=float(lo), max_depth=float(hi))
    if data_range is not None:
        model_config = replace(model_config, depth_range=tuple(float(v) for v in data_range))
    model_config = replace(model_config, trained_range=(float(config.min_depth), float(config.max_depth)))
    if config.encoder_weights:
        style = encoder_weights_style(config.encoder_weights)
        if style != model_config.encoder_style:
            model_config = model_config.with_encoder_style(style)
    source = "the data's depth_range_m" if data_range is not None else "KITTI defaults"
    line = (
        f"depth: labels {config.min_depth:g}-{config.max_depth:g} m, log space over "
        f"{model_config.depth_range[0]:g}-{model_config.depth_range[1]:g} m ({source}); "
        f"encoder {model_config.encoder_style}, input mean {model_config.mean} std {model_config.std}"
    )
    return config, model_config, line


def train(
    config: TrainConfig,
    model_config: ModelConfig,
    resume: bool = False,
    progress: bool = True,
    log: Log = tqdm.write,
) -> TrainResult:
    """Train (or resume) a student run into ``config.out_dir``; returns the run's summary."""
    run_dir = Path(config.out_dir)
    main_process = from_environment().is_main  # before the process group exists: torchrun's RANK
    folder = LabelFolder(config.labels_dir)  # one plan read and one status check per shard for the run
    sources = find_sources(folder, config.teacher, config.seg_stage if model_config.seg else None)
    if model_config.seg and sources.seg_stage is None:
        if main_process:
            log(
                f"note: {Path(config.labels_dir) / str(config.seg_stage)} not found: "
                "segmentation loss off, depth only"
            )
        model_config = ModelConfig.from_dict({**model_config.to_dict(), "seg": False})
    config, model_config, ranges_line = resolve_ranges(config, model_config, folder.plan.depth_range())
    lut = load_lut(config.lut) if config.lut else None
    depth_range = (config.min_depth, config.max_depth)
    if lut is not None:
        check_lut(lut, sources, depth_range, name=str(config.lut))
    if config.train_frames or config.val_frames:
        train_ids, val_ids = split_by_frames(sources.plan, config.train_frames, config.val_frames)
        val_drives = sorted({f for f in (config.val_frames,) if f})
    else:
        train_ids, val_ids, val_drives = split_by_drive(sources.plan, config.val_drives, config.val_fraction)
    config = rf.cap_workers(config, log if main_process else None)
    settings = _settings(config, model_config)

    device_name = resolve_device(config.device)
    if device_name == "cpu":
        keep_freed_memory()  # about 2x faster CPU steps at 1056x320 (see edgedepth.common.memory)
    joined = torch.distributed.is_available() and torch.distributed.is_initialized()  # e.g. by ablate
    info = init_distributed("cuda" if device_name.startswith("cuda") else "cpu")
    device = _device(device_name, info)
    created = info.is_main and not run_dir.exists()
    try:
        with contextlib.ExitStack() as held:  # rank 0 holds the run folder's lock until the end
            start_from = rf.take_run_folder(held, run_dir, settings, resume, info)
            common = dict(
                labels_dir=folder,
                teacher=config.teacher,
                seg=sources.seg_stage if model_config.seg else None,
                lut=lut,
                size=model_config.input_size,
                depth_range=depth_range,
                mean=model_config.mean,
                std=model_config.std,
            )
            train_set = LabelDataset(
                **common,
                frame_ids=train_ids,
                augment=config.augment,
                crop_zoom=config.crop_zoom,
                window=config.window,
            )
            # in the checkpoints (student predict warns when few); config.json has it as a split count
            model_config = replace(model_config, trained_frames=len(train_set))
            val_set, held_out = _validation_set(common, val_ids, sources.lidar, config)
            ready = None  # rank 0 writes split.json and config.json once the start has succeeded
            if info.is_main:
                log(_describe(config, info, len(train_set), val_set, held_out, val_drives, model_config))
                log(ranges_line)
                _notes(config, len(train_set), val_ids, log)
                provenance = {
                    **sources.provenance(),
                    "lut": config.lut,
                    "lut_sha256": lut.sha256 if lut is not None else None,
                    "val_drives": val_drives,
                }
                ready = functools.partial(
                    rf.write_run_files, run_dir, settings, provenance, train_set.frame_ids,
                    val_set.frame_ids if val_set else [], held_out, val_drives,
                    {"world_size": info.world_size, "effective_batch": config.batch_size * info.world_size,
                     "versions": {"edgedepth": __version__, "torch": torch.__version__}},
                )  # fmt: skip
            return _fit(
                config, model_config, info, device, train_set, val_set, start_from, progress, log,
                folder.plan.layout, ready,
            )  # fmt: skip
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                run_dir.rmdir()  # a start that failed before writing anything leaves no folder
        raise
    finally:
        if not joined:
            shutdown(info)


def _validation_set(common: dict[str, Any], val_ids: list[str], lidar: bool, config: TrainConfig):
    """(the validation dataset or None, how many usable frames were held out): at most
    ``val_max_frames`` of them (a seeded, fixed choice), at the training input size."""
    if not val_ids:
        return None, 0
    held = LabelDataset(**common, frame_ids=val_ids, lidar=lidar)
    chosen = validation_subset(held.frame_ids, config.val_max_frames, config.seed)
    return held.restricted_to(chosen), len(held)


def _notes(config: TrainConfig, n_train: int, val_ids: list[str], log: Log) -> None:
    """What the run's first lines should warn about."""
    if not val_ids:
        log("note: no validation drives (one drive, or --val-fraction 0): best.pt follows the training loss")
    if config.batch_size > n_train:
        log(
            f"note: --batch-size {config.batch_size} is more than the {n_train} training frames: every "
            "batch repeats frames (each copy with its own augmentation)"
        )


def _describe(config, info, n_train, val_set, held_out, val_drives, model_config) -> str:
    val = "no validation"
    if val_set:
        val = f"{len(val_set)} validation frames ({', '.join(map(str, val_drives))})"
        if held_out > len(val_set):
            val = f"{len(val_set)} of {held_out} held-out frames validated ({', '.join(map(str, val_drives))}; --val-max-frames)"
    augmentation = ""
    if config.augment and config.crop_zoom > 1:
        augmentation += f"; random crops of up to 1/{config.crop_zoom:g} (depth / zoom)"
    if config.augment and config.window < 1:
        height, width = window_size(model_config.input_size, config.window)
        augmentation += f"; trained on random {width}x{height} windows"
    return (
        f"training {model_config.variant} at {model_config.input_size[1]}x{model_config.input_size[0]} "
        f"({'depth + seg' if model_config.seg else 'depth only'}, {model_config.depth_space} depth) on "
        f"{n_train} frames, {val}; {config.epochs} epochs x {config.iters_per_epoch} steps, batch "
        f"{config.batch_size} x {info.world_size} process(es) = effective batch {config.batch_size * info.world_size}"
        + augmentation
    )


def _fit(
    config, model_config, info, device, train_set, val_set, start_from, progress, log, folder_layout,
    ready: Callable[[], object] | None = None,
) -> TrainResult:  # fmt: skip
    run_dir = Path(config.out_dir)
    torch.manual_seed(config.seed)
    model = model_config.build()
    if config.encoder_weights:
        load_encoder_weights(model, config.encoder_weights)
    if info.enabled and config.sync_bn:
        model = convert_batchnorm(model, device)
    state = TrainState.create(model.to(device), config, device)
    if start_from is not None:
        state.restore(read_checkpoint(start_from), str(start_from))
        if info.is_main:
            log(f"resuming {run_dir} after epoch {state.epoch} (step {state.step})")
    if ready is not None:  # the weights and the state are in: the start can no longer fail on input
        ready()
    device_ids = [device.index] if device.type == "cuda" else None
    ddp = DistributedDataParallel(model, device_ids=device_ids) if info.enabled else model
    loss_fn = MultiScaleLoss(
        config.alpha,
        config.beta,
        depth_space=model_config.depth_space,
        reducer=reducer_for(info),
        depth_range=model_config.depth_range,
    )
    sampler = EpochSampler(
        len(train_set), config.iters_per_epoch, config.batch_size, config.seed, info.rank, info.world_size
    )
    loader = DataLoader(
        train_set,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.workers,
        persistent_workers=config.workers > 0,
        pin_memory=device.type == "cuda",
    )
    writer = _tensorboard(run_dir, state.step) if info.is_main else None
    for epoch in range(state.epoch, config.epochs):
        sampler.set_epoch(epoch)
        row = train_epoch(state, ddp, loss_fn, loader, config, info, device, writer, progress)
        state.scheduler.step()
        state.epoch = epoch + 1
        if info.is_main:
            if val_set is not None:
                row.update(
                    validate(
                        model,
                        val_set,
                        device,
                        config.batch_size,
                        config.workers,
                        depth_range=(config.min_depth, config.max_depth),
                        lidar_crop="garg" if folder_layout == "kitti" else "none",
                    )
                )
            state.history.append(row)
            _save_epoch(run_dir, state, state.update_best(row), config, model_config, writer)
            log(_epoch_line(row, state.best))
        barrier(info)
    if writer is not None:
        writer.close()
    best = state.best
    return TrainResult(
        run_dir, config.epochs, state.step, best["metric"], best["value"], tuple(state.history), info.rank
    )


def _save_epoch(run_dir: Path, state: TrainState, improved: bool, config, model_config, writer) -> None:
    """The epoch's checkpoint, last.pt, best.pt when it improved, metrics.csv, curves.png, events."""
    payload = state.payload(config, model_config)
    save_checkpoint(rf.epoch_checkpoint(run_dir, state.epoch), payload)
    if improved:
        save_checkpoint(run_dir / rf.BEST, payload)
    save_checkpoint(run_dir / rf.LAST, payload)
    rf.write_metrics_csv(run_dir / rf.METRICS_FILE, state.history)
    plot_training_curves(state.history, run_dir / rf.CURVES_FILE, step_losses=state.step_losses)
    if writer is not None:
        for key, value in state.history[-1].items():
            if key != "epoch" and not (isinstance(value, float) and math.isnan(value)):
                writer.add_scalar(key, value, state.step)
        writer.flush()


def _tensorboard(run_dir: Path, step: int) -> Any:
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(run_dir / rf.TENSORBOARD_DIR), purge_step=step if step else None)


def _epoch_line(row: dict[str, float], best: dict[str, Any]) -> str:
    parts = [
        f"epoch {int(row['epoch'])}",
        f"loss {row['train/total']:.4f}",
        f"lr {row['lr']:.3g}",
        f"{row['images_per_s']:.1f} img/s",
    ]
    for key in ("val_teacher/rmse", "val_teacher/abs_rel", "val_lidar/rmse", "val_lidar/abs_rel"):
        if key in row and not math.isnan(row[key]):
            parts.append(f"{key} {row[key]:.3f}")
    parts.append(f"best {best['metric']} {best['value']:.4f} (epoch {best['epoch']})")
    return ", ".join(parts)


__all__ = ["TrainResult", "train"]
