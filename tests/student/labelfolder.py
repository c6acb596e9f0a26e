"""Label folders with known answers for the training tests, written straight through ShardWriter.

Each frame is a scene of rectangles at random depths (5-60 m) over a ground plane; the image's
colour encodes the depth (red rises, green falls with distance, plus fine texture), and the class
of a pixel is a band of its depth (car < 20 m, building < 40 m, sky beyond). A student can learn
the mapping, so overfitting has a known target.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from edgedepth.labelgen.plan import plan_shards, write_plan
from edgedepth.labelgen.shards import DatasetSpec, ShardWriter, shard_path
from tests.kitti_tree import make_kitti_tree

SIZE = (64, 128)  # (height, width) of the synthetic frames


def scene(seed: int, size: tuple[int, int] = SIZE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image (H,W,3) uint8, depth (H,W) float32 metres, classes (H,W) uint8) of one frame."""
    rng = np.random.default_rng(seed)
    height, width = size
    rows = np.arange(height, dtype=np.float32)[:, None]
    depth = np.broadcast_to(60.0 - 55.0 * rows / (height - 1), size).astype(np.float32).copy()
    for _ in range(4):
        h, w = rng.integers(height // 4, height // 2), rng.integers(width // 8, width // 3)
        top, left = rng.integers(0, height - h), rng.integers(0, width - w)
        depth[top : top + h, left : left + w] = rng.uniform(5, 60)
    t = (depth - 5) / 55
    texture = rng.integers(0, 24, size).astype(np.float32)
    image = np.stack([40 + 200 * t, 240 - 200 * t, 60 + texture], axis=-1)
    classes = np.where(depth < 20, 13, np.where(depth < 40, 2, 10)).astype(np.uint8)
    return np.clip(image, 0, 255).astype(np.uint8), depth, classes


def write_stage(
    labels: Path, stage: str, specs: Mapping[str, DatasetSpec], frames: Mapping[str, dict]
) -> None:
    """Shards of ``stage`` for every planned frame; frames missing from ``frames`` are failed rows."""
    from edgedepth.labelgen.plan import load_plan

    plan = load_plan(labels)
    for shard in plan.shards:
        attrs = {
            "stage": stage,
            "plan_id": plan.plan_id,
            "shard_index": shard.index,
            "shard_name": shard.name,
            "teacher": f"test-{stage}",
            "checkpoint_sha256": "",
            "calibration": {},
            "settings": {},
            "device": "cpu",
        }
        with ShardWriter(shard_path(labels, stage, shard.name), shard.frame_ids, specs, attrs) as writer:
            for i, frame_id in enumerate(shard.frame_ids):
                if frame_id in frames:
                    writer.write(i, frames[frame_id])
                else:
                    writer.fail(i, "not made by the test")


def make_label_folder(
    root: Path, drives: Mapping[str, int], size: tuple[int, int] = SIZE, seg: bool = True, lidar: bool = True
) -> Path:
    """``root/labels`` with stages images, synth (depth), and optionally seg and lidar (sparse)."""
    tree = make_kitti_tree(root / "kitti", dict(drives), {d[:10]: size for d in drives})
    labels = root / "labels"
    write_plan(plan_shards(tree), labels)
    from edgedepth.labelgen.plan import load_plan

    ids = load_plan(labels).frame_ids
    scenes = {fid: scene(i, size) for i, fid in enumerate(ids)}
    write_stage(
        labels,
        "images",
        {"image": DatasetSpec((*size, 3), "uint8")},
        {f: {"image": s[0]} for f, s in scenes.items()},
    )
    depth_spec = {"depth": DatasetSpec(size, "float32", attrs={"units": "m", "invalid": 0})}
    write_stage(labels, "synth", depth_spec, {f: {"depth": s[1]} for f, s in scenes.items()})
    if seg:
        specs = {
            "seg": DatasetSpec(size, "uint8"),
            "seg_conf": DatasetSpec(size, "uint8", attrs={"scale": 1 / 255}),
        }
        frames = {f: {"seg": s[2], "seg_conf": np.full(size, 255, np.uint8)} for f, s in scenes.items()}
        write_stage(labels, "seg", specs, frames)
    if lidar:
        rng = np.random.default_rng(7)
        sparse = {}
        for f, s in scenes.items():
            keep = rng.random(size) < 0.1
            sparse[f] = {"depth": np.where(keep, s[1] * 1.02, 0).astype(np.float32)}
        write_stage(labels, "lidar", depth_spec, sparse)
    return labels
