"""Teacher label generation from KITTI raw logs (stages, HDF5 shards, dask execution)."""
