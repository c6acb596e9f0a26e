"""``edgedepth student ablate``: the paper's Table I / III experiments on your own data.

Trains a set of configurations (``CONFIGS``: each changes one choice of the base recipe) on the same
label folder, ``seeds`` times each, and scores every run on held-out ground truth
(``edgedepth.student.evaluate.evaluation``), plain and per-frame median-scaled. Reference rows come from the same run:
a constant depth (the training labels' median), the per-frame ground-truth median (what
median-scaling a constant gives), and the teacher itself on the held-out frames, with and
without the bias table. The report (``edgedepth.student.ablate.report``) gives mean +- 95 % CI over seeds.

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
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from edgedepth.common import resolve_device, write_text_atomic
from edgedepth.labelgen import LabelFolder
from edgedepth.student.ablate.configs import CONFIGS, AblateSettings, available_configs, run_configs
from edgedepth.student.ablate.report import write_report
from edgedepth.student.evaluate import EvalSet, score_constant, score_teacher
from edgedepth.student.train import split_by_frames

Log = Callable[[str], None]


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
    from edgedepth.student.ablate.runs import (
        Budget,
        fit_training_lut,
        label_median,
        measure_speed,
        pick_budget,
        run_one,
    )
    from edgedepth.student.train import (
        barrier,
        broadcast_object,
        from_environment,
        init_distributed,
        shutdown,
    )

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


__all__ = ["CONFIGS", "AblateSettings", "available_configs", "run_ablation", "run_configs"]
