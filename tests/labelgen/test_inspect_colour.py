"""The depth figures' colour scale: robust percentile limits, a labelled metre bar, a no-data colour
that no depth has (issue 22: black no-data looked like turbo_r's dark far end)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from edgedepth.demo import teachers  # noqa: E402
from edgedepth.labelgen import inspect  # noqa: E402
from edgedepth.labelgen.inspect import DEPTH_CMAP, NO_DATA_COLOUR, _colour_range, depth_figure  # noqa: E402


def _nearest_depth_colour(colour) -> float:
    """RGB distance (0-255) from ``colour`` to the nearest colour of the depth map."""
    ramp = plt.get_cmap(DEPTH_CMAP)(np.linspace(0, 1, 1024))[:, :3] * 255
    return float(np.sqrt(((ramp - np.array(mcolors.to_rgb(colour)) * 255) ** 2).sum(axis=1)).min())


def test_limits_are_the_2nd_and_98th_percentiles() -> None:
    depth = np.linspace(2.0, 5.0, 10_000, dtype=np.float32).reshape(100, 100)
    depth[:, :1] = 55.0  # a border stripe: 1% of the pixels
    depth[50, 50] = 0.0  # no data
    valid, lo, hi, extend = _colour_range(depth)
    assert not valid[50, 50] and valid.sum() == depth.size - 1
    assert lo == np.percentile(depth[valid], 2) and hi == np.percentile(depth[valid], 98)
    assert 2.0 < lo < 2.2 and hi < 5.0  # the stripe saturates instead of setting the scale (was 55)
    assert extend == "both"


def test_flat_and_empty_maps_get_a_usable_scale() -> None:
    _, lo, hi, extend = _colour_range(np.full((4, 4), 3.0))
    assert lo < 3.0 < hi and extend == "neither"
    valid, lo, hi, _ = _colour_range(np.zeros((4, 4)))
    assert not valid.any() and (lo, hi) == (0.0, 1.0)


def test_no_data_colour_is_unlike_any_depth_colour() -> None:
    assert _nearest_depth_colour(NO_DATA_COLOUR) > 120
    assert _nearest_depth_colour("black") < 90  # what it was: near turbo_r's dark far end
    assert teachers.NO_DATA_COLOUR == NO_DATA_COLOUR  # the demo's side-by-side figures agree


def test_figure_paints_no_data_grey_and_labels_the_metre_bar() -> None:
    depth = np.tile(np.linspace(2.0, 5.0, 60, dtype=np.float32), (40, 1))
    depth[:, :20] = 0.0
    fig = depth_figure(plt, depth, "t")
    try:
        shown = fig.axes[0].images[0]
        rgba = shown.cmap(shown.norm(shown.get_array()))
        assert np.allclose(rgba[0, 0, :3], mcolors.to_rgb(NO_DATA_COLOUR))
        assert not np.allclose(rgba[0, -1, :3], mcolors.to_rgb(NO_DATA_COLOUR))
        bar = fig.axes[1].get_ylabel()
        assert bar.startswith("depth (m)") and "2-98th percentiles" in bar
        title = fig.axes[0].get_title()
        assert "grey = no data" in title
        low = depth[depth > 0].min()
        assert f"{low:.1f}-5.0 m" in title  # the valid depth's own minimum, not 0.0 (no data is not a depth)
        assert shown.norm.vmin == np.percentile(depth[depth > 0], inspect.COLOUR_PERCENTILES[0])
    finally:
        plt.close(fig)
