"""The run folder ``student train`` writes, and reads back to resume (format: docs/training.md).

::

    RUN/config.json              every setting, the label provenance, the split summary
    RUN/split.json               the training and validation frame ids (whole drives)
    RUN/metrics.csv              one row per epoch: loss terms, validation metrics, speed
    RUN/curves.png               training curves, redrawn after every epoch
    RUN/tensorboard/             TensorBoard event files
    RUN/checkpoints/epoch-NNNN.pt  the full training state after epoch NNNN
    RUN/last.pt                  the same as the newest epoch checkpoint (what --resume reads)
    RUN/best.pt                  the epoch with the best validation RMSE

Every file is written to a temporary sibling and renamed into place.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

from edgedepth.common import write_text_atomic

CONFIG_FILE, SPLIT_FILE, METRICS_FILE, CURVES_FILE = "config.json", "split.json", "metrics.csv", "curves.png"
LAST, BEST, CHECKPOINT_DIR, TENSORBOARD_DIR = "last.pt", "best.pt", "checkpoints", "tensorboard"
RESUMABLE_CHANGES = ("epochs", "device", "workers", "out_dir")
"""Training settings that may differ when a run is resumed; any other change is refused."""
ADDED_SETTINGS = ("val_max_frames", "trained_range")
"""Settings added after runs were made (training, or the model's recorded label range): absent from an
older config.json, they resume as given."""


def write_json(path: str | Path, data: Mapping[str, Any]) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_json(path: str | Path) -> Any:
    """The file's JSON value; a file that is not JSON (or not UTF-8) is one line naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    except RecursionError:
        raise ValueError(f"{path}: not valid JSON (nested too deeply)") from None


def epoch_checkpoint(run_dir: str | Path, epoch: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"epoch-{epoch:04d}.pt"


def write_metrics_csv(path: str | Path, history: Sequence[Mapping[str, float]]) -> Path:
    """One row per epoch; columns are the union of the rows' keys, in first-seen order."""
    columns: dict[str, None] = {}
    for row in history:
        columns.update(dict.fromkeys(row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: _csv_value(v) for k, v in row.items()})
    return write_text_atomic(path, buffer.getvalue())


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


def read_metrics_csv(path: str | Path) -> list[dict[str, float]]:
    """The rows of a metrics.csv as floats (empty cells as NaN)."""
    with open(path, newline="") as handle:
        return [
            {k: float(v) if v != "" else math.nan for k, v in row.items()} for row in csv.DictReader(handle)
        ]


def checkpoints_of(run_dir: str | Path) -> list[Path]:
    """The checkpoints a run folder holds (epoch checkpoints, last.pt, best.pt). A folder is a
    committed run only once it holds one: before its first epoch ends it is a failed start."""
    run_dir = Path(run_dir)
    found = (
        sorted((run_dir / CHECKPOINT_DIR).glob("epoch-*.pt")) if (run_dir / CHECKPOINT_DIR).is_dir() else []
    )
    return found + [p for p in (run_dir / LAST, run_dir / BEST) if p.is_file()]


def check_resumable(run_dir: Path, settings: Mapping[str, Any]) -> None:
    """Refuse to resume a run whose saved settings differ (beyond RESUMABLE_CHANGES) from these.

    A setting the saved file lacks because an older edgedepth wrote it (``ADDED_SETTINGS``) takes
    its value now; a config.json of another shape is one line naming the file and the field.
    """
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise ValueError(f"{path}: missing; this run folder cannot be resumed (train into another --out)")
    saved = read_json(path)
    if not isinstance(saved, dict):
        raise ValueError(f"{path}: not a run's settings (a {type(saved).__name__}, not a mapping)")
    for section in ("train", "model"):
        old, new = saved.get(section), settings.get(section, {})
        if not isinstance(old, dict):
            raise ValueError(
                f"{path}: field {section!r} is {_kind(old)}, expected the run's {section} settings"
            )
        for key in sorted(set(old) | set(new)):
            if key in RESUMABLE_CHANGES or old.get(key) == new.get(key):
                continue
            if key not in old and key in ADDED_SETTINGS:
                continue
            raise ValueError(
                f"{path}: the run was started with {key}={old.get(key)!r}, now "
                f"{new.get(key)!r}; resume with the same settings (only {', '.join(RESUMABLE_CHANGES[:3])} "
                "may change) or train into another --out"
            )


def _kind(value: Any) -> str:
    name = type(value).__name__
    return "missing" if value is None else f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def write_run_files(
    run_dir: Path,
    settings: Mapping[str, Any],
    provenance: Mapping[str, Any],
    train_frames: Sequence[str],
    val_frames: Sequence[str],
    held_out: int,
    val_drives: Sequence[str],
    extra: Mapping[str, Any],
) -> None:
    """split.json (the frame ids; ``val_frames`` are those validated, at most ``val_max_frames`` of
    the ``held_out`` usable held-out frames) and config.json (settings, provenance, split counts)."""
    val_max = settings["train"]["val_max_frames"]
    split = {
        "val_drives": list(val_drives),
        "train_frames": list(train_frames),
        "val_frames": list(val_frames),
        "val_held_out": held_out,
        "val_max_frames": val_max,
    }
    write_json(run_dir / SPLIT_FILE, split)
    counts = {
        "val_drives": list(val_drives),
        "train_frames": len(train_frames),
        "val_frames": len(val_frames),
        "val_held_out": held_out,
        "val_max_frames": val_max,
    }
    write_json(run_dir / CONFIG_FILE, {**settings, "provenance": provenance, "split": counts, **extra})


def prepare_run_folder(run_dir: Path, settings: Mapping[str, Any], resume: bool) -> Path | None:
    """The checkpoint to resume from (None: start at epoch 0); refuses to overwrite another run.

    A run folder is committed by its first checkpoint: a folder without one (a start that failed
    or was killed before its first epoch ended) is not a run yet, and any start may reuse it.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"{run_dir}: exists and is not a folder")
    checkpoints = checkpoints_of(run_dir)
    if not checkpoints:
        if (run_dir / CONFIG_FILE).is_file():  # a failed start: its events belong to no run
            shutil.rmtree(run_dir / TENSORBOARD_DIR, ignore_errors=True)
        return None
    if not resume:
        raise ValueError(
            f"{run_dir}: already holds a training run; pass --resume to continue it, or another --out"
        )
    check_resumable(run_dir, settings)
    last = run_dir / LAST
    if not last.is_file():
        epochs = [p for p in checkpoints if p.parent.name == CHECKPOINT_DIR]
        newest = epochs[-1] if epochs else checkpoints[0]
        raise ValueError(
            f"{last}: missing, so the run cannot be resumed; copy its newest checkpoint {newest} "
            "there to resume from it"
        )
    return last


def take_run_folder(
    held: ExitStack, run_dir: Path, settings: Mapping[str, Any], resume: bool, info: Any
) -> Path | None:
    """Rank 0 takes the run folder's lock (``edgedepth.common.lock``, held until ``held`` closes) and
    decides where to start (``prepare_run_folder``); every rank learns the decision, or the
    one-line reason the run cannot start (rank 0 raises the error itself, so OS faults stay OS faults)."""
    from edgedepth.common import describe, folder_lock
    from edgedepth.student.train.distributed import broadcast_object

    decision: tuple[str, Any] | None = None
    failure: BaseException | None = None
    if info.is_main:
        try:
            if run_dir.exists() and not run_dir.is_dir():
                raise ValueError(f"{run_dir}: exists and is not a folder")
            held.enter_context(folder_lock(run_dir, f"student train --out {run_dir}"))
            decision = ("ok", prepare_run_folder(run_dir, settings, resume))
        except (ValueError, OSError) as err:
            decision, failure = ("error", describe(err)), err
    decision = broadcast_object(decision, info)
    if failure is not None:
        raise failure
    if decision[0] == "error":
        raise ValueError(decision[1])
    return decision[1]


def cap_workers(config: Any, log: Callable[[str], None] | None) -> Any:
    """``config`` with at most one data loader worker per CPU core this process may use (saying so)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if config.workers <= cores:
        return config
    if log is not None:
        log(f"note: --workers {config.workers} capped at the {cores} CPU cores of this machine")
    return replace(config, workers=cores)


__all__ = [
    "ADDED_SETTINGS",
    "BEST",
    "CHECKPOINT_DIR",
    "CONFIG_FILE",
    "CURVES_FILE",
    "LAST",
    "METRICS_FILE",
    "SPLIT_FILE",
    "TENSORBOARD_DIR",
    "cap_workers",
    "check_resumable",
    "checkpoints_of",
    "prepare_run_folder",
    "take_run_folder",
    "write_run_files",
    "epoch_checkpoint",
    "read_json",
    "read_metrics_csv",
    "write_json",
    "write_metrics_csv",
]
