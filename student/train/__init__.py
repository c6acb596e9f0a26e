"""Training the student from label shards: data, sampler, losses, the loop, its run folder.

Each public name maps to its home module and is imported on first use (``edgedepth.common.faces``).
"""

from __future__ import annotations

from edgedepth.common import lazy_face

_HOMES = {
    "BEST": "edgedepth.student.train.run_folder",
    "CONFIG_FILE": "edgedepth.student.train.run_folder",
    "KITTI_LABEL_RANGE": "edgedepth.student.train.loop",
    "LAST": "edgedepth.student.train.run_folder",
    "LabelDataset": "edgedepth.student.train.data",
    "MultiScaleLoss": "edgedepth.student.train.losses",
    "barrier": "edgedepth.student.train.distributed",
    "broadcast_object": "edgedepth.student.train.distributed",
    "from_environment": "edgedepth.student.train.distributed",
    "init_distributed": "edgedepth.student.train.distributed",
    "shutdown": "edgedepth.student.train.distributed",
    "split_by_frames": "edgedepth.student.train.data",
    "train": "edgedepth.student.train.loop",
}

__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_face(__name__, _HOMES)
