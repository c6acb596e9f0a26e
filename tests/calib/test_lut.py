"""The bias table on synthetic data with a known answer: fit, CI honesty, fill, apply, file, merge."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import norm

from edgedepth.calib.lut import (
    BinAccumulator,
    Evaluation,
    FitSettings,
    Lut,
    apply_lut,
    fit_lut,
    load_lut,
)

SIGMA_T, SIGMA_L = 0.3, 0.05  # teacher and LiDAR noise (m)
D_LO, D_HI = 2.0, 70.0  # true depth ~ uniform


def bias(d: np.ndarray) -> np.ndarray:
    """Injected, non-linear: the teacher reads b(d) too far, so lidar - teacher ~ +b."""
    return 0.01 * d + 0.002 * d**2


def synthetic_chunks(seed: int, chunks: int = 40, size: int = 100_000):
    """Frames of (teacher, lidar) float32: teacher = d - b(d) + noise (5 % invalid), sparse LiDAR
    = d + noise (70 % invalid), and a few NaN / negative teacher pixels that must be ignored."""
    rng = np.random.default_rng(seed)
    for _ in range(chunks):
        d = rng.uniform(D_LO, D_HI, size)
        teacher = (d - bias(d) + rng.normal(0, SIGMA_T, size)).astype(np.float32)
        lidar = (d + rng.normal(0, SIGMA_L, size)).astype(np.float32)
        lidar[rng.random(size) < 0.7] = 0
        teacher[rng.random(size) < 0.05] = 0
        teacher[:3] = (np.nan, -1.0, np.inf)
        yield teacher, lidar


def expected_bin_means(edges: np.ndarray) -> np.ndarray:
    """E[lidar - teacher | teacher in bin] under the generating model, by 1-D quadrature.

    With t = g(d) + e, g(d) = d - b(d), e ~ N(0, s^2) and LiDAR noise independent of everything:
    E[(b(d) - e) 1{a <= t < c}] = b(d) P - s (phi(alpha/s) - phi(beta/s)), alpha = a - g, beta = c - g.
    """
    d = np.linspace(D_LO, D_HI, 400_001)
    g = d - bias(d)
    out = np.full(len(edges) - 1, np.nan)
    for k, (a, c) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        alpha, beta = (a - g) / SIGMA_T, (c - g) / SIGMA_T
        p = norm.cdf(beta) - norm.cdf(alpha)
        num = bias(d) * p - SIGMA_T * (norm.pdf(alpha) - norm.pdf(beta))
        if np.trapezoid(p, d) > 1e-9:
            out[k] = np.trapezoid(num, d) / np.trapezoid(p, d)
    return out


@pytest.fixture(scope="module")
def fitted() -> Lut:
    return fit_lut(synthetic_chunks(seed=1), min_count=100, n_bootstrap=400)


def test_fit_recovers_the_injected_bias_within_its_confidence_intervals(fitted):
    lut = fitted
    expected = expected_bin_means(lut.edges)
    populated = ~lut.filled
    assert populated.sum() >= 55  # teacher depths span about 2..60 m
    assert np.all(np.isfinite(expected[populated]))
    inside = (lut.ci_low <= expected) & (expected <= lut.ci_high)
    miss_rate = 1 - inside[populated].mean()
    assert miss_rate <= 0.10, f"{miss_rate:.1%} of bins miss the true value"
    err = np.abs(lut.value - expected)[populated]
    assert err.max() < 0.02  # CI half-widths are about 0.004 m; the bias itself reaches 8 m
    assert lut.value[49] > 10 * lut.value[9] > 2  # bins 50-51 m and 10-11 m: grows with distance
    # the CI of the mean is the full-data one (reservoir bootstrap rescaled), not the reservoir's
    half = (lut.ci_high - lut.ci_low)[populated] / 2
    theory = 1.96 * lut.std[populated] / np.sqrt(lut.count[populated])
    np.testing.assert_allclose(half, theory, rtol=0.25)


def test_fit_is_reproducible(fitted):
    again = fit_lut(synthetic_chunks(seed=1), min_count=100, n_bootstrap=400)
    assert again.sha256 == fitted.sha256
    assert again.to_dict() == fitted.to_dict()


def test_held_out_rmse_drops_after_correction(fitted):
    evaluation = Evaluation(fitted)
    for teacher, lidar in synthetic_chunks(seed=2, chunks=5):
        evaluation.add(teacher, lidar)
    figures = evaluation.to_dict()
    assert figures["frames"] == 5 and figures["pixels"] > 100_000
    assert figures["rmse_after"] < 0.5 * figures["rmse_before"]
    assert figures["rmse_after"] < 0.4  # about the noise left: sqrt(0.3^2 + 0.05^2) and float rounding
    assert figures["abs_rel_after"] < figures["abs_rel_before"]
    residual = np.array([np.nan if v is None else v for v in figures["residual_mean"]])
    counts = np.array(figures["residual_count"])
    assert np.nanmax(np.abs(residual[counts >= 1000])) < 0.05


def skewed(seed: int, bins: int, per_bin: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Teacher depth at bin centres 1.5, 2.5, ... and exponential errors: mean 1 + b, median ln 2 + b."""
    rng = np.random.default_rng(seed)
    b = np.repeat(np.arange(bins), per_bin)
    teacher = (1.5 + b + rng.uniform(-0.4, 0.4, b.size)).astype(np.float32)
    err = rng.exponential(1.0, b.size) + 0.1 * b
    return teacher, (teacher + err).astype(np.float32), b


