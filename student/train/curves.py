"""Training curves of a student run as one PNG: loss per step, loss terms per epoch, validation.

Panels: (a) the total loss of every optimiser step (log scale) with its running mean and the
per-epoch mean; (b) the depth and segmentation terms per epoch, summed over the decoder blocks (bold)
and per block (thin); (c) validation RMSE (left axis) and Abs Rel (right axis) per epoch against the
teacher labels and the LiDAR, or the note "no validation drives". The learning rate is given in the
title of (a) and drawn as a faint line on (b)'s right axis.
"""

from __future__ import annotations

import io
import math
import os
import re
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

VAL_SOURCES = (("val_teacher", "teacher", "tab:blue"), ("val_lidar", "LiDAR", "tab:orange"))
TERMS = (("depth", "tab:green"), ("seg", "tab:purple"))


def _value(row: Mapping[str, float], key: str) -> float:
    """A finite float, or NaN when the key is absent, not a number, or non-finite."""
    try:
        value = float(row[key])
    except (KeyError, TypeError, ValueError):
        return math.nan
    return value if math.isfinite(value) else math.nan


def _column(history: Sequence[Mapping[str, float]], key: str) -> np.ndarray:
    return np.array([_value(row, key) for row in history], dtype=np.float64)


def _epochs(history: Sequence[Mapping[str, float]]) -> np.ndarray:
    """The rows' "epoch" values; where one is missing, its position counted from 1."""
    epochs = _column(history, "epoch")
    fallback = np.arange(1, len(history) + 1, dtype=np.float64)
    return np.where(np.isfinite(epochs), epochs, fallback)


def _block_keys(history: Sequence[Mapping[str, float]], term: str) -> list[str]:
    """``train/<term>/<block>`` keys in block order (or the plain ``train/<term>`` when there are none)."""
    pattern = re.compile(rf"^train/{term}/(\d+)$")
    keys = {key for row in history for key in row if pattern.match(key)}
    if keys:
        return sorted(keys, key=lambda key: int(pattern.match(key).group(1)))
    return [f"train/{term}"] if any(f"train/{term}" in row for row in history) else []


def _log_if_positive(ax, *series: np.ndarray) -> None:
    values = np.concatenate([np.ravel(s) for s in series]) if series else np.array([])
    values = values[np.isfinite(values)]
    if values.size and (values > 0).all():
        ax.set_yscale("log")


