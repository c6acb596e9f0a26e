"""Importers: public data sets -> the rig layout (docs/rig.md), read by the same plan and stages.

- ``import_middlebury(src, out, ...)``: Middlebury 2005/2006 third-size scenes, with depth ground
  truth from the disparity and a simulated LiDAR scan (``edgedepth.labelgen.importers.middlebury``);
- ``import_kitti_depth(src, out, ...)``: a KITTI raw tree, one sequence per drive, with its LiDAR
  (scans, projected .npz maps or KITTI's velodyne_raw PNGs) and annotated ground truth when found
  (``edgedepth.labelgen.importers.kitti_depth``).

Both write every file atomically, give the same bytes when run again, and return an
``ImportReport``.
"""

from __future__ import annotations

from edgedepth.labelgen.importers.kitti_depth import import_kitti_depth
from edgedepth.labelgen.importers.middlebury import import_middlebury
from edgedepth.labelgen.importers.writer import ImportReport

__all__ = ["ImportReport", "import_kitti_depth", "import_middlebury"]
