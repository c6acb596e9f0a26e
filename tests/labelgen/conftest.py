"""Small KITTI-layout trees for the labelgen tests, and the real sample frame."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

from edgedepth.labelgen.teachers.weights import fetch_psmnet_kitti2015
from tests.kitti_tree import make_kitti_tree


@pytest.fixture
def kitti_tree(tmp_path: Path) -> Path:
    """Two dates of different image sizes, three drives, eleven frames."""
    return make_kitti_tree(
        tmp_path / "kitti",
        {"2011_09_26_drive_0001_sync": 5, "2011_09_26_drive_0002_sync": 3, "2011_09_28_drive_0001_sync": 3},
        {"2011_09_26": (64, 160), "2011_09_28": (62, 156)},
    )


def weights_cache() -> Path:
    """$EDGEDEPTH_WEIGHTS_CACHE, else ~/.cache/edgedepth/weights."""
    env = os.environ.get("EDGEDEPTH_WEIGHTS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "edgedepth" / "weights"


@functools.cache
def kitti2015_checkpoint() -> Path:
    """The real checkpoint, downloaded once into the cache; fails on CI, skips elsewhere, when offline."""
    try:
        return fetch_psmnet_kitti2015(weights_cache())
    except (RuntimeError, OSError) as err:
        if os.environ.get("CI"):
            pytest.fail(f"cannot obtain the PSMNet KITTI 2015 checkpoint: {err}")
        pytest.skip(f"cannot obtain the PSMNet KITTI 2015 checkpoint: {err}")


@pytest.fixture(scope="session")
def psmnet_kitti2015() -> Path:
    return kitti2015_checkpoint()
