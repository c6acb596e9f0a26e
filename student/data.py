"""Training samples for the student from a label folder: image, teacher depth, segmentation labels.

Reads the shards of the ``images`` stage, a depth teacher (``psmnet`` or ``sgbm``) and optionally
``seg`` through ``labelgen.shards.LabelReader`` (lazy file handles, so it serves a multi-process
DataLoader). The teacher depth is corrected on the fly by a bias table (``lut``) when one is given,
at full resolution, before resizing. Frames that failed in any of the stages are left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from calib.lut import Lut, apply_lut, load_lut
from labelgen.shards import LabelReader
from labelgen.teachers import IMAGENET_MEAN, IMAGENET_STD
from student.model import check_input_size

MEAN, STD = np.float32(IMAGENET_MEAN), np.float32(IMAGENET_STD)
TRAIN_SIZE = (320, 1056)  # (height, width): the paper's training input


class LabelDataset(Dataset):
    """``dataset[i]`` -> ``{"image": (3,H,W) float32 normalised, "depth": (H,W) float32 metres (0 =
    no label), "labels": (H,W) int64 train ids (255 = ignore; only with ``seg``), "frame_id": str}``.

    Images are resized with area averaging; depth and labels with nearest neighbour, so invalid
    depth never blends into valid pixels and class ids stay class ids.
    """

    def __init__(
        self,
        labels_dir: str | Path,
        teacher: str = "psmnet",
        seg: str | None = "seg",
        lut: str | Path | Lut | None = None,
        size: tuple[int, int] = TRAIN_SIZE,
        frame_ids: Sequence[str] | None = None,
    ) -> None:
        check_input_size(*size)
        self.size = (int(size[0]), int(size[1]))
        self.teacher, self.seg = teacher, seg
        self.lut = load_lut(lut) if isinstance(lut, str | Path) else lut
        self.reader = LabelReader(labels_dir, ["images", teacher] + ([seg] if seg else []))
        wanted = set(frame_ids) if frame_ids is not None else None
        ok = self.reader.all_ok()
        self.rows = [
            i for i, fid in enumerate(self.reader.frame_ids) if ok[i] and (wanted is None or fid in wanted)
        ]
        self.reader.close()  # reopened lazily in each DataLoader worker
        if not self.rows:
            raise ValueError(f"{labels_dir}: no frame has {' and '.join(self.reader.stages)} labels")

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, object]:
        item = self.reader[self.rows[index]]
        height, width = self.size
        image = cv2.resize(item["images/image"], (width, height), interpolation=cv2.INTER_AREA)
        image = (image.astype(np.float32) / 255.0 - MEAN) / STD
        depth = item[f"{self.teacher}/depth"]
        if self.lut is not None:
            depth = apply_lut(depth, self.lut)
        sample: dict[str, object] = {
            "frame_id": item["frame_id"],
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "depth": torch.from_numpy(_nearest(depth.astype(np.float32), self.size)),
        }
        if self.seg:
            labels = _nearest(item[f"{self.seg}/seg"], self.size)
            sample["labels"] = torch.from_numpy(labels.astype(np.int64))
        return sample


def _nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return cv2.resize(array, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
