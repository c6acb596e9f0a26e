"""The per-bin accumulator of ``lidar - teacher`` errors (streaming, mergeable) and the pixel pairs a
fit uses. ``edgedepth.calib.lut`` re-exports these names; decisions: docs/lut.md."""

from __future__ import annotations

from typing import Any

import numpy as np


def shape_text(shape: tuple[int, ...]) -> str:
    """``375x1242`` for an (H, W) array, ``20000`` for a flat one."""
    return "x".join(str(n) for n in shape) if shape else "a scalar"


def pair_mask(teacher: np.ndarray, lidar: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Flat mask of the pixels a fit uses: LiDAR valid (> 0, finite) and lo <= teacher < hi, teacher > 0.

    Arrays of different shapes are a one-line ValueError stating both (callers prefix the file)."""
    teacher, lidar = np.asarray(teacher), np.asarray(lidar)
    if teacher.shape != lidar.shape:
        raise ValueError(
            f"teacher depth {shape_text(teacher.shape)} and lidar depth {shape_text(lidar.shape)} (H x W) "
            "differ in shape: a pair must be of one size"
        )
    t, lid = teacher.ravel(), lidar.ravel()
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
