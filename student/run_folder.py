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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from labelgen.atomic import write_text_atomic

CONFIG_FILE, SPLIT_FILE, METRICS_FILE, CURVES_FILE = "config.json", "split.json", "metrics.csv", "curves.png"
LAST, BEST, CHECKPOINT_DIR, TENSORBOARD_DIR = "last.pt", "best.pt", "checkpoints", "tensorboard"
RESUMABLE_CHANGES = ("epochs", "device", "workers", "out_dir")
"""Training settings that may differ when a run is resumed; any other change is refused."""


def write_json(path: str | Path, data: Mapping[str, Any]) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_json(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


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


def check_resumable(run_dir: Path, settings: Mapping[str, Any]) -> None:
    """Refuse to resume a run whose saved settings differ (beyond RESUMABLE_CHANGES) from these."""
    saved = read_json(run_dir / CONFIG_FILE)
    for section in ("train", "model"):
        old, new = saved.get(section, {}), settings.get(section, {})
        for key in sorted(set(old) | set(new)):
            if key in RESUMABLE_CHANGES or old.get(key) == new.get(key):
                continue
            raise ValueError(
                f"{run_dir / CONFIG_FILE}: the run was started with {key}={old.get(key)!r}, now "
                f"{new.get(key)!r}; resume with the same settings (only {', '.join(RESUMABLE_CHANGES[:3])} "
                "may change) or train into another --out"
            )


__all__ = [
    "BEST",
    "CHECKPOINT_DIR",
    "CONFIG_FILE",
    "CURVES_FILE",
    "LAST",
    "METRICS_FILE",
    "SPLIT_FILE",
    "TENSORBOARD_DIR",
    "check_resumable",
    "epoch_checkpoint",
    "read_json",
    "read_metrics_csv",
    "write_json",
    "write_metrics_csv",
]
