"""``edgedepth student ablate``: the paper's Table I / III experiments on your own data.

Trains a set of configurations (``CONFIGS``: each changes one choice of the base recipe) on the same
label folder, ``seeds`` times each, and scores every run on held-out ground truth
(``student.evaluate``), plain and per-frame median-scaled. Reference rows come from the same run:
a constant depth (the training labels' median), the per-frame ground-truth median (what
median-scaling a constant gives), and the teacher itself on the held-out frames, with and
without the bias table. The report (``student.ablate_report``) gives mean +- 95 % CI over seeds.

Layout of ``EXP``::

    settings.json                     the experiment's settings (a rerun must match them)
    lut.json                          the bias table, fitted on the training frames only
    runs/<config>/seed<k>/            a ``student train`` run folder + heldout.json, heldout_median.json
    runs/<config>/speed.json          params, multiply-adds, ONNX Runtime fps of its L export
    references.json                   the reference rows
    table.md, table.csv, results.json, ablation.png

A finished run (both held-out files present) is never retrained; an interrupted one resumes
from its last epoch. Under torchrun every run trains data-parallel; rank 0 evaluates and writes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from labelgen.atomic import write_text_atomic
from labelgen.devices import resolve_device
from labelgen.folder import LabelFolder
from student.ablate_report import write_report
from student.config import ModelConfig, TrainConfig
from student.data import split_by_frames
from student.eval_frames import EvalSet
from student.evaluate import score_constant, score_teacher

Log = Callable[[str], None]


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


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def _saved_budget(out: Path, settings: AblateSettings) -> dict[str, Any] | None:
    """The budget an earlier start of this experiment picked; refuses other settings (one line)."""
    path = out / "settings.json"
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    old, mine = saved.get("requested", {}), settings.to_dict()
    for key in sorted(set(old) | set(mine)):
        if key in ("configs", "out_dir", "workers") or old.get(key) == mine.get(key):
            continue
        raise ValueError(
            f"{path}: the experiment was started with {key}={old.get(key)!r}, now {mine.get(key)!r}; "
            "rerun with the same settings or use another --out"
        )
    return saved.get("budget")


def run_ablation(settings: AblateSettings, progress: bool = True, log: Log = tqdm.write) -> dict[str, Any]:
    """Run (or resume) the experiment; returns results.json's content. See the module docstring."""
    from student.ablate_runs import (
        Budget,
        fit_training_lut,
        label_median,
        measure_speed,
        pick_budget,
        run_one,
    )
    from student.distributed import barrier, broadcast_object, from_environment, init_distributed, shutdown

    out = Path(settings.out_dir)
    folder = LabelFolder(settings.labels_dir)
    eval_set = EvalSet(settings.eval_root, settings.eval_frames)
    train_ids, _ = split_by_frames(folder.plan, settings.train_frames, settings.val_frames)
    leaked = sorted({f.frame_id for f in eval_set.frames} & set(train_ids))
    if leaked:
        raise ValueError(
            f"{settings.eval_root}: {len(leaked)} held-out frame(s) also in the training frames (first: {leaked[0]}); "
            "pass --train-frames without them"
        )
    configs, notes = available_configs(settings, folder)
    if not configs:
        raise ValueError("no configuration can run on this label folder: " + "; ".join(notes))
    main = from_environment().is_main
    device_type = "cuda" if resolve_device(settings.device).startswith("cuda") else "cpu"
    info = init_distributed(device_type)
    try:
        budget = None
        if main:
            saved = _saved_budget(out, settings)
            runs = len(configs) * settings.seeds
            budget = Budget(**saved) if saved else pick_budget(settings, folder, runs, log)
            log(budget.describe())
            _write_json(
                out / "settings.json",
                {"requested": settings.to_dict(), "budget": asdict(budget), "configs": configs},
            )
            for note in notes:
                log(note)
        budget = broadcast_object(budget, info)
        settings = replace(settings, size=budget.size, epochs=budget.epochs, iters_per_epoch=budget.iters)
        lut = settings.lut
        if "teacher_lut" in configs and lut is None:
            lut = str(out / "lut.json")
            if main and not Path(lut).is_file():
                fit_training_lut(folder, settings.teacher, train_ids, lut, progress)
            barrier(info)
        runs = [(config, seed) for seed in range(settings.seeds) for config in configs]
        _train_and_score(settings, runs, budget, lut, eval_set, main, info, progress, log, run_one)
        if not main:
            return {}
        speeds = {c: measure_speed(settings, c, eval_set) for c in configs}
        references = _references(settings, folder, eval_set, train_ids, lut, label_median)
        _write_json(out / "references.json", references)
        return write_report(out, settings, budget, configs, speeds, references, notes)
    finally:
        barrier(info)
        shutdown(info)


def _train_and_score(settings, runs, budget, lut, eval_set, main, info, progress, log, run_one) -> None:
    """Every (config, seed) run, skipping finished ones; progress with configuration, seed and ETA."""
    out = Path(settings.out_dir)
    todo = [(c, s) for c, s in runs if not (out / "runs" / c / f"seed{s}" / "heldout_median.json").is_file()]
    if main and len(todo) < len(runs):
        log(f"{len(runs) - len(todo)} of {len(runs)} runs already finished: reused")
    bar = tqdm(total=len(runs), initial=len(runs) - len(todo), unit="run", disable=not (progress and main))
    spent: list[float] = []
    try:
        for config, seed in todo:
            eta = budget.run_seconds if not spent else sum(spent) / len(spent)
            bar.set_description(f"{config} seed {seed}")
            bar.set_postfix_str(f"ETA {eta * (len(todo) - len(spent)) / 60:.0f} min")
            started = time.perf_counter()
            run_one(settings, config, seed, lut, eval_set, main, info, progress, log)
            spent.append(time.perf_counter() - started)
            bar.update(1)
    finally:
        bar.close()


def _references(settings, folder, eval_set, train_ids, lut, label_median) -> dict[str, Any]:
    """The reference rows: constant depth, per-frame GT median, teacher (with / without table)."""
    median = label_median(folder, settings.teacher, train_ids)
    rows: dict[str, Any] = {
        "constant": {
            "label": f"constant depth: the training labels' median ({median:.3f} m)",
            "value_m": median,
            "plain": score_constant(eval_set, median).to_dict(),
            "median": score_constant(eval_set, median, median_scaling=True).to_dict(),
        }
    }
    held_in_folder = {f.frame_id for f in eval_set.frames} & set(folder.plan.frame_ids)
    teacher = settings.teacher
    tables = [("teacher", None, f"the teacher ({teacher}) on the held-out frames")]
    if lut and Path(lut).is_file():
        tables.append(("teacher_lut", lut, f"the teacher ({teacher}) + bias table on the held-out frames"))
    for key, table, label in tables:
        if not held_in_folder:
            rows[key] = {"label": label, "missing": "the held-out frames are not in the label folder"}
            continue
        rows[key] = {
            "label": label,
            **{
                name: score_teacher(folder, teacher, eval_set, scaled, progress=False, lut=table).to_dict()
                for name, scaled in (("plain", False), ("median", True))
            },
        }
    return rows


__all__ = ["CONFIGS", "Ablation", "AblateSettings", "available_configs", "run_ablation", "run_configs"]
