"""The teacher-vs-LiDAR depth bias table: the fit, ``lut.json``, apply (accumulator: ``edgedepth.calib.accumulate``;
the checks at load: ``edgedepth.calib.lutfile``).

``error = lidar - teacher`` is gathered in bins of *teacher* depth (all that is known when the
table is applied), summarised per bin (mean or median, count, std, bootstrap CI) and turned into a
dense correction: ``corrected = teacher + LUT(teacher)``, linear between bin centres, held constant
beyond the first and last centre. Memory is bounded by the accumulator (a few MB), whatever the
number of frames. File format and decisions: docs/lut.md.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from edgedepth.calib.accumulate import BinAccumulator, pair_mask, shape_text, valid_pairs
from edgedepth.calib.lutfile import check_bins, lut_fields, read_lut_json
from edgedepth.calib.settings import LUT_VERSION, MAX_BINS, MAX_CORRECTION_M, FitSettings
from edgedepth.common import write_text_atomic

__all__ = [
    "MAX_BINS",
    "MAX_CORRECTION_M",
    "BinAccumulator",
    "Evaluation",
    "FitSettings",
    "Lut",
    "apply_lut",
    "fit_lut",
    "load_lut",
    "lut_from_accumulator",
    "pair_mask",
    "shape_text",
    "valid_pairs",
]

_CHUNK = 16384  # apply_lut works in cache-sized blocks


@dataclass(frozen=True)
class Lut:
    """A fitted table: per-bin statistics and the dense correction apply_lut interpolates."""

    edges: np.ndarray
    value: np.ndarray  # the statistic of lidar - teacher per bin (NaN where no pixel)
    correction: np.ndarray  # value where populated, interpolated / held constant where filled
    count: np.ndarray
    std: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    filled: np.ndarray
    settings: dict[str, Any]
    source: dict[str, Any] = field(default_factory=dict)
    heldout: dict[str, Any] | None = None

    @property
    def centres(self) -> np.ndarray:
        return (self.edges[:-1] + self.edges[1:]) / 2

    def table(self) -> dict[str, list]:
        """The per-bin arrays as JSON-ready lists (NaN -> None)."""
        return {
            "edges": _floats(self.edges),
            "centres": _floats(self.centres),
            "value": _floats(self.value),
            "correction": _floats(self.correction),
            "count": [int(c) for c in self.count],
            "std": _floats(self.std),
            "ci_low": _floats(self.ci_low),
            "ci_high": _floats(self.ci_high),
            "filled": [bool(f) for f in self.filled],
        }

    @cached_property
    def sha256(self) -> str:
        """SHA-256 of the canonical JSON of the version and the per-bin table (not source or held-out)."""
        body = json.dumps({"lut_version": LUT_VERSION, "bins": self.table()}, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {
            "lut_version": LUT_VERSION,
            "sha256": self.sha256,
            "error": "lidar_depth - teacher_depth (m), binned by teacher depth",
            "bins": self.table(),
            "settings": self.settings,
            "source": self.source,
            "heldout": self.heldout,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Lut:
        """The table of a parsed ``lut.json``, every field checked (``edgedepth.calib.lutfile``), its
        sha256 and per-bin numbers included: one-line ValueErrors naming the field."""
        fields, claimed_sha = lut_fields(data)
        lut = cls(**fields)
        if not isinstance(claimed_sha, str) or claimed_sha != lut.sha256:  # an edit that kept the old hash
            raise ValueError("sha256 does not match the table (edited by hand?)")
        check_bins(lut, FitSettings(**lut.settings).min_count)
        return lut

    def save(self, path: str | Path) -> Path:
        """Write ``lut.json`` atomically (temporary sibling, then rename), once it passes the checks
        ``load_lut`` makes (a table that could not be read back is not written)."""
        data = self.to_dict()
        try:
            Lut.from_dict(data)
        except ValueError as err:
            raise ValueError(f"{path}: not written: {err}") from None
        return write_text_atomic(path, json.dumps(data, indent=1, allow_nan=False) + "\n")

    @cached_property
    def _segments(self) -> tuple[float, float, np.ndarray, np.ndarray]:
        """(1/width, offset, A, B): on segment i, corrected = A[i] * d + B[i] (see apply_lut)."""
        c, v = self.centres, self.correction.astype(np.float64)
        inv_w = 1.0 / (c[1] - c[0]) if len(c) > 1 else 1.0
        n = len(c)
        slope = np.zeros(n + 1)  # per unit of u; segment 0 and n are the constant ends
        slope[1:n] = np.diff(v)
        knot = np.concatenate([[v[0]], v[:-1], [v[-1]]])  # value at the segment's left knot
        left = np.concatenate([[0.0], np.arange(n - 1), [0.0]])  # u of the left knot
        base = knot - slope * left  # correction = base + slope * u, u = (d - c0) / w
        return inv_w, 1.0 - c[0] * inv_w, 1.0 + slope * inv_w, base - slope * c[0] * inv_w

    @cached_property
    def _table16(self) -> np.ndarray:
        """apply_lut of every float16 bit pattern, for a one-gather float16 path."""
        every = np.arange(2**16, dtype=np.uint16).view(np.float16)
        with np.errstate(over="ignore"):  # beyond float16's range: inf, as a float16 sum would give
            return _apply_float(every.astype(np.float32), self).astype(np.float16)


def _floats(values: np.ndarray) -> list[float | None]:
    return [None if not math.isfinite(v) else float(v) for v in np.asarray(values, dtype=np.float64)]


def load_lut(path: str | Path) -> Lut:
    """Read ``lut.json``, every field checked (``Lut.from_dict``): FileNotFoundError when absent, else
    one-line ValueErrors naming the file and the field (size, JSON, version, types, lengths, ranges,
    consistency, sha256)."""
    data = read_lut_json(path)
    try:
        return Lut.from_dict(data)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def fit_lut(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]],
    bin_width: float = 1.0,
    min_depth: float = 1,
    max_depth: float = 80,
    stat: str = "mean",
    min_count: int = 100,
    **options: Any,
) -> Lut:
    """Fit a table from any iterable of (teacher_depth, lidar_depth) arrays (0 = invalid), streamed.

    ``options``: reservoir_size, n_bootstrap, ci_level, seed (see FitSettings).
    """
    settings = FitSettings(bin_width, min_depth, max_depth, stat, min_count, **options)
    acc = BinAccumulator(settings.edges, settings.reservoir_size, settings.seed)
    for teacher, lidar in pairs:
        acc.add(teacher, lidar)
    return lut_from_accumulator(acc, settings)


def lut_from_accumulator(acc: BinAccumulator, settings: FitSettings) -> Lut:
    """Per-bin statistics, bootstrap CIs and the filled dense correction of an accumulator."""
    if acc.counts.sum() == 0:
        raise ValueError(
            f"no overlapping pixels: no pixel has a LiDAR depth and a teacher depth in "
            f"[{settings.min_depth:g}, {settings.edges[-1]:g}) m"
        )
    n = acc.counts.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = acc.sums / n
        std = np.sqrt(np.maximum(acc.sumsq - acc.sums * mean, 0) / (n - 1))
    std[acc.counts < 2] = np.nan
    value = mean.copy()
    if settings.stat == "median":
        value = np.array([np.median(acc.sample(b)) if acc.counts[b] else np.nan for b in range(acc.n_bins)])
    populated = acc.counts >= settings.min_count
    if not populated.any():
        raise ValueError(
            f"no bin has {settings.min_count} pixels (most: {acc.counts.max()}); lower --min-count"
        )
    ci_low, ci_high = _bootstrap(acc, settings, value, populated)
    centres = (settings.edges[:-1] + settings.edges[1:]) / 2
    correction = value.copy()
    correction[~populated] = np.interp(centres[~populated], centres[populated], value[populated])
    lut = Lut(
        settings.edges,
        value,
        correction,
        acc.counts.copy(),
        std,
        ci_low,
        ci_high,
        ~populated,
        settings.to_dict(),
    )
    try:
        check_bins(lut, settings.min_count)
    except ValueError as err:
        raise ValueError(f"the fitted table is implausible (are both depths in metres?): {err}") from None
    return lut


def _bootstrap(
    acc: BinAccumulator, settings: FitSettings, value: np.ndarray, populated: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap of the statistic on each bin's reservoir (m values), spread rescaled by
    sqrt(m / n) for the mean, which is computed from all n pixels (the median uses the m only)."""
    rng = np.random.default_rng([settings.seed, 1])
    stat = np.mean if settings.stat == "mean" else np.median
    tail = (1 - settings.ci_level) / 2
    low, high = np.full(acc.n_bins, np.nan), np.full(acc.n_bins, np.nan)
    for b in np.flatnonzero(populated):
        sample = acc.sample(b)
        m = len(sample)
        reps = stat(sample[rng.integers(0, m, (settings.n_bootstrap, m))], axis=1) - stat(sample)
        scale = math.sqrt(m / acc.counts[b]) if settings.stat == "mean" else 1.0
        q_low, q_high = np.quantile(reps, [tail, 1 - tail])
        low[b], high[b] = value[b] + scale * q_low, value[b] + scale * q_high
    return low, high


