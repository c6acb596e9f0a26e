"""The pieces of ``student ablate`` that touch data and models: the CPU budget, one training run and
its held-out scores, a configuration's speed, the training labels' median and the bias table.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgedepth.labelgen import LabelFolder, read_image
from edgedepth.student.ablate.configs import run_configs
from edgedepth.student.train import BEST, CONFIG_FILE, LAST

MIN_STEPS = 300
"""A budget run gets at least this many optimiser steps: the largest input size that allows them is
picked. On the Middlebury validation scenes 300 steps at 224x192 scored as 600 at 160x128
(docs/experiments.md)."""
DEFAULT_WIDTH = 224  # the input width without a budget or a size (the height follows the data)
WIDTHS = (448, 384, 320, 288, 256, 224, 192, 160, 128)
"""Input widths a budget tries, largest first; the height follows the data's aspect ratio."""
EPOCHS = 4  # a budget run's steps are split into this many epochs (the learning rate decays between)
OVERHEAD_S = 20.0  # per run: data loader start, validation, held-out scoring, checkpoints
PROBE_STEPS = 3


@dataclass(frozen=True)
class Budget:
    """Input size, epochs and steps per epoch of every run, and the seconds one run is expected to take."""

    size: tuple[int, int]
    epochs: int
    iters: int
    run_seconds: float
    reason: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))

    def describe(self) -> str:
        return (
            f"runs at {self.size[1]}x{self.size[0]}, {self.epochs} epochs x {self.iters} steps "
            f"(about {self.run_seconds / 60:.1f} min each): {self.reason}"
        )


def data_shape(folder: LabelFolder) -> tuple[float, int]:
    """(height / width, width in px) of the folder's images: frame-weighted medians over shards."""
    sizes = [s.image_size for s in folder.plan.shards for _ in s.frame_ids if min(s.image_size) > 0]
    if not sizes:
        raise ValueError(f"{folder.given}: the plan records no image size")
    return float(np.median([h / w for h, w in sizes])), int(np.median([w for _, w in sizes]))


def size_for(width: int, aspect: float) -> tuple[int, int]:
    """(height, width) of a network input of ``width`` px with the data's aspect, multiples of 32."""
    return max(32, int(round(width * aspect / 32)) * 32), width


def step_seconds(settings: Any, size: tuple[int, int], seg: bool) -> float:
    """Seconds of one optimiser step of L at ``size`` with the settings' batch and device (probed)."""
    from edgedepth.student.model import ModelConfig
    from edgedepth.student.train import MultiScaleLoss

    device = torch.device("cuda" if settings.device.startswith("cuda") else "cpu")
    model = ModelConfig(input_size=size, seg=seg).build().to(device).train()
    optimiser = torch.optim.Adam(model.parameters(), 1e-3)
    loss_fn = MultiScaleLoss()
    images = torch.rand(settings.batch_size, 3, *size, device=device)
    depth = torch.rand(settings.batch_size, *size, device=device) * 70 + 5
    labels = torch.randint(0, 19, (settings.batch_size, *size), device=device) if seg else None
    times = []
    for _ in range(PROBE_STEPS + 1):
        started = time.perf_counter()
        loss = loss_fn(model(images), depth, labels).total
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return float(np.median(times[1:]))


def pick_budget(settings: Any, folder: LabelFolder, runs: int, log: Callable[[str], None] | None) -> Budget:
    """The size and steps of every run: the settings' own without a budget; with
    ``budget_minutes``, the largest input (``WIDTHS``, no wider than the images) whose probed step
    time allows ``MIN_STEPS`` steps per run within ``budget_minutes / runs`` (less ``OVERHEAD_S``),
    and as many steps as fit."""
    aspect, image_width = data_shape(folder)
    seg = folder.has_stage("seg")
    if settings.budget_minutes is None:
        size = settings.size or size_for(DEFAULT_WIDTH, aspect)
        steps = settings.epochs * settings.iters_per_epoch
        seconds = step_seconds(settings, size, seg) * steps + OVERHEAD_S
        return Budget(
            size, settings.epochs, settings.iters_per_epoch, seconds, "as set (no --budget-minutes)"
        )
    per_run = settings.budget_minutes * 60.0 / runs - OVERHEAD_S
    if per_run <= 0:
        raise ValueError(f"--budget-minutes {settings.budget_minutes:g} leaves no time for {runs} runs")
    widths = [settings.size[1]] if settings.size else [w for w in WIDTHS if w <= image_width] or [WIDTHS[-1]]
    for width in widths:
        size = settings.size or size_for(width, aspect)
        seconds = step_seconds(settings, size, seg)
        if log:
            log(
                f"budget probe: {size[1]}x{size[0]} takes {seconds:.2f} s per step of batch {settings.batch_size}"
            )
        steps = int(per_run / seconds)
        if steps >= MIN_STEPS or width == widths[-1]:
            iters = max(1, steps // EPOCHS)
            reason = f"{settings.budget_minutes:g} min for {runs} runs, {seconds:.2f} s per step" + (
                "" if steps >= MIN_STEPS else f"; fewer than {MIN_STEPS} steps fit even at the smallest size"
            )
            return Budget(size, EPOCHS, iters, EPOCHS * iters * seconds + OVERHEAD_S, reason)
    raise AssertionError("unreachable: the last width always returns")


def run_one(settings, config, seed, lut, eval_set, main, info, progress, log) -> None:
    """Train (or resume) one run, then score its checkpoint on the held-out frames (rank 0)."""
    from edgedepth.student.evaluate import evaluate_checkpoint
    from edgedepth.student.train import barrier, train

    train_config, model_config = run_configs(settings, config, seed, settings.size, lut)
    run_dir = Path(train_config.out_dir)
    resume = (run_dir / CONFIG_FILE).is_file()
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "train.log", "a") as handle:
        train(
            train_config,
            model_config,
            resume=resume,
            progress=False,
            log=lambda line: print(line, file=handle),
        )
    if main:
        checkpoint = run_dir / (BEST if settings.val_frames else LAST)
        device = "cuda" if settings.device.startswith("cuda") else "cpu"
        for name, scaled in (("heldout.json", False), ("heldout_median.json", True)):
            result = evaluate_checkpoint(
                checkpoint, eval_set.root, split=settings.eval_frames, device=device,
                progress=False, median_scaling=scaled,
            )  # fmt: skip
            result.save(run_dir / name)
    barrier(info)


