"""The teacher-vs-LiDAR depth bias table: a streaming per-bin accumulator, the fit, ``lut.json``, apply.

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
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from labelgen.atomic import write_text_atomic

LUT_VERSION = 1
STATS = ("mean", "median")
_CHUNK = 16384  # apply_lut works in cache-sized blocks


MAX_BINS = 10_000
"""Most bins a table may have: each holds a reservoir of samples (memory), and 1 cm bins over
1-80 m are 7,900."""


@dataclass(frozen=True)
class FitSettings:
    """Bins and statistics of a fit; validated on construction (one-line ValueErrors)."""

    bin_width: float = 1.0
    min_depth: float = 1.0
    max_depth: float = 80.0
    stat: str = "mean"
    min_count: int = 100
    reservoir_size: int = 4096
    n_bootstrap: int = 1000
    ci_level: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("bin_width", "min_depth", "max_depth", "ci_level"):
            object.__setattr__(self, name, float(getattr(self, name)))
        for name in ("min_count", "reservoir_size", "n_bootstrap", "seed"):
            object.__setattr__(self, name, int(getattr(self, name)))
        for name in ("bin_width", "min_depth", "max_depth", "ci_level"):
            if not math.isfinite(float(getattr(self, name))):
                raise ValueError(f"{name.replace('_', ' ')} must be finite, got {getattr(self, name)}")
        if self.bin_width <= 0:
            raise ValueError(f"empty bin range: bin width must be > 0 m, got {self.bin_width}")
        if self.min_depth < 0:
            raise ValueError(f"min depth must be >= 0 m, got {self.min_depth}")
        if self.max_depth <= self.min_depth:
            raise ValueError(f"empty bin range: max depth {self.max_depth} m <= min depth {self.min_depth} m")
        if self.n_bins < 1:
            raise ValueError(
                f"empty bin range: bin width {self.bin_width} m is larger than "
                f"{self.min_depth}..{self.max_depth} m"
            )
        if self.n_bins > MAX_BINS:
            raise ValueError(
                f"bin width {self.bin_width:g} m gives {self.n_bins} bins over {self.min_depth:g}..{self.max_depth:g} m; "
                f"at most {MAX_BINS} (a bin width of at least {(self.max_depth - self.min_depth) / MAX_BINS:.3g} m)"
            )
        if self.stat not in STATS:
            raise ValueError(f"stat must be one of {', '.join(STATS)}, got {self.stat!r}")
        if self.min_count < 1 or self.reservoir_size < 1 or self.n_bootstrap < 10:
            raise ValueError("min count and reservoir size must be >= 1, bootstrap resamples >= 10")
        if not 0 < self.ci_level < 1:
            raise ValueError(f"CI level must be in (0, 1), got {self.ci_level}")

    @property
    def n_bins(self) -> int:
        """Whole bins that fit in [min_depth, max_depth] (the range is cut down to whole bins)."""
        return int(math.floor((self.max_depth - self.min_depth) / self.bin_width + 1e-9))

    @property
    def edges(self) -> np.ndarray:
        return self.min_depth + self.bin_width * np.arange(self.n_bins + 1, dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pair_mask(teacher: np.ndarray, lidar: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Flat mask of the pixels a fit uses: LiDAR valid (> 0, finite) and lo <= teacher < hi, teacher > 0."""
    t, lid = np.asarray(teacher).ravel(), np.asarray(lidar).ravel()
    if t.shape != lid.shape:
        raise ValueError(f"teacher and lidar depth differ in size: {t.size} vs {lid.size} pixels")
    return (lid > 0) & np.isfinite(lid) & (t >= lo) & (t < hi) & (t > 0)


def valid_pairs(
    teacher: np.ndarray, lidar: np.ndarray, lo: float, hi: float
) -> tuple[np.ndarray, np.ndarray]:
    """Flat float32 (teacher, lidar) at the pixels of ``pair_mask``."""
    keep = pair_mask(teacher, lidar, lo, hi)
    t, lid = np.asarray(teacher).ravel()[keep], np.asarray(lidar).ravel()[keep]
    return t.astype(np.float32, copy=False), lid.astype(np.float32, copy=False)