def _running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last ``window`` finite values at every step (shorter at the start)."""
    finite = np.isfinite(values)
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, values, 0.0))])
    counts = np.concatenate([[0], np.cumsum(finite)])
    index = np.arange(1, len(values) + 1)
    start = np.maximum(index - window, 0)
    n = counts[index] - counts[start]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (sums[index] - sums[start]) / np.maximum(n, 1), np.nan)


def _lr_text(lrs: np.ndarray) -> str:
    lrs = lrs[np.isfinite(lrs)]
    if not lrs.size:
        return ""
    if lrs.size == 1 or np.isclose(lrs[0], lrs[-1]):
        return f"lr {lrs[0]:.2g}"
    return f"lr {lrs[0]:.2g} \N{RIGHTWARDS ARROW} {lrs[-1]:.2g}"


def _loss_panel(ax, history, epochs: np.ndarray, step_losses: Sequence[float] | None) -> None:
    total = _column(history, "train/total")
    lr = _lr_text(_column(history, "lr"))
    steps = np.asarray(step_losses if step_losses is not None else [], dtype=np.float64).ravel()
    steps = np.where(np.isfinite(steps), steps, np.nan)
    if steps.size:
        x = np.arange(1, steps.size + 1)
        ax.plot(x, steps, color="tab:blue", lw=0.6, alpha=0.35, label="per step")
        window = max(1, min(200, steps.size // 20))
        ax.plot(x, _running_mean(steps, window), color="tab:blue", lw=1.6, label=f"running mean ({window})")
        # epoch means in the middle of each epoch, assuming equally long epochs
        ends = (np.arange(0.5, len(history)) * steps.size / max(len(history), 1)) if len(history) else []
        if np.isfinite(total).any():
            ax.plot(ends, total, "o-", color="black", ms=4, lw=1.0, label="epoch mean")
        ax.set_xlabel("optimiser step")
        _log_if_positive(ax, steps, total)
    else:
        if np.isfinite(total).any():
            ax.plot(epochs, total, "o-", color="black", ms=4, lw=1.0, label="epoch mean")
        else:
            ax.text(0.5, 0.5, "no training loss recorded", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("epoch")
        _log_if_positive(ax, total)
    ax.set_ylabel("total loss")
    ax.set_title("(a) training loss" + (f"; {lr}" if lr else ""), fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, frameon=False)


def _terms_panel(ax, history, epochs: np.ndarray) -> None:
    drawn: list[np.ndarray] = []
    for term, colour in TERMS:
        keys = _block_keys(history, term)
        if not keys:
            continue
        blocks = np.stack([_column(history, key) for key in keys])
        if len(keys) > 1:
            for values in blocks:
                ax.plot(epochs, values, ".-", color=colour, lw=0.7, ms=3, alpha=0.55)
        finite = np.isfinite(blocks).any(axis=0)
        summed = np.where(finite, np.nansum(blocks, axis=0), np.nan)
        label = f"{term}, sum of {len(keys)} blocks (thin: D1..D{len(keys)})" if len(keys) > 1 else term
        ax.plot(epochs, summed, "o-", color=colour, lw=1.8, ms=4, label=label)
        drawn += [blocks, summed]
    if not drawn:
        ax.text(0.5, 0.5, "no loss terms recorded", ha="center", va="center", transform=ax.transAxes)
    else:
        _log_if_positive(ax, *drawn)
        ax.legend(fontsize=8, frameon=False)
    lr = _column(history, "lr")
    if np.isfinite(lr).any():
        twin = ax.twinx()
        twin.plot(epochs, lr, "--", color="grey", lw=0.8, alpha=0.6)
        twin.set_ylabel("learning rate", color="grey", fontsize=8)
        twin.tick_params(axis="y", colors="grey", labelsize=7)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss term")
    ax.set_title("(b) loss terms per epoch", fontsize=10)


def _validation_panel(ax, history, epochs: np.ndarray) -> None:
    twin = None
    lines, missing = [], []
    for prefix, name, colour in VAL_SOURCES:
        rmse, abs_rel = _column(history, f"{prefix}/rmse"), _column(history, f"{prefix}/abs_rel")
        if not (np.isfinite(rmse).any() or np.isfinite(abs_rel).any()):
            missing.append(name)
            continue
        if np.isfinite(rmse).any():
            lines += ax.plot(epochs, rmse, "o-", color=colour, ms=4, label=f"RMSE vs {name}")
        if np.isfinite(abs_rel).any():
            twin = twin or ax.twinx()
            lines += twin.plot(
                epochs, abs_rel, "s--", color=colour, ms=4, alpha=0.8, label=f"Abs Rel vs {name}"
            )
    if len(missing) == len(VAL_SOURCES):
        ax.text(
            0.5, 0.5, "no validation drives", ha="center", va="center", transform=ax.transAxes, fontsize=11
        )
        ax.set_yticks([])
    else:
        if missing:
            ax.text(0.02, 0.02, f"no {' or '.join(missing)} validation", transform=ax.transAxes, fontsize=8)
        ax.set_ylabel("RMSE (m)")
        if twin is not None:
            twin.set_ylabel("Abs Rel")
        ax.legend(lines, [line.get_label() for line in lines], fontsize=8, frameon=False)
    ax.set_xlabel("epoch")
    ax.set_title("(c) validation per epoch", fontsize=10)


def _epoch_ticks(axes, epochs: np.ndarray) -> None:
    """Whole-epoch ticks; a single epoch is centred in a window of two epochs."""
    if not epochs.size:
        return
    unique = np.unique(epochs)
    for ax in axes:
        if unique.size <= 12:
            ax.set_xticks(unique)
        elif np.all(epochs == np.round(epochs)):
            ax.xaxis.get_major_locator().set_params(integer=True)
        if unique.size == 1:
            ax.set_xlim(unique[0] - 1, unique[0] + 1)


def plot_training_curves(
    history: Sequence[Mapping[str, float]],
    out_png: str | Path,
    step_losses: Sequence[float] | None = None,
) -> Path:
    """Draw the training curves of ``history`` (one row per epoch) to ``out_png``, atomically.

    Row keys used (all optional, absent or NaN values are left out): ``epoch``, ``lr``,
    ``train/total``, ``train/depth/<block>``, ``train/seg/<block>``, ``val_teacher/rmse``,
    ``val_teacher/abs_rel``, ``val_lidar/rmse``, ``val_lidar/abs_rel``. ``step_losses``: the total
    loss of every optimiser step, in order. A single epoch draws single points.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_png = Path(out_png)
    history = list(history)
    epochs = _epochs(history)
    validated = any(
        np.isfinite(_column(history, f"{prefix}/{metric}")).any()
        for prefix, _, _ in VAL_SOURCES
        for metric in ("rmse", "abs_rel")
    )  # without validation the figure has no empty third panel, only a note
    fig, axes = plt.subplots(
        1, 3 if validated else 2, figsize=(17.0 if validated else 11.6, 4.6), layout="constrained"
    )
    try:
        _loss_panel(axes[0], history, epochs, step_losses)
        _terms_panel(axes[1], history, epochs)
        if validated:
            _validation_panel(axes[2], history, epochs)
        else:
            fig.suptitle("no validation drives: best.pt follows the training loss", fontsize=10)
        has_steps = step_losses is not None and len(step_losses) > 0
        _epoch_ticks(axes[1:] if has_steps else axes, epochs)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110)
    finally:
        plt.close(fig)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_name(f".{out_png.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_bytes(buffer.getvalue())
        os.replace(tmp, out_png)
    finally:
        tmp.unlink(missing_ok=True)
    return out_png


__all__ = ["plot_training_curves"]
