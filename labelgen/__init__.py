"""Teacher label generation from KITTI raw logs (stages, HDF5 shards, dask execution).

The package face: ``LabelFolder`` (``labelgen.folder``), a label folder's plan and shard statuses
read once per process, accepted by every function that takes a label folder. It is imported on
first use, so ``import labelgen`` stays light.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("edgedepth")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

_HOMES = {"LabelFolder": "labelgen.folder"}

__all__ = ["LabelFolder", "__version__"]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'labelgen' has no attribute {name!r}")
    return getattr(import_module(_HOMES[name]), name)