class BinAccumulator:
    """Running per-bin count, sum and sum of squares of ``lidar - teacher``, plus a fixed-size
    uniform reservoir of errors per bin (Algorithm R, seeded) for the median and the bootstrap.
    Accumulators of the same bins ``merge``, so shards can be reduced in any grouping."""

    def __init__(self, edges: np.ndarray, reservoir_size: int = 4096, seed: Any = 0) -> None:
        self.edges = np.asarray(edges, dtype=np.float64)
        self.size = int(reservoir_size)
        n = len(self.edges) - 1
        self.counts = np.zeros(n, dtype=np.int64)
        self.sums = np.zeros(n, dtype=np.float64)
        self.sumsq = np.zeros(n, dtype=np.float64)
        self.reservoir = np.zeros((n, self.size), dtype=np.float32)
        self.rng = np.random.default_rng(seed)
        self.frames = 0  # add() calls

    @property
    def n_bins(self) -> int:
        return len(self.counts)

    def add(self, teacher: np.ndarray, lidar: np.ndarray) -> None:
        """Add one frame (or any arrays): pixels where both are valid and the teacher is in range."""
        t, lid = valid_pairs(teacher, lidar, self.edges[0], self.edges[-1])
        self.add_errors(self.bin_index(t), lid.astype(np.float64) - t)
        self.frames += 1

    def bin_index(self, teacher: np.ndarray) -> np.ndarray:
        """Bin of each (in-range) teacher depth."""
        width = self.edges[1] - self.edges[0]
        idx = np.floor((teacher.astype(np.float64) - self.edges[0]) / width).astype(np.int64)
        return np.clip(idx, 0, self.n_bins - 1)

    def add_errors(self, idx: np.ndarray, err: np.ndarray) -> None:
        """Add errors ``err`` falling in bins ``idx`` (in stream order)."""
        new = np.bincount(idx, minlength=self.n_bins)
        self.sums += np.bincount(idx, weights=err, minlength=self.n_bins)
        self.sumsq += np.bincount(idx, weights=err * err, minlength=self.n_bins)
        if self.size == 0:  # statistics only (held-out residuals)
            self.counts += new
            return
        order = np.argsort(idx, kind="stable")  # keeps stream order within a bin
        idx, err = idx[order], err[order].astype(np.float32)
        starts = np.cumsum(new) - new
        pos = self.counts[idx] + np.arange(len(idx)) - starts[idx]  # 0-based position in the bin's stream
        self.counts += new
        head = pos < self.size
        self.reservoir[idx[head], pos[head]] = err[head]
        idx, err, pos = idx[~head], err[~head], pos[~head]
        if len(idx):
            slot = (self.rng.random(len(idx)) * (pos + 1)).astype(np.int64)  # uniform in [0, pos]
            hit = slot < self.size
            key = idx[hit] * self.size + slot[hit]
            _, first_rev = np.unique(key[::-1], return_index=True)
            last = len(key) - 1 - first_rev  # a slot hit twice keeps the later item, as in Algorithm R
            self.reservoir[idx[hit][last], slot[hit][last]] = err[hit][last]

    def sample(self, b: int) -> np.ndarray:
        """The reservoir of bin ``b`` (all its errors while there are at most ``size``)."""
        return self.reservoir[b, : min(self.counts[b], self.size)]

    def merge(self, other: BinAccumulator) -> BinAccumulator:
        """Fold ``other`` into this one (in place, returned): the reservoirs stay uniform samples."""
        if not np.array_equal(self.edges, other.edges) or self.size != other.size:
            raise ValueError("cannot merge accumulators of different bins or reservoir sizes")
        for b in np.flatnonzero(other.counts):
            na, nb = int(self.counts[b]), int(other.counts[b])
            a_vals, b_vals = self.sample(b), other.sample(b)
            if na + nb <= self.size:
                self.reservoir[b, na : na + nb] = b_vals
                continue
            from_a = self._split(na, nb)
            keep_a = a_vals[self.rng.choice(len(a_vals), from_a, replace=False)]
            keep_b = b_vals[self.rng.choice(len(b_vals), self.size - from_a, replace=False)]
            self.reservoir[b] = np.concatenate([keep_a, keep_b])
        self.counts += other.counts
        self.sums += other.sums
        self.sumsq += other.sumsq
        self.frames += other.frames
        return self

    def _split(self, na: int, nb: int) -> int:
        """How many of a uniform ``size``-subset of A+B come from A (hypergeometric)."""
        if na + nb < 10**9:
            return int(self.rng.hypergeometric(na, nb, self.size))
        drawn = self.rng.binomial(self.size, na / (na + nb))
        return int(np.clip(drawn, max(0, self.size - nb), min(na, self.size)))

    @property
    def nbytes(self) -> int:
        return self.counts.nbytes + self.sums.nbytes + self.sumsq.nbytes + self.reservoir.nbytes


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

    def save(self, path: str | Path) -> Path:
        """Write ``lut.json`` atomically (temporary sibling, then rename)."""
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=1) + "\n")

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
    """Read ``lut.json`` (one-line errors: missing, malformed, other version, edited table)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such lut file")
    try:
        data = json.loads(path.read_text())
        if data.get("lut_version") != LUT_VERSION:
            raise ValueError(f"{path}: lut version {data.get('lut_version')} != {LUT_VERSION}")
        bins = data["bins"]
        arr = {k: np.array([np.nan if x is None else x for x in bins[k]], dtype=np.float64) for k in bins}
        lut = Lut(
            edges=arr["edges"],
            value=arr["value"],
            correction=arr["correction"],
            count=np.array(bins["count"], dtype=np.int64),
            std=arr["std"],
            ci_low=arr["ci_low"],
            ci_high=arr["ci_high"],
            filled=np.array(bins["filled"], dtype=bool),
            settings=data["settings"],
            source=data.get("source") or {},
            heldout=data.get("heldout"),
        )
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: malformed lut file ({type(err).__name__}: {err})") from None
    widths = np.diff(lut.edges)
    sizes = {
        len(getattr(lut, k)) for k in ("value", "correction", "count", "std", "ci_low", "ci_high", "filled")
    }
    if sizes != {len(widths)} or not len(widths) or not np.allclose(widths, widths[0], rtol=1e-9):
        raise ValueError(f"{path}: malformed lut file (bins must be equal-width with one value each)")
    if lut.sha256 != data.get("sha256"):
        raise ValueError(f"{path}: table does not match its sha256 (edited by hand?)")
    return lut


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
    return Lut(
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