class Evaluation:
    """Teacher vs LiDAR on held-out pixels (the fit's selection), before and after correction:
    RMSE, Abs Rel and the per-bin residual ``lidar - corrected``. Mergeable like the accumulator."""

    def __init__(self, lut: Lut) -> None:
        self.lut = lut
        self.frames = 0
        self.sq = np.zeros(2)  # summed squared error, before / after
        self.rel = np.zeros(2)  # summed |error| / lidar, before / after
        self.residual = BinAccumulator(lut.edges, reservoir_size=0)

    def add(self, teacher: np.ndarray, lidar: np.ndarray) -> None:
        """Add one frame; the teacher in its stored dtype, so "after" is what corrected shards hold."""
        keep = pair_mask(teacher, lidar, self.lut.edges[0], self.lut.edges[-1])
        t = np.asarray(teacher).ravel()[keep].astype(np.float64)
        corrected = apply_lut(np.asarray(teacher), self.lut).ravel()[keep].astype(np.float64)
        lid = np.asarray(lidar).ravel()[keep].astype(np.float64)
        for k, pred in enumerate((t, corrected)):
            self.sq[k] += np.sum((pred - lid) ** 2)
            self.rel[k] += np.sum(np.abs(pred - lid) / lid)
        self.residual.add_errors(self.residual.bin_index(t), lid - corrected)
        self.frames += 1

    def merge(self, other: Evaluation) -> Evaluation:
        self.frames += other.frames
        self.sq += other.sq
        self.rel += other.rel
        self.residual.merge(other.residual)
        return self

    def to_dict(self) -> dict[str, Any]:
        """The held-out figures stored in lut.json (metrics None when there is no pixel)."""
        res = self.residual
        n = int(res.counts.sum())
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = res.sums / res.counts
            std = np.sqrt(np.maximum(res.sumsq - res.sums * mean, 0) / (res.counts - 1))
        std[res.counts < 2] = np.nan
        rmse = [math.sqrt(v / n) if n else None for v in self.sq]
        rel = [float(v / n) if n else None for v in self.rel]
        return {
            "frames": self.frames,
            "pixels": n,
            "rmse_before": rmse[0],
            "rmse_after": rmse[1],
            "abs_rel_before": rel[0],
            "abs_rel_after": rel[1],
            "residual_mean": _floats(mean),
            "residual_std": _floats(std),
            "residual_count": [int(c) for c in res.counts],
        }


