"""Reading a label folder: the frames of several stages joined by shard and row.

``LabelReader(LABELS, ["images", "lidar", "sgbm"])[i]`` is one frame of every stage. It stands on
``edgedepth.labelgen.folder`` (the plan and the shard statuses, read once) and ``edgedepth.labelgen.shards`` (the
schema and the checked reads); neither imports it back.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from edgedepth.labelgen.folder import LabelFolder
from edgedepth.labelgen.plan import Plan
from edgedepth.labelgen.shards import BOOKKEEPING_DATASETS, decode, open_shard, read_rows, shard_path


class LabelReader:
    """Frames of a label folder with the datasets of several stages joined by shard and row.

    ``reader[i]`` returns ``{"frame_id": str, "<stage>/<dataset>": array, "<stage>/ok": bool}``.
    ``labels_dir`` is a path or a ``LabelFolder`` (its plan and shard statuses are used, not read
    again). Files are opened lazily, at most ``max_open`` at a time (the least recently used is
    closed: each open shard costs about 0.7 MB), and the reader pickles without open handles (and
    without the folder's caches: it keeps only the path and the plan), so it can serve a
    multi-process DataLoader.
    """

    def __init__(
        self,
        labels_dir: LabelFolder | str | Path,
        stages: Sequence[str],
        verify: str = "quick",
        max_open: int = 32,
    ) -> None:
        if isinstance(max_open, bool) or not isinstance(max_open, int) or max_open < 1:
            raise ValueError(f"max_open must be a positive integer, got {max_open!r}")
        self.max_open = max_open
        folder = LabelFolder.of(labels_dir)
        self.labels_dir = folder.given
        self.plan: Plan = folder.plan
        self.stages = list(stages)
        self._index = [
            (s, row) for s, shard in enumerate(self.plan.shards) for row in range(len(shard.frame_ids))
        ]
        for stage in self.stages:
            for shard in self.plan.shards:
                status = folder.status(stage, shard, verify)
                if not status.complete:
                    raise ValueError(
                        f"{status.path}: shard is {status.state}"
                        + (f" ({status.reason})" * bool(status.reason))
                    )
        self._files: OrderedDict[Path, h5py.File] = OrderedDict()  # least recently used first

    def __len__(self) -> int:
        return len(self._index)

    @property
    def frame_ids(self) -> list[str]:
        """Frame id of every row, in plan order."""
        return self.plan.frame_ids

    def all_ok(self) -> np.ndarray:
        """Per row: True where every stage labelled the frame (reads only the ``ok`` datasets)."""
        flags = []
        for shard in self.plan.shards:
            ok = np.ones(len(shard.frame_ids), dtype=bool)
            for stage in self.stages:
                ok &= read_rows(self._open(shard_path(self.labels_dir, stage, shard.name))["ok"])
            flags.append(ok)
        return np.concatenate(flags)

    def __getitem__(self, i: int) -> dict[str, object]:
        shard_no, row = self._index[i]
        shard = self.plan.shards[shard_no]
        item: dict[str, object] = {"frame_id": shard.frame_ids[row]}
        for stage in self.stages:
            f = self._open(shard_path(self.labels_dir, stage, shard.name))
            item[f"{stage}/ok"] = bool(read_rows(f["ok"], row))
            for name in f.keys():
                if name not in BOOKKEEPING_DATASETS:
                    dset = f[name]
                    item[f"{stage}/{name}"] = decode(dset, read_rows(dset, row))
        return item

    def _open(self, path: Path) -> h5py.File:
        """The open file of ``path``, now the most recently used; beyond ``max_open`` open files the
        least recently used one is closed."""
        if path in self._files:
            self._files.move_to_end(path)
            return self._files[path]
        handle = open_shard(path)
        self._files[path] = handle
        while len(self._files) > self.max_open:
            self._files.popitem(last=False)[1].close()
        return handle

    @property
    def open_files(self) -> int:
        """How many shard files this reader holds open now."""
        return len(self._files)

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_files": OrderedDict()}


__all__ = ["LabelReader"]
