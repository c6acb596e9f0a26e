"""Fixtures shared by every test package."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DEFAULT_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "kitti_raw_sample"


@pytest.fixture(scope="session")
def kitti_sample() -> Path:
    """The real KITTI frame: $EDGEDEPTH_KITTI_SAMPLE (required in CI), else the shared copy."""
    env = os.environ.get("EDGEDEPTH_KITTI_SAMPLE")
    if not env and os.environ.get("CI"):
        pytest.fail("EDGEDEPTH_KITTI_SAMPLE is not set; .ci/run must point it at the KITTI sample")
    path = Path(env) if env else DEFAULT_SAMPLE
    if not (path / "2011_09_26" / "calib_cam_to_cam.txt").is_file():
        pytest.fail(f"{path}: KITTI sample not found (set EDGEDEPTH_KITTI_SAMPLE)")
    return path


DEFAULT_REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real stereo sets (middlebury2006/, kitti_tiny/): $EDGEDEPTH_REAL_DATA, else the shared copy.
    Missing data fails the test (never skips it), in CI and elsewhere."""
    env = os.environ.get("EDGEDEPTH_REAL_DATA")
    if not env and os.environ.get("CI"):
        pytest.fail("EDGEDEPTH_REAL_DATA is not set; .ci/run must point it at the real data sets")
    path = Path(env) if env else DEFAULT_REAL
    if not (path / "middlebury2006").is_dir() or not (path / "kitti_tiny" / "2011_09_26").is_dir():
        pytest.fail(f"{path}: real data sets not found (set EDGEDEPTH_REAL_DATA)")
    return path