def test_mean_and_median_are_the_exact_statistics_when_the_reservoir_holds_everything():
    teacher, lidar, b = skewed(seed=3, bins=10, per_bin=1500)
    err = lidar.astype(np.float64) - teacher
    chunks = [(teacher[i::3], lidar[i::3]) for i in range(3)]
    mean = fit_lut(chunks, min_depth=1, max_depth=11, min_count=10, reservoir_size=2048)
    median = fit_lut(chunks, min_depth=1, max_depth=11, stat="median", min_count=10, reservoir_size=2048)
    np.testing.assert_allclose(mean.value, [err[b == k].mean() for k in range(10)], rtol=1e-12)
    np.testing.assert_allclose(
        median.value, [np.median(err[b == k].astype(np.float32)) for k in range(10)], rtol=1e-6
    )
    np.testing.assert_allclose(mean.value - median.value, 1 - np.log(2), atol=0.08)
    assert median.settings["stat"] == "median" and median.sha256 != mean.sha256


def test_median_ci_covers_the_true_median_from_a_subsampling_reservoir():
    teacher, lidar, b = skewed(seed=4, bins=40, per_bin=20_000)
    lut = fit_lut([(teacher, lidar)], min_depth=1, max_depth=41, stat="median", reservoir_size=1024)
    truth = np.log(2) + 0.1 * np.arange(40)
    assert lut.count.min() == 20_000 and lut.count.min() > 1024
    inside = (lut.ci_low <= truth) & (truth <= lut.ci_high)
    assert inside.mean() >= 0.9
    assert np.abs(lut.value - truth).max() < 0.12  # about 4 standard errors of a 1024-sample median


def test_bins_under_min_count_are_interpolated_and_flagged_and_ends_are_held():
    teacher = np.concatenate([np.full(500, 2.5), np.full(10, 4.5), np.full(500, 6.5)]).astype(np.float32)
    err = np.concatenate([np.full(500, 1.0), np.full(10, 100.0), np.full(500, 3.0)])
    lut = fit_lut([(teacher, teacher + err)], min_depth=0, max_depth=10, min_count=100)
    assert lut.filled.tolist() == [True] * 2 + [False] + [True] * 3 + [False] + [True] * 3
    assert lut.count[4] == 10 and lut.value[4] == pytest.approx(100.0)  # reported, not used
    assert np.isnan(lut.ci_low[4]) and np.isnan(lut.ci_high[4])
    np.testing.assert_allclose(lut.correction, [1, 1, 1, 1.5, 2, 2.5, 3, 3, 3, 3])
    depth = np.array([0.2, 1.0, 4.5, 9.9, 30.0, 500.0], dtype=np.float32)
    np.testing.assert_allclose(apply_lut(depth, lut), depth + [1, 1, 2, 3, 3, 3], rtol=1e-6)


def hand_lut(edges, correction) -> Lut:
    n = len(correction)
    nan = np.full(n, np.nan)
    return Lut(
        edges=np.asarray(edges, dtype=np.float64),
        value=np.asarray(correction, dtype=np.float64),
        correction=np.asarray(correction, dtype=np.float64),
        count=np.full(n, 1000),
        std=nan,
        ci_low=nan,
        ci_high=nan,
        filled=np.zeros(n, dtype=bool),
        settings=FitSettings(
            bin_width=edges[1] - edges[0], min_depth=edges[0], max_depth=edges[-1]
        ).to_dict(),
    )


