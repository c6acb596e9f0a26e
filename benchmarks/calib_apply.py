"""apply_lut throughput on one core: pixels per second for KITTI-size depth frames.

The table is a 79-bin fit (1..80 m, 1 m bins) of a synthetic distance-dependent bias; frames are
375x1242 depth maps, uniform 0.5..100 m (so both constant ends are exercised) with 10 % invalid
pixels (0). The process is pinned to one core. Target: at least 50 M pixels/s for float32 and
float16. ``np.interp`` (float64, the obvious implementation) is timed for comparison.
Run: `.venv/bin/python benchmarks/calib_apply.py`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import click
import numpy as np

from edgedepth.calib.lut import Lut, apply_lut, fit_lut

TARGET = 50e6  # pixels per second


def make_lut(seed: int = 0) -> Lut:
    rng = np.random.default_rng(seed)
    d = rng.uniform(1, 80, 2_000_000)
    teacher = (d * (1.02 + 0.001 * d) + rng.normal(0, 0.3, d.size)).astype(np.float32)
    return fit_lut([(teacher, d.astype(np.float32))], n_bootstrap=20)


def make_frames(count: int, height: int, width: int, invalid: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frames = rng.uniform(0.5, 100, (count, height, width)).astype(np.float32)
    frames[rng.random(frames.shape) < invalid] = 0
    return frames


def time_per_frame(func: Callable[[np.ndarray], np.ndarray], frames: np.ndarray, repeats: int) -> list[float]:
    """Seconds per frame of each repeat (every repeat runs over all frames; one warm-up pass)."""
    for frame in frames[:2]:
        func(frame)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for frame in frames:
            func(frame)
        runs.append((time.perf_counter() - start) / len(frames))
    return runs


def interp_baseline(lut: Lut) -> Callable[[np.ndarray], np.ndarray]:
    centres, correction = lut.centres, lut.correction

    def run(depth: np.ndarray) -> np.ndarray:
        out = depth + np.interp(depth, centres, correction).astype(depth.dtype)
        out[~((depth > 0) & np.isfinite(depth))] = 0
        return out

    return run


@click.command()
@click.option("--frames", "count", default=20, show_default=True, help="Distinct frames per pass.")
@click.option("--repeats", default=5, show_default=True, help="Timed passes per row.")
@click.option("--height", default=375, show_default=True)
@click.option("--width", default=1242, show_default=True)
@click.option("--invalid", default=0.1, show_default=True, help="Share of pixels set to 0.")
@click.option("--core", default=0, show_default=True, help="CPU core to pin to.")
def main(count: int, repeats: int, height: int, width: int, invalid: float, core: int) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})
    lut = make_lut()
    base = make_frames(count, height, width, invalid)
    rows = []
    for name, dtype, func in (
        ("apply_lut", np.float32, lambda d: apply_lut(d, lut)),
        ("apply_lut", np.float16, lambda d: apply_lut(d, lut)),
        ("apply_lut", np.float64, lambda d: apply_lut(d, lut)),
        ("np.interp baseline", np.float32, interp_baseline(lut)),
    ):
        runs = time_per_frame(func, base.astype(dtype), repeats)
        pixels = height * width
        rows.append(
            (name, np.dtype(dtype).name, pixels / np.median(runs), pixels / min(runs), np.median(runs))
        )
    click.echo(
        f"apply_lut on one core (pinned to CPU {core}), {height}x{width} frames, {invalid:.0%} invalid, "
        f"{len(lut.count)} bins, {count} frames x {repeats} passes, numpy {np.__version__}\n"
    )
    header = f"{'function':<20}{'dtype':<9}{'Mpx/s median':>14}{'Mpx/s best':>12}{'ms/frame':>10}"
    click.echo(header + "\n" + "-" * len(header))
    for name, dtype, median, best, seconds in rows:
        click.echo(f"{name:<20}{dtype:<9}{median / 1e6:>14.1f}{best / 1e6:>12.1f}{seconds * 1e3:>10.2f}")
    slowest = min(r[2] for r in rows if r[0] == "apply_lut" and r[1] in ("float32", "float16"))
    verdict = "met" if slowest >= TARGET else "NOT met"
    click.echo(f"\ntarget {TARGET / 1e6:.0f} Mpx/s (float32 and float16): {verdict}")


if __name__ == "__main__":
    main()
