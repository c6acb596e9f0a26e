"""Training samples for the student from a label folder: image, teacher depth, segmentation labels.

Reads the shards of the ``images`` stage, one depth stage (``psmnet``, ``sgbm``, ``lidar`` for the
sparse-LiDAR baseline, or a ``<teacher>_corrected`` set written by ``calib apply``) and optionally
``seg`` through ``edgedepth.labelgen.reader.LabelReader`` (file handles open lazily in each DataLoader worker,
so fork and spawn both work). The teacher depth is corrected on the fly by a bias table when one
is given, at full resolution, before resizing; a table that does not describe these labels is
refused (:func:`check_lut`). Frames that failed in any of the stages are left out.

Augmentation (training only, on by default) keeps the labels consistent: a horizontal flip of the
image, depth and class map together (p = 0.5), colour jitter on the image alone (brightness,
contrast and saturation factors in [0.8, 1.2], hue shift in [-0.1, 0.1] of a turn, applied in that
order) and, with ``crop_zoom`` s > 1, a random crop of 1/z of each side (z uniform in [1, s], at a
uniformly drawn position) resized to the input size, the same window for image and labels, with the
depth labels divided by z: a z-times zoom looks like a z-times closer scene (the scale augmentation
of Eigen et al., NIPS 2014). With ``window`` w < 1 the network is then shown a random part of the
sample, w of each side rounded down to the encoder stride (32 px), at a uniformly drawn position and
at the input's own scale (no zoom, depth unchanged): the same content reaches the network's border
from every side, so a network trained on few frames cannot learn the scene by position (the border
stripes of docs/evaluation.md). Its random draws come from the sample's own seed, given by ``edgedepth.student.train.sampler``, so a run's
augmentations depend on neither the number of loader workers nor a resume.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from edgedepth.calib import Lut, apply_lut, load_lut, split_drives
from edgedepth.common import IMAGENET_MEAN, IMAGENET_STD
from edgedepth.labelgen import LabelFolder, LabelReader, Plan, open_shard, shard_path
from edgedepth.student.model import STRIDE, check_input_size, normalise

TRAIN_SIZE = (320, 1056)  # (height, width): the paper's training input
CORRECTED_SUFFIX = "_corrected"
JITTER = {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.1}


def colour_jitter(image01: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast, saturation, hue (in that order) on an RGB float32 image in [0, 1]."""
    b, c, s = (rng.uniform(1 - JITTER[k], 1 + JITTER[k]) for k in ("brightness", "contrast", "saturation"))
    hue = rng.uniform(-JITTER["hue"], JITTER["hue"])
    out = np.clip(image01 * np.float32(b), 0, 1)
    grey = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)
    out = np.clip((out - grey.mean()) * np.float32(c) + grey.mean(), 0, 1)
    grey = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)[..., None]
    out = np.clip((out - grey) * np.float32(s) + grey, 0, 1)
    hsv = cv2.cvtColor(out.astype(np.float32), cv2.COLOR_RGB2HSV)  # float: H in [0, 360)
    hsv[..., 0] = np.mod(hsv[..., 0] + np.float32(hue * 360.0), 360.0)
    return np.clip(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), 0, 1)


@dataclass(frozen=True)
class LabelSources:
    """What a label folder offers the student: the plan, the depth stage, and the seg stage if any."""

    labels_dir: Path
    plan: Plan
    depth_stage: str
    seg_stage: str | None
    lidar: bool  # the folder has a complete `lidar` stage (for validation against the LiDAR)

    def provenance(self) -> dict[str, Any]:
        """Plan id and, per stage used, the teacher and checkpoint SHA-256 recorded in its shards."""
        stages = ["images", self.depth_stage] + [
            s for s in (self.seg_stage, "lidar" if self.lidar else None) if s
        ]
        info: dict[str, Any] = {
            "labels_dir": str(self.labels_dir),
            "plan_id": self.plan.plan_id,
            "stages": {},
        }
        for stage in dict.fromkeys(stages):
            with open_shard(shard_path(self.labels_dir, stage, self.plan.shards[0].name)) as f:
                info["stages"][stage] = {
                    "teacher": str(f.attrs.get("teacher", "")),
                    "checkpoint_sha256": str(f.attrs.get("checkpoint_sha256", "")),
                    "settings": str(f.attrs.get("settings", "")),
                }
        return info