HAND = hand_lut([1.0, 2.0, 3.0, 4.0, 5.0], [-0.1, -0.2, -0.4, -0.8])  # centres 1.5, 2.5, 3.5, 4.5


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_apply_lut_on_hand_values(dtype):
    centres, mids, beyond = [1.5, 2.5, 3.5, 4.5], [2.0, 3.0, 4.0], [1.0, 0.5, 6.0, 100.0]
    depth = np.array(centres + mids + beyond, dtype=dtype)
    want = [1.4, 2.3, 3.1, 3.7] + [1.85, 2.7, 3.4] + [0.9, 0.4, 5.2, 99.2]
    got = apply_lut(depth, HAND)
    assert got.dtype == dtype and got.shape == depth.shape
    np.testing.assert_allclose(got, want, rtol=1e-3 if dtype == np.float16 else 1e-6)
    steep = hand_lut([1.0, 2.0, 3.0], [-1.0, -2.0])
    np.testing.assert_array_equal(
        apply_lut(np.array([0.5, 1.0, 2.0, 2.5], dtype=dtype), steep), [0, 0, 0.5, 0.5]
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_apply_lut_keeps_invalid_pixels_zero_and_matches_np_interp(dtype, fitted):
    rng = np.random.default_rng(5)
    depth = rng.uniform(0.5, 100, (3, 37, 101)).astype(dtype)  # odd sizes: several blocks and a tail
    bad = rng.random(depth.shape) < 0.1
    depth[bad] = np.array([0, -3, np.nan, np.inf, -np.inf], dtype=dtype)[rng.integers(0, 5, bad.sum())]
    got = apply_lut(depth[:, ::-1], fitted)  # a non-contiguous view
    d = depth[:, ::-1].astype(np.float64)
    with np.errstate(invalid="ignore"):
        want = np.where((d > 0) & np.isfinite(d), d + np.interp(d, fitted.centres, fitted.correction), 0)
    assert got.dtype == dtype and got.shape == depth.shape
    np.testing.assert_array_equal(got[bad[:, ::-1]], 0)
    tol = {"rtol": 1e-3} if dtype == np.float16 else {"rtol": 1e-6, "atol": 1e-5}
    np.testing.assert_allclose(got, np.maximum(want, 0).astype(dtype), **tol)


def test_apply_lut_rejects_integer_depth():
    with pytest.raises(ValueError, match="float"):
        apply_lut(np.ones(3, dtype=np.uint16), HAND)


def test_save_load_round_trip_is_identical(fitted, tmp_path):
    path = fitted.save(tmp_path / "out" / "lut.json")
    loaded = load_lut(path)
    assert loaded.sha256 == fitted.sha256
    assert loaded.to_dict() == fitted.to_dict()
    assert path.read_text() == loaded.save(tmp_path / "again.json").read_text()
    data = json.loads(path.read_text())
    assert data["lut_version"] == 1 and data["sha256"] == fitted.sha256
    assert set(data["bins"]) == {"edges", "centres", "value", "correction", "count", "std", "ci_low",
                                 "ci_high", "filled"}  # fmt: skip
    assert data["settings"]["stat"] == "mean" and data["settings"]["min_count"] == 100
    d = np.linspace(0, 90, 1000, dtype=np.float32)
    np.testing.assert_array_equal(apply_lut(d, loaded), apply_lut(d, fitted))


def test_load_lut_errors_are_one_line(fitted, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_lut(tmp_path / "nope.json")
    path = fitted.save(tmp_path / "lut.json")
    data = json.loads(path.read_text())
    data["bins"]["correction"][10] += 0.5
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="sha256") as err:
        load_lut(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    path.write_text(json.dumps({**data, "lut_version": 99}))
    with pytest.raises(ValueError, match="version 99"):
        load_lut(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="malformed"):
        load_lut(path)


def exact_chunks(seed: int, chunks: int, size: int = 20_000, sign: float = 1.0):
    """Teacher on a 1/64 m grid, errors on a 1/256 m grid: every float64 sum is exact."""
    rng = np.random.default_rng(seed)
    for _ in range(chunks):
        teacher = (rng.integers(64, 20 * 64, size) / 64).astype(np.float32)
        err = sign * rng.integers(0, 4 * 256, size) / 256
        yield teacher, (teacher + err).astype(np.float32)


def test_merge_equals_a_single_pass():
    edges = np.arange(1.0, 21.0)
    first, second = list(exact_chunks(6, 10)), list(exact_chunks(7, 1, sign=-1.0))
    single = BinAccumulator(edges, reservoir_size=512, seed=0)
    a, b = BinAccumulator(edges, 512, seed=1), BinAccumulator(edges, 512, seed=2)
    for teacher, lidar in first + second:
        single.add(teacher, lidar)
    for teacher, lidar in first:
        a.add(teacher, lidar)
    for teacher, lidar in second:
        b.add(teacher, lidar)
    merged = a.merge(b)
    np.testing.assert_array_equal(merged.counts, single.counts)
    np.testing.assert_array_equal(merged.sums, single.sums)
    np.testing.assert_array_equal(merged.sumsq, single.sumsq)
    assert merged.frames == single.frames == 11
    # the merged reservoir is a uniform sample of both streams: first-stream errors are >= 0,
    # second-stream ones < 0 (or 0), in proportion 10 : 1
    share = np.array([(merged.sample(k) > 0).mean() for k in range(merged.n_bins)])
    expected = (merged.counts - b.counts) / merged.counts * (1 - 1 / 1024)  # an error of 0 is not > 0
    assert np.all(np.abs(share - expected) < 0.07)  # 5 binomial sd of a 512-sample share
    assert abs(share.mean() - expected.mean()) < 0.01
    errors = np.concatenate([lid.astype(np.float64) - t for t, lid in first + second])
    bins = np.concatenate([np.floor(t).astype(int) - 1 for t, _ in first + second])
    for k in range(merged.n_bins):  # 4 sd of the median of 512 draws
        assert np.median(merged.sample(k)) == pytest.approx(np.median(errors[bins == k]), abs=0.4)


def test_reservoir_is_bounded_uniform_and_deterministic():
    edges = np.array([0.0, 1.0])
    acc = BinAccumulator(edges, reservoir_size=1000, seed=3)
    twin = BinAccumulator(edges, reservoir_size=1000, seed=3)
    n, chunk = 200_000, 7_000
    stream = np.arange(n, dtype=np.float64)  # the error tells the position in the stream
    for start in range(0, n, chunk):
        for target in (acc, twin):
            target.add_errors(
                np.zeros(len(stream[start : start + chunk]), np.int64), stream[start : start + chunk]
            )
    assert acc.reservoir.shape == (1, 1000) and acc.nbytes == twin.nbytes < 10_000
    assert acc.counts[0] == n and len(acc.sample(0)) == 1000
    np.testing.assert_array_equal(acc.reservoir, twin.reservoir)
    sample = acc.sample(0)
    assert len(np.unique(sample)) == 1000
    # uniform over the stream: each tenth of it holds about 100 of the 1000 (binomial sd 9.5)
    per_tenth = np.bincount((sample // (n / 10)).astype(int), minlength=10)
    assert per_tenth.min() > 60 and per_tenth.max() < 140
    other = BinAccumulator(edges, reservoir_size=1000, seed=4)
    other.add_errors(np.zeros(n, np.int64), stream)
    assert not np.array_equal(other.reservoir, acc.reservoir)


def test_memory_stays_bounded_while_streaming():
    acc = BinAccumulator(FitSettings().edges, reservoir_size=4096)
    size = acc.nbytes
    for teacher, lidar in synthetic_chunks(seed=8, chunks=10):
        acc.add(teacher, lidar)
        assert acc.reservoir.shape == (79, 4096) and acc.nbytes == size
    assert acc.counts.max() > 4096 and size < 2_000_000


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_depth": 1.0}, "empty bin range: max depth"),
        ({"min_depth": 10, "max_depth": 5}, "empty bin range: max depth"),
        ({"bin_width": 0.0}, "empty bin range: bin width must be > 0"),
        ({"bin_width": -1.0}, "empty bin range: bin width must be > 0"),
        ({"bin_width": 100.0}, "larger than"),
        ({"stat": "mode"}, "stat must be one of mean, median"),
        ({"min_count": 0}, "min count"),
    ],
)
def test_bad_settings_are_one_line_errors(kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        fit_lut(iter(()), **kwargs)
    assert "\n" not in str(err.value)


def test_no_overlapping_pixels_is_an_error():
    teacher = np.full((4, 5), 30.0, dtype=np.float32)
    with pytest.raises(ValueError, match="no overlapping pixels"):
        fit_lut([(teacher, np.zeros_like(teacher))])
    with pytest.raises(ValueError, match="no overlapping pixels"):
        fit_lut([(teacher, teacher)], max_depth=20)  # teacher out of range
    with pytest.raises(ValueError, match="no bin has 100 pixels"):
        fit_lut([(teacher, teacher)])
    with pytest.raises(ValueError, match="teacher depth 4x5 and lidar depth 2x5 .H x W. differ in shape"):
        fit_lut([(teacher, teacher[:2])])
