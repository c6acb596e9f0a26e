"""The Fig. 2 plot: a real PNG with two panels, with and without held-out figures."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest

from edgedepth.calib.lut import MAX_BINS, Evaluation, Lut, fit_lut
from edgedepth.calib.plot import lut_figure, plot_lut

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def frames(seed: int, count: int = 4, size: int = 50_000):
    """Teacher that reads 3 % + 1 % per 10 m too far, sparse LiDAR; few pixels beyond 50 m."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        d = np.concatenate([rng.uniform(3, 50, size), rng.uniform(50, 70, size // 2000)])
        teacher = (d * (1.03 + 0.001 * d) + rng.normal(0, 0.3, d.size)).astype(np.float32)
        lidar = np.where(rng.random(d.size) < 0.3, d, 0).astype(np.float32)
        yield teacher, lidar


@pytest.fixture(scope="module")
def lut() -> Lut:
    fitted = fit_lut(frames(0), min_count=50, n_bootstrap=100)
    source = {"teacher_stage": "sgbm", "teacher": ["opencv-sgbm"]}
    return replace(fitted, source=source)


@pytest.fixture(scope="module")
def lut_heldout(lut) -> Lut:
    evaluation = Evaluation(lut)
    for teacher, lidar in frames(1, count=2):
        evaluation.add(teacher, lidar)
    return replace(lut, heldout={"drives": ["2011_09_26_drive_0002_sync"], **evaluation.to_dict()})


@pytest.mark.parametrize("which", ["lut", "lut_heldout"])
def test_png_has_two_panels_and_a_readable_title(which, request, tmp_path):
    import matplotlib.pyplot as plt

    table = request.getfixturevalue(which)
    assert table.filled.any() and (~table.filled).sum() > 20
    open_before = plt.get_fignums()
    path = plot_lut(table, tmp_path / "sub" / "lut.png")
    assert plt.get_fignums() == open_before  # closed
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and 20_000 < len(data) < 2_000_000
    fig = lut_figure(table)
    try:
        top, bottom = fig.axes
        title = top.get_title()
        assert title.startswith("sgbm (opencv-sgbm)") and "(mean)" in title
        assert bottom.get_yscale() == "log" and "(m)" in bottom.get_xlabel() and "(m)" in top.get_ylabel()
        labels = [t.get_text() for t in top.get_legend().get_texts()]
        assert any("CI" in t for t in labels) and any("filled" in t for t in labels)
        if table.heldout:
            before, after = table.heldout["rmse_before"], table.heldout["rmse_after"]
            assert f"held-out RMSE {before:.3f} → {after:.3f} m" in title and after < before
            assert any("held-out residual" in t for t in labels)
        else:
            assert "no held-out drives" in title
    finally:
        plt.close(fig)


def test_bands_and_bars_hold_the_table(lut):
    import matplotlib.pyplot as plt

    fig = lut_figure(lut)
    try:
        top, bottom = fig.axes
        populated = ~lut.filled
        (band,) = [c for c in top.collections if c.get_label().endswith("bootstrap CI")]
        verts = np.array([p.vertices[:4] for p in band.get_paths()])
        np.testing.assert_allclose(verts[:, 0, 1], lut.ci_low[populated])
        np.testing.assert_allclose(verts[:, 1, 1], lut.ci_high[populated])
        np.testing.assert_allclose(verts[:, [0, 2], 0].mean(axis=1), lut.centres[populated])
        bars = {
            c.get_label(): np.array([p.vertices[1, 1] for p in c.get_paths()]) for c in bottom.collections
        }
        np.testing.assert_array_equal(bars["fit pixels"], lut.count[populated])
        np.testing.assert_array_equal(bars["filled bins"], lut.count[lut.filled])
    finally:
        plt.close(fig)


def test_the_largest_table_plots_in_seconds_with_one_artist_per_series(tmp_path):
    """Fault 10: ``ax.bar`` made one patch per bin (20 s for 10,000 bins); the cap makes this the worst."""
    import matplotlib.pyplot as plt

    big = fit_lut(
        frames(2, count=2), bin_width=(80 - 1) / MAX_BINS, min_count=3, reservoir_size=8, n_bootstrap=20
    )
    assert len(big.count) == MAX_BINS and big.filled.any() and (~big.filled).any()
    fig = lut_figure(big)
    try:
        assert all(len(ax.patches) == 0 and len(ax.collections) <= 2 for ax in fig.axes)
    finally:
        plt.close(fig)
    start = time.perf_counter()
    data = plot_lut(big, tmp_path / "lut.png").read_bytes()
    assert data[:8] == PNG_SIGNATURE and time.perf_counter() - start < 60  # about 1 s on an idle core