def find_sources(
    labels_dir: LabelFolder | str | Path, depth_stage: str, seg_stage: str | None = "seg"
) -> LabelSources:
    """Check a label folder has ``images`` and ``depth_stage`` (one-line errors); seg when present.

    ``seg_stage=None`` turns segmentation off; a missing ``seg`` folder turns it off too (the
    caller says so). Completeness of the shards is checked by the reader. ``labels_dir`` may be a
    ``LabelFolder`` (its plan is used).
    """
    folder = LabelFolder.of(labels_dir)
    labels_dir = folder.given
    plan = folder.plan
    if not plan.shards:
        raise ValueError(f"{labels_dir / 'plan.json'}: the plan has no frames")
    for stage, why in (("images", "the student's input images"), (depth_stage, "the depth labels")):
        if not folder.has_stage(stage):
            raise ValueError(
                f"{labels_dir / stage}: no such label stage ({why}); run "
                f"`edgedepth labelgen run {labels_dir} --stages {stage.removesuffix(CORRECTED_SUFFIX)}`"
                + (" and `edgedepth calib apply`" if stage.endswith(CORRECTED_SUFFIX) else "")
            )
    with open_shard(folder.shard_path(depth_stage, plan.shards[0])) as f:
        if "depth" not in f:
            raise ValueError(f"{f.filename}: no `depth` dataset; {depth_stage} is not a depth stage")
    seg = seg_stage if seg_stage and folder.has_stage(seg_stage) else None
    return LabelSources(labels_dir, plan, depth_stage, seg, folder.has_stage("lidar"))


def check_lut(lut: Lut, sources: LabelSources, depth_range: tuple[float, float], name: str = "lut") -> None:
    """Refuse a table that does not describe these labels: another teacher or checkpoint, an already
    corrected or LiDAR depth stage, or a fitted depth range that does not cover ``depth_range``."""
    stage = sources.depth_stage
    if stage.endswith(CORRECTED_SUFFIX):
        raise ValueError(f"{name}: depth stage {stage!r} is already corrected by a table; drop --lut")
    if stage == "lidar":
        raise ValueError(f"{name}: the LiDAR is the reference the table corrects towards; drop --lut")
    fitted = lut.source.get("teacher_stage")
    if fitted and fitted != stage:
        raise ValueError(f"{name}: fitted for teacher {fitted!r}, but the depth labels are {stage!r}")
    known = set(lut.source.get("checkpoint_sha256") or [])
    held = sources.provenance()["stages"][stage]["checkpoint_sha256"]
    if known and held not in known:
        raise ValueError(
            f"{name}: fitted on another {stage} checkpoint ({sorted(known)[0][:12]}...) "
            f"than the labels hold ({held[:12]}...)"
        )
    lo, hi = float(lut.settings.get("min_depth", 0.0)), float(lut.settings.get("max_depth", np.inf))
    if depth_range[0] < lo or depth_range[1] > hi:
        raise ValueError(
            f"{name}: fitted on teacher depths {lo:g}-{hi:g} m, but the labels are used over "
            f"{depth_range[0]:g}-{depth_range[1]:g} m (--min-depth/--max-depth)"
        )


def split_by_drive(
    plan: Plan, val_drives: Sequence[str] | None = None, val_fraction: float = 0.1
) -> tuple[list[str], list[str], list[str]]:
    """(train frame ids, validation frame ids, validation drives): whole drives only.

    ``val_drives`` names them (with or without ``_sync``); otherwise the drives holding
    ``val_fraction`` of the frames are picked as ``calib fit --holdout`` picks them (by the hash of
    their name, so the same fraction gives the same drives). A one-drive folder has no validation.
    """
    drives = sorted({s.drive for s in plan.shards})
    if val_drives is not None:
        wanted = sorted({d if d in drives or d.endswith("_sync") else f"{d}_sync" for d in val_drives})
        unknown = [d for d in wanted if d not in drives]
        if unknown:
            raise ValueError(f"--val-drives: {unknown[0]} is not a drive of the plan ({', '.join(drives)})")
        held = wanted
    elif val_fraction == 0 or len(drives) == 1:
        held = []
    else:
        try:
            held = split_drives(plan, val_fraction)[2]
        except ValueError:
            raise ValueError(
                f"--val-fraction {val_fraction:g} would hold out every drive ({len(drives)} in the plan); "
                "lower it or name --val-drives"
            ) from None
    if held and len(held) == len(drives):
        raise ValueError("--val-drives: every drive of the plan is held out; nothing is left to train on")
    train = [f for s in plan.shards if s.drive not in held for f in s.frame_ids]
    val = [f for s in plan.shards if s.drive in held for f in s.frame_ids]
    return train, val, held


