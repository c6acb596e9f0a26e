"""Teacher label generation from KITTI raw logs (stages, HDF5 shards, dask execution)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edgedepth")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
