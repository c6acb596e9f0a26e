"""The demo's settings per kind of data: depth ranges from the data (calib.json) unless fixed."""

from __future__ import annotations

import pytest

from edgedepth.demo.result import KITTI, MOTORCYCLE, RIG, nice_bin_width


def test_rig_settings_take_the_declared_depth_range_and_a_round_bin_width():
    motorcycle = MOTORCYCLE.resolved((1.0, 8.0))
    assert (motorcycle.min_depth, motorcycle.max_depth, motorcycle.bin_width) == (1.0, 8.0, 0.25)
    assert motorcycle.depth_source == "calib.json depth_range_m"
    rig = RIG.resolved((0.5, 20.0))
    assert (rig.min_depth, rig.max_depth, rig.bin_width) == (0.5, 20.0, 0.5)
    undeclared = RIG.resolved(None)  # what training falls back to as well
    assert (undeclared.min_depth, undeclared.max_depth, undeclared.bin_width) == (1.0, 80.0, 2.5)
    assert "no depth_range_m" in undeclared.depth_source


def test_fixed_settings_win_over_the_data():
    kitti = KITTI.resolved((2.0, 50.0))
    assert (kitti.min_depth, kitti.max_depth, kitti.bin_width) == (1.0, 80.0, 1.0)
    assert kitti.depth_source == "KITTI's 1-80 m"


@pytest.mark.parametrize(("span", "width"), [(79.0, 2.5), (7.0, 0.2), (3.0, 0.1), (30.0, 1.0), (0.5, 0.01)])
def test_nice_bin_width_gives_at_least_30_round_bins(span, width):
    assert nice_bin_width(span) == width
    assert span / width >= 30


def test_nice_bin_width_refuses_an_empty_span():
    with pytest.raises(ValueError, match="positive depth span"):
        nice_bin_width(0.0)