def measure_speed(settings: Any, config: str, eval_set: Any) -> dict[str, Any]:
    """Parameters, multiply-adds and ONNX Runtime CPU speed of the configuration's L model (seed 0's
    checkpoint, exported at ``fps_size``), kept in runs/<config>/speed.json."""
    from edgedepth.student.deploy import export_onnx, time_onnx, to_export_input
    from edgedepth.student.model import count_macs, count_parameters, load_student

    folder = Path(settings.out_dir) / "runs" / config
    path = folder / "speed.json"
    if path.is_file():
        return json.loads(path.read_text())
    checkpoint = folder / "seed0" / (BEST if settings.val_frames else LAST)
    model, model_config = load_student(checkpoint)
    size = tuple(settings.fps_size)
    export_onnx(checkpoint, folder / "onnx", ("L",), size, "trt10", ("fp32",), progress=False)
    image = to_export_input(read_image(eval_set.frames[0].image), size, "uint8")
    threads = os.cpu_count() or 1
    timing = time_onnx(folder / "onnx" / "student_L_trt10_fp32.onnx", image, threads, repeats=30, warmup=5)
    speed = {
        "params": count_parameters(model),
        "macs": count_macs(model, size),
        "macs_1056x320": count_macs(model, (320, 1056)),
        "fps": timing["fps"],
        "latency_ms": timing["latency_ms"],
        "p10_ms": timing["p10_ms"],
        "p90_ms": timing["p90_ms"],
        "size": list(size),
        "threads": threads,
        "backend": "onnxruntime CPU, FP32",
        "arch": model_config.arch,
    }
    path.write_text(json.dumps(speed, indent=2) + "\n")
    return speed


def label_range(folder: LabelFolder) -> tuple[float, float]:
    """The metres a run keeps of the labels: the data's declared range, else KITTI's 1-80 m."""
    from edgedepth.student.train import KITTI_LABEL_RANGE

    return folder.plan.depth_range() or KITTI_LABEL_RANGE


PIXELS_PER_FRAME = 200_000  # the median reads at most this many label pixels per frame (a fixed draw)


def label_median(folder: LabelFolder, stage: str, frame_ids: Sequence[str]) -> float:
    """Median of the ``stage`` depth labels of ``frame_ids`` within the label range (metres): every
    valid pixel, or a fixed random draw of ``PIXELS_PER_FRAME`` of them in larger frames."""
    from edgedepth.labelgen import LabelReader

    lo, hi = label_range(folder)
    reader = LabelReader(folder, [stage])
    wanted, ok = set(frame_ids), reader.all_ok()
    values = []
    try:
        for row, frame_id in enumerate(reader.frame_ids):
            if frame_id not in wanted or not ok[row]:
                continue
            depth = np.asarray(reader[row][f"{stage}/depth"], dtype=np.float32).ravel()
            kept = depth[np.isfinite(depth) & (depth > lo) & (depth <= hi)]
            if kept.size > PIXELS_PER_FRAME:
                kept = np.random.default_rng(row).choice(kept, PIXELS_PER_FRAME, replace=False)
            values.append(kept)
    finally:
        reader.close()
    if not values or not sum(v.size for v in values):
        raise ValueError(f"{folder.given}: no {stage} label within {lo:g}-{hi:g} m in the training frames")
    return float(np.median(np.concatenate(values)))


def fit_training_lut(
    folder: LabelFolder, teacher: str, frame_ids: Sequence[str], out: str, progress: bool
) -> None:
    """The bias table of ``teacher`` against the LiDAR, fitted on the training frames only (never on
    held-out ones), with 16 bins over a declared depth range or KITTI's 1 m bins over 1-80 m, and the
    per-bin median error (the mean is pulled by a stereo teacher's occlusion outliers)."""
    from edgedepth.calib import fit_from_labels

    lo, hi = label_range(folder)
    declared = folder.plan.depth_range() is not None
    bin_width = (hi - lo) / 16 if declared else 1.0
    lut = fit_from_labels(
        folder, teacher, holdout=0.0, frames=frame_ids, bin_width=bin_width, min_depth=lo, max_depth=hi,
        stat="median", progress=progress,
    )  # fmt: skip
    lut.save(out)


__all__ = [
    "Budget",
    "data_shape",
    "fit_training_lut",
    "label_median",
    "measure_speed",
    "pick_budget",
    "run_one",
    "size_for",
    "step_seconds",
]
