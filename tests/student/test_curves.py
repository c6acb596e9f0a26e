"""edgedepth.student.train.curves: the training-curve figure for one and several epochs, with and without validation."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgedepth.student.train.curves import plot_training_curves

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _history(epochs: int, val: bool = True, lidar: bool = True) -> list[dict[str, float]]:
    rows = []
    for epoch in range(1, epochs + 1):
        row = {
            "epoch": epoch,
            "lr": 0.01 * (1 - (epoch - 1) / max(epochs, 2)) ** 0.9,
            "train/total": 2.0 / epoch,
        }
        for block in range(1, 5):
            row[f"train/depth/{block}"] = 0.4 / epoch / block
            row[f"train/seg/{block}"] = 0.8 / epoch / block
        if val:
            row["val_teacher/rmse"], row["val_teacher/abs_rel"] = 6.0 / epoch, 0.3 / epoch
            if lidar:
                row["val_lidar/rmse"], row["val_lidar/abs_rel"] = 7.0 / epoch, 0.35 / epoch
        rows.append(row)
    return rows


def _steps(n: int) -> list[float]:
    rng = np.random.default_rng(0)
    return list(2.0 * np.exp(-np.arange(n) / n) * rng.uniform(0.7, 1.3, n))


def _check_png(path: Path) -> np.ndarray:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[1] > 1000 and image.shape[0] > 300
    assert image.std() > 10
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp file left
    return image


@pytest.mark.parametrize("epochs", [1, 5])
@pytest.mark.parametrize("val", [True, False])
def test_curves(tmp_path: Path, epochs: int, val: bool) -> None:
    out = tmp_path / "sub" / "curves.png"
    assert plot_training_curves(_history(epochs, val), out, step_losses=np.array(_steps(40 * epochs))) == out
    _check_png(out)


def test_without_step_losses_and_teacher_only(tmp_path: Path) -> None:
    _check_png(plot_training_curves(_history(3, lidar=False), tmp_path / "a.png"))
    _check_png(plot_training_curves(_history(1, val=False), tmp_path / "b.png", step_losses=[]))


def test_nan_and_odd_values(tmp_path: Path) -> None:
    history = _history(4)
    for row in history:
        row["val_lidar/rmse"] = row["val_lidar/abs_rel"] = math.nan
    history[1]["val_teacher/rmse"] = math.nan
    history[2]["train/total"] = math.inf
    del history[3]["epoch"], history[3]["lr"]
    steps = _steps(80)
    steps[5], steps[6] = math.nan, -1.0
    _check_png(plot_training_curves(history, tmp_path / "c.png", step_losses=steps))
    all_nan = [{"epoch": 1, "train/total": math.nan, "val_teacher/rmse": math.nan}]
    _check_png(plot_training_curves(all_nan, tmp_path / "d.png", step_losses=[math.nan]))


def test_overwrites_atomically(tmp_path: Path) -> None:
    out = tmp_path / "curves.png"
    out.write_bytes(b"old")
    plot_training_curves(_history(2), out, step_losses=_steps(10))
    _check_png(out)