def split_by_frames(
    plan: Plan, train_file: str | Path | None, val_file: str | Path | None
) -> tuple[list[str], list[str]]:
    """(train frame ids, validation frame ids) from frame-list files (``edgedepth.labelgen.layout.read_frame_list``).

    With ``train_file`` only the frames it lists train (the rest of the folder, e.g. held-out test
    scenes labelled in the same plan, is never seen); with ``val_file`` only, every other frame
    trains. A listed frame that is not in the plan, or a frame in both lists, is a one-line error.
    """
    from edgedepth.labelgen import read_frame_list

    planned = plan.frame_ids
    known = set(planned)

    def read(path: str | Path) -> set[str]:
        ids = [f if isinstance(f, str) else f.frame_id for f in read_frame_list(path, plan.layout)]
        unknown = [f for f in ids if f not in known]
        if unknown:
            raise ValueError(
                f"{path}: {len(unknown)} listed frames are not in the plan (first: {unknown[0]})"
            )
        if not ids:
            raise ValueError(f"{path}: lists no frames")
        return set(ids)

    val = read(val_file) if val_file is not None else set()
    train = read(train_file) if train_file is not None else known - val
    both = sorted(train & val)
    if both:
        raise ValueError(f"{train_file}: {len(both)} frames are also validation frames (first: {both[0]})")
    if not train:
        raise ValueError(
            f"{val_file}: every planned frame is a validation frame; nothing is left to train on"
        )
    return [f for f in planned if f in train], [f for f in planned if f in val]


class LabelDataset(Dataset):
    """``dataset[i]`` or ``dataset[(i, seed)]`` -> a training sample::

        {"image": (3,H,W) float32 normalised, "depth": (H,W) float32 metres (0 = no label),
         "labels": (H,W) int64 train ids (255 = ignore; only with seg), "frame_id": str}

    With ``seed`` (and ``augment``) the sample is flipped / jittered by that seed's draws. Images
    are resized with area averaging; depth and labels with nearest neighbour, so invalid depth
    never blends into valid pixels and class ids stay class ids. Labels outside ``depth_range``
    become 0. With ``lidar`` the sample also holds the projected LiDAR (``"lidar"``), resized as the
    depth labels are. With ``full_res`` the depth (and ``lidar``) stay at the shard's resolution,
    for scoring against the full-resolution labels. ``labels_dir`` may be a
    ``LabelFolder`` (its plan and shard statuses are used; the dataset keeps only the path).
    """

    def __init__(
        self,
        labels_dir: LabelFolder | str | Path,
        teacher: str = "psmnet",
        seg: str | None = "seg",
        lut: str | Path | Lut | None = None,
        size: tuple[int, int] = TRAIN_SIZE,
        frame_ids: Sequence[str] | None = None,
        depth_range: tuple[float, float] = (0.0, np.inf),
        augment: bool = False,
        full_res: bool = False,
        lidar: bool = False,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        crop_zoom: float = 1.0,
        window: float = 1.0,
    ) -> None:
        check_input_size(*size)
        if not crop_zoom >= 1.0:
            raise ValueError(f"crop zoom must be at least 1 (1 = no crop), got {crop_zoom}")
        self.window_size = window_size(size, window)
        self.mean, self.std = np.float32(mean), np.float32(std)
        self.crop_zoom = float(crop_zoom)
        self.size = (int(size[0]), int(size[1]))
        self.teacher, self.seg, self.augment, self.full_res = teacher, seg, augment, full_res
        self.depth_range = (float(depth_range[0]), float(depth_range[1]))
        self.lut = load_lut(lut) if isinstance(lut, str | Path) else lut
        stages = (
            ["images", teacher] + ([seg] if seg else []) + (["lidar"] if lidar and teacher != "lidar" else [])
        )
        self.lidar = lidar
        folder = LabelFolder.of(labels_dir)
        self.reader = LabelReader(folder, stages)
        wanted = set(frame_ids) if frame_ids is not None else None
        ok = self.reader.all_ok()
        self.rows = [
            i for i, fid in enumerate(self.reader.frame_ids) if ok[i] and (wanted is None or fid in wanted)
        ]
        self.reader.close()  # reopened lazily in each DataLoader worker
        if not self.rows:
            shown = folder.given if isinstance(labels_dir, LabelFolder) else labels_dir
            raise ValueError(f"{shown}: no frame has {' and '.join(self.reader.stages)} labels")

    def __len__(self) -> int:
        return len(self.rows)

    def restricted_to(self, frame_ids: Sequence[str]) -> LabelDataset:
        """A copy holding only the frames of ``frame_ids`` that this dataset holds (its order kept)."""
        wanted = set(frame_ids)
        ids = self.reader.frame_ids
        clone = copy.copy(self)
        clone.rows = [r for r in self.rows if ids[r] in wanted]
        return clone

    @property
    def frame_ids(self) -> list[str]:
        ids = self.reader.frame_ids
        return [ids[r] for r in self.rows]

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, object]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        item = self.reader[self.rows[index]]
        rng = np.random.default_rng(seed) if (self.augment and seed is not None) else None
        flip = bool(rng.random() < 0.5) if rng is not None else False
        height, width = self.size
        full = item["images/image"]
        window, zoom = None, 1.0
        if rng is not None and self.crop_zoom > 1.0 and not self.full_res:
            zoom = float(rng.uniform(1.0, self.crop_zoom))
            window = crop_window(full.shape[:2], zoom, rng)
        image = cv2.resize(_cut(full, window), (width, height), interpolation=cv2.INTER_AREA)
        image = image.astype(np.float32) / 255.0
        if rng is not None:
            image = colour_jitter(image, rng)
        depth = self._depth(item[f"{self.teacher}/depth"])
        sample: dict[str, object] = {"frame_id": item["frame_id"], "flipped": flip}
        if self.full_res:
            sample["depth"] = torch.from_numpy(depth)
            if self.lidar:
                sample["lidar"] = torch.from_numpy(np.asarray(item["lidar/depth"], dtype=np.float32))
        else:
            zoomed = _nearest(_cut(depth, window), self.size) / np.float32(zoom)
            sample["depth"] = torch.from_numpy(_flip(zoomed, flip))
            if self.lidar:  # sparse: nearest neighbour keeps the points on sampled pixels, blends none
                lidar = np.asarray(item["lidar/depth"], dtype=np.float32)
                lidar = _nearest(_cut(lidar, window), self.size) / np.float32(zoom)
                sample["lidar"] = torch.from_numpy(_flip(lidar, flip))
        if self.seg:
            labels = _flip(_nearest(_cut(item[f"{self.seg}/seg"], window), self.size), flip)
            sample["labels"] = torch.from_numpy(labels.astype(np.int64))
        sample["image"] = normalise(image[:, ::-1] if flip else image, self.mean, self.std)
        if rng is not None and self.window_size != self.size and not self.full_res:
            sample = _window(sample, self.window_size, rng)
        return sample

    def _depth(self, depth: np.ndarray) -> np.ndarray:
        depth = np.asarray(depth, dtype=np.float32)
        if self.lut is not None:
            depth = apply_lut(depth, self.lut)
        lo, hi = self.depth_range
        keep = np.isfinite(depth) & (depth > lo) & (depth <= hi)
        return np.where(keep, depth, np.float32(0)).astype(np.float32)