def apply_lut(depth: np.ndarray, lut: Lut) -> np.ndarray:
    """``depth + LUT(depth)``, linear between bin centres, constant beyond the ends; invalid input
    (<= 0 or non-finite) and corrected values <= 0 give 0. Same shape and float dtype out."""
    depth = np.asarray(depth)
    if depth.dtype.kind != "f":
        raise ValueError(f"depth must be a float array, got {depth.dtype}")
    if depth.dtype == np.float16:
        return lut._table16[depth.view(np.uint16)]
    return _apply_float(depth, lut)


def _apply_float(depth: np.ndarray, lut: Lut) -> np.ndarray:
    """The float32/float64 path: per block, one segment index and one multiply-add per pixel."""
    inv_w, offset, a64, b64 = lut._segments
    dtype = depth.dtype
    a, b = a64.astype(dtype), b64.astype(dtype)
    top = dtype.type(len(a64) - 1)
    flat = np.ascontiguousarray(depth).ravel()
    out = np.empty_like(flat)
    u = np.empty(min(len(flat), _CHUNK), dtype=dtype)
    seg = np.empty(len(u), dtype=np.intp)
    ok = np.empty(len(u), dtype=bool)
    finite = np.empty(len(u), dtype=bool)
    tmp = np.empty(len(u), dtype=dtype)
    inv_w, offset = dtype.type(inv_w), dtype.type(offset)
    with np.errstate(invalid="ignore", over="ignore"):  # NaN / inf input is masked to 0 below
        for start in range(0, len(flat), _CHUNK):
            d, o = flat[start : start + _CHUNK], out[start : start + _CHUNK]
            k = len(d)
            uk, sk, okk, fk, tk = u[:k], seg[:k], ok[:k], finite[:k], tmp[:k]
            np.greater(d, 0, out=okk)  # False for NaN
            np.less(d, np.inf, out=fk)
            np.logical_and(okk, fk, out=okk)
            np.multiply(d, inv_w, out=uk)
            np.add(uk, offset, out=uk)
            np.fmax(uk, 0, out=uk)  # NaN -> 0: any segment, masked below
            np.fmin(uk, top, out=uk)
            sk[:] = uk
            np.take(a, sk, out=tk)
            np.multiply(tk, d, out=o)
            np.take(b, sk, out=tk)
            np.add(o, tk, out=o)
            np.multiply(o, okk, out=o)  # invalid -> 0, or NaN where d was NaN or inf
            np.fmax(o, 0, out=o)  # NaN and corrected <= 0 -> 0
    return out.reshape(depth.shape)
