"""The settings of a bias-table fit and the limits every table keeps (``FitSettings``, ``MAX_BINS``, ...).

Shared by the fit and apply (``edgedepth.calib.lut``) and the checks at load (``edgedepth.calib.lutfile``).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgedepth.common import clip, is_finite

LUT_VERSION = 1
STATS = ("mean", "median")


MAX_BINS = 10_000
"""Most bins a table may have: each holds a reservoir of samples (memory), and 1 cm bins over
1-80 m are 7,900."""

MAX_CORRECTION_M = 1000.0
"""Largest error ``lidar - teacher`` (m) a table may hold in ``value`` or ``correction``: the most any
stereo teacher stores (``edgedepth.labelgen.teacher_stages.MAX_STORED_DEPTH_M``). The smallest is ``-edges[-1]``: the
LiDAR depth is > 0 and the teacher's is below the last edge."""

MAX_RESERVOIR_SAMPLES = 2**28
"""Most reservoir samples of a fit (bins x reservoir size; 1 GiB of float32)."""
MAX_BOOTSTRAP_DRAWS = 2**26
"""Most draws of one bin's bootstrap (resamples x reservoir size; 512 MiB of indices)."""

_FLOAT_SETTINGS = ("bin_width", "min_depth", "max_depth", "ci_level")
_INT_SETTINGS = ("min_count", "reservoir_size", "n_bootstrap", "seed")


def show(value: Any, limit: int = 40) -> str:
    """A short repr for messages: a 2 M-entry list or a long string is cut."""
    return clip(value, limit)


@dataclass(frozen=True)
class FitSettings:
    """Bins and statistics of a fit; validated on construction (one-line ValueErrors naming the field)."""

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
        for name in _FLOAT_SETTINGS + _INT_SETTINGS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not is_finite(value):
                raise ValueError(f"{name.replace('_', ' ')} must be a finite number, got {show(value)}")
            if name in _INT_SETTINGS and value != int(value):
                raise ValueError(f"{name.replace('_', ' ')} must be a whole number, got {show(value)}")
            object.__setattr__(self, name, int(value) if name in _INT_SETTINGS else float(value))
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
                f"bin width {self.bin_width:g} m gives {self.n_bins if self.n_bins < 2**62 else 'over 2^62'} bins "
                f"over {self.min_depth:g}..{self.max_depth:g} m; "
                f"at most {MAX_BINS} (a bin width of at least {(self.max_depth - self.min_depth) / MAX_BINS:.3g} m)"
            )
        if not isinstance(self.stat, str) or self.stat not in STATS:
            raise ValueError(f"stat must be one of {', '.join(STATS)}, got {show(self.stat)}")
        if self.min_count < 1 or self.reservoir_size < 1 or self.n_bootstrap < 10:
            raise ValueError("min count and reservoir size must be >= 1, bootstrap resamples >= 10")
        if self.n_bins * self.reservoir_size > MAX_RESERVOIR_SAMPLES:
            raise ValueError(
                f"reservoir size {self.reservoir_size} x {self.n_bins} bins is more than "
                f"{MAX_RESERVOIR_SAMPLES} samples (1 GiB)"
            )
        if self.n_bootstrap * self.reservoir_size > MAX_BOOTSTRAP_DRAWS:
            raise ValueError(
                f"bootstrap resamples {self.n_bootstrap} x reservoir size {self.reservoir_size} is more "
                f"than {MAX_BOOTSTRAP_DRAWS} draws per bin"
            )
        if not 0 < self.ci_level < 1:
            raise ValueError(f"CI level must be in (0, 1), got {self.ci_level}")
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be in [0, 2**63), got {self.seed}")

    @property
    def n_bins(self) -> int:
        """Whole bins that fit in [min_depth, max_depth] (the range is cut down to whole bins)."""
        span = (self.max_depth - self.min_depth) / self.bin_width
        return int(math.floor(span + 1e-9)) if span < 2**62 else 2**62  # 1e308 / 1e-300 is inf

    @property
    def edges(self) -> np.ndarray:
        return self.min_depth + self.bin_width * np.arange(self.n_bins + 1, dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


__all__ = [
    "LUT_VERSION",
    "MAX_BINS",
    "MAX_BOOTSTRAP_DRAWS",
    "MAX_CORRECTION_M",
    "MAX_RESERVOIR_SAMPLES",
    "STATS",
    "FitSettings",
    "show",
]