def collate_full_res(samples: Sequence[dict[str, object]]) -> dict[str, object]:
    """Stack the images; keep full-resolution targets (sizes differ by date) as lists."""
    out: dict[str, object] = {"image": torch.stack([s["image"] for s in samples])}
    for key in samples[0]:
        if key != "image":
            out[key] = [s[key] for s in samples]
    return out


def window_size(size: tuple[int, int], share: float) -> tuple[int, int]:
    """(height, width) of the training window covering ``share`` of each side of the input ``size``,
    rounded down to the encoder stride (at least one stride)."""
    if not 0 < share <= 1:
        raise ValueError(f"window must be a share of each side in (0, 1] (1 = the whole input), got {share}")
    return tuple(max(STRIDE, int(side * share) // STRIDE * STRIDE) for side in size)  # type: ignore[return-value]


def _window(sample: dict[str, object], size: tuple[int, int], rng: np.random.Generator) -> dict[str, object]:
    """The same random ``size`` window of the image (last two axes) and of every per-pixel target."""
    top, left = _place(sample["image"].shape[-2:], size, rng)  # type: ignore[union-attr]
    rows, cols = slice(top, top + size[0]), slice(left, left + size[1])
    for key in ("image", "depth", "lidar", "labels"):
        if key in sample:
            sample[key] = sample[key][..., rows, cols].contiguous()  # type: ignore[index]
    return sample


def crop_window(shape: tuple[int, int], zoom: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a random window covering 1/``zoom`` of each side of ``shape``."""
    height, width = shape
    h, w = max(1, round(height / zoom)), max(1, round(width / zoom))
    return (*_place(shape, (h, w), rng), h, w)


def _place(shape: tuple[int, int], size: tuple[int, int], rng: np.random.Generator) -> tuple[int, int]:
    """(top, left) of a ``size`` window inside ``shape``, each drawn uniformly (top first)."""
    top = int(rng.integers(0, shape[0] - size[0] + 1))
    return top, int(rng.integers(0, shape[1] - size[1] + 1))


def _cut(array: np.ndarray, window: tuple[int, int, int, int] | None) -> np.ndarray:
    if window is None:
        return array
    top, left, h, w = window
    return np.ascontiguousarray(array[top : top + h, left : left + w])


def _flip(array: np.ndarray, flip: bool) -> np.ndarray:
    return np.ascontiguousarray(array[:, ::-1]) if flip else array


def _nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return cv2.resize(array, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)


__all__ = [
    "JITTER",
    "LabelDataset",
    "LabelSources",
    "check_lut",
    "collate_full_res",
    "colour_jitter",
    "crop_window",
    "find_sources",
    "split_by_drive",
    "split_by_frames",
    "window_size",
]
