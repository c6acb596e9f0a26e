"""Fixtures shared by every test package."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist runs one worker per core: one compute thread each (in every process a test
    # starts too), or torch's and OpenMP's pools oversubscribe the cores and spin (a demo's training
    # took 8x longer with two 2-thread workers on 2 cores).
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

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


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups into the node ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Scheduling for pytest-xdist (`make test` runs `-n auto --dist loadgroup`): the tests of a
    module that holds a slow test stay together on one worker, so its module fixtures (a demo run,
    a label folder) are built once, and those modules go first, longest first, so the end-to-end
    work starts at once and the fast tests fill the other workers. Without xdist, order only."""
    slow = {item.module.__name__ for item in items if item.get_closest_marker("slow")}
    grouped = config.pluginmanager.hasplugin("xdist")
    for item in items:
        if grouped and item.module.__name__ in slow:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(
        key=lambda item: rank.get(
            item.module.__name__, len(rank) if item.module.__name__ in slow else 1 + len(rank)
        )
    )


LONGEST_FIRST = (
    # measured with --durations on the 2-core CI machine: the modules whose slow tests take longest
    "tests.demo.test_demo",
)
