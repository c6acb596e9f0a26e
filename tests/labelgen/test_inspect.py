"""Tests of edgedepth.labelgen.inspect on a tiny hand-made label folder (4 stages, 2 shards, 5 frames of 24x40)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from matplotlib import image as mpimg

from edgedepth.labelgen.inspect import inspect_labels, write_previews
from edgedepth.labelgen.kitti import Calibration
from edgedepth.labelgen.plan import Plan, ShardPlan, write_plan
from edgedepth.labelgen.shards import DatasetSpec, ShardWriter, shard_path
from edgedepth.labelgen.stages import ImagesStage, LidarStage
from edgedepth.labelgen.teacher_stages import SgbmStage

H, W, FOCAL, BASELINE = 24, 40, 50.0, 0.54
DATE, DRIVE = "2011_09_26", "2011_09_26_drive_0001_sync"
IDS = tuple(f"{DATE}/{DRIVE}/{i:010d}" for i in range(5))
STEM0, STEM1 = (IDS[i].replace("/", "_") for i in (0, 1))
LIDAR_FAILED, LIDAR_REASON = IDS[1], "velodyne_points/data/0000000001.bin: file not found"
N_LIDAR = 96  # LiDAR pixels per frame: 10% of 24x40
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _calibration() -> Calibration:
    p2 = np.array([[FOCAL, 0, W / 2, 0], [0, FOCAL, H / 2, 0], [0, 0, 1, 0]], dtype=np.float64)
    p3 = p2.copy()
    p3[0, 3] = -FOCAL * BASELINE
    return Calibration(DATE, p2, p3, np.eye(3), np.eye(4), (H, W))


def _plan() -> Plan:
    shards = (ShardPlan(0, DATE, DRIVE, (H, W), IDS[:3]), ShardPlan(1, DATE, DRIVE, (H, W), IDS[3:]))
    selection = {"drives": None, "split_file": None}
    return Plan("/nowhere/kitti", 3, selection, {DATE: _calibration()}, {}, shards)


def _image(i: int) -> dict[str, np.ndarray]:
    ramp = np.linspace(0, 255, W, dtype=np.float32)[None, :, None]
    return {"image": np.broadcast_to(ramp + 10 * i, (H, W, 3)).clip(0, 255).astype(np.uint8).copy()}


def _lidar(i: int) -> dict[str, np.ndarray]:
    """N_LIDAR points in [2, 50] m (both ends present) at pixels that move with the frame."""
    depth = np.zeros(H * W, dtype=np.float32)
    pixels = np.random.default_rng(i).choice(H * W, N_LIDAR, replace=False)
    depth[pixels] = np.linspace(2.0, 50.0, N_LIDAR)
    return {"depth": depth.reshape(H, W)}


def _sgbm(i: int) -> dict[str, np.ndarray]:
    """Left half 5..30 m (valid), right half invalid."""
    depth = np.zeros((H, W), dtype=np.float32)
    depth[:, : W // 2] = np.linspace(5.0, 30.0, W // 2)
    valid = depth > 0
    disparity = np.where(valid, FOCAL * BASELINE / np.where(valid, depth, 1.0), 0.0)
    return {
        "disparity": np.round(disparity * 256).astype(np.uint16),
        "depth": depth.astype(np.float16),
        "valid": valid,
    }


def _seg(i: int) -> dict[str, np.ndarray]:
    """Top half road (0), then car (13), bottom quarter ignore (255); confidence 0.9."""
    seg = np.full((H, W), 255, dtype=np.uint8)
    seg[: H // 2], seg[H // 2 : 3 * H // 4] = 0, 13
    return {"seg": seg, "seg_conf": np.full((H, W), 230, dtype=np.uint8)}  # 0.90 as stored (x 1/255)


def _write(
    labels: Path,
    plan: Plan,
    stage: str,
    shard: ShardPlan,
    specs: dict[str, DatasetSpec],
    arrays: Callable[[int], dict[str, np.ndarray]],
    teacher: str = "",
    plan_id: str | None = None,
) -> None:
    """One shard with the attributes edgedepth.labelgen.run writes; LIDAR_FAILED fails in the lidar stage."""
    attrs = {
        "stage": stage,
        "plan_id": plan_id or plan.plan_id,
        "shard_index": shard.index,
        "shard_name": shard.name,
        "teacher": teacher,
        "checkpoint_sha256": "",
        "calibration": plan.calibrations[shard.date].to_dict(),
        "settings": {"test": True},
        "tool_version": "0+test",
        "device": "cpu",
    }
    with ShardWriter(shard_path(labels, stage, shard.name), shard.frame_ids, specs, attrs) as writer:
        for row, frame_id in enumerate(shard.frame_ids):
            if stage == "lidar" and frame_id == LIDAR_FAILED:
                writer.fail(row, LIDAR_REASON)
            else:
                writer.write(row, arrays(IDS.index(frame_id)))


@pytest.fixture
def labels(tmp_path: Path) -> Path:
    """images and lidar complete (one lidar frame failed), sgbm shard 1 missing, seg shard 1 stale."""
    labels, plan = tmp_path / "labels", _plan()
    write_plan(plan, labels)
    size = (H, W)
    seg_specs = {
        "seg": DatasetSpec(size, "uint8"),
        "seg_conf": DatasetSpec(size, "uint8", attrs={"scale": 1 / 255}),
    }
    for shard in plan.shards:
        _write(labels, plan, "images", shard, ImagesStage().datasets(size), _image)
        _write(labels, plan, "lidar", shard, LidarStage().datasets(size), _lidar)
        stale = "another-plan" if shard.index == 1 else None
        _write(labels, plan, "seg", shard, seg_specs, _seg, teacher="test-seg", plan_id=stale)
    _write(labels, plan, "sgbm", plan.shards[0], SgbmStage().datasets(size), _sgbm, teacher="opencv-sgbm")
    (labels / "previews").mkdir()  # neither shards nor report.json: not a stage
    return labels


def _sections(report: str) -> dict[str, str]:
    parts = re.split(r"^\[(\w+)\]$", report, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_report_counts_shards_and_frames(labels: Path) -> None:
    report = inspect_labels(labels)
    sections = _sections(report)
    assert list(sections) == ["images", "lidar", "seg", "sgbm"]
    assert "5 frames in 2 shards" in report and "sample of at most 8" in report
    images, lidar, seg, sgbm = (sections[s] for s in ("images", "lidar", "seg", "sgbm"))
    assert "shards: 2/2 complete; missing 0, stale 0, invalid 0" in images
    assert "frames: 5 done, 0 failed, 0 missing (of 5)" in images
    assert "shards: 2/2 complete; missing 0, stale 0, invalid 0" in lidar
    assert "frames: 4 done, 1 failed, 0 missing (of 5)" in lidar
    assert f"{LIDAR_FAILED}: {LIDAR_REASON}" in lidar
    assert "shards: 1/2 complete; missing 1, stale 0, invalid 0" in sgbm
    assert "frames: 3 done, 0 failed, 2 missing (of 5)" in sgbm
    assert "shards: 1/2 complete; missing 0, stale 1, invalid 0" in seg
    assert "stale shard-00001.h5: written for another plan" in seg
    assert "frames: 3 done, 0 failed, 2 missing (of 5)" in seg
    assert "teacher: opencv-sgbm" in sgbm


def test_report_value_ranges(labels: Path) -> None:
    sections = _sections(inspect_labels(labels))
    lidar_depth = re.search(r"^  depth .*$", sections["lidar"], re.MULTILINE).group(0)
    # the failed frame's zero row is not sampled: exactly 10% valid
    assert "min 2.00" in lidar_depth and "max 50.00 m" in lidar_depth and "10.0% valid pixels" in lidar_depth
    assert "sample: 4 of 4 ok frames" in sections["lidar"]
    sgbm = sections["sgbm"]
    sgbm_depth = re.search(r"^  depth .*$", sgbm, re.MULTILINE).group(0)
    assert "min 5.00" in sgbm_depth and "max 30.00 m" in sgbm_depth and "50.0% valid pixels" in sgbm_depth
    assert re.search(r"^  valid +50\.0% True$", sgbm, re.MULTILINE)
    disparity = re.search(r"^  disparity .*$", sgbm, re.MULTILINE).group(0)
    assert f"min {FOCAL * BASELINE / 30:.2f}" in disparity and disparity.endswith("px")
    assert "uint8 24x40x3" in sections["images"]
    seg = re.search(r"^  seg .*$", sections["seg"], re.MULTILINE).group(0)
    assert "2 classes: road 50.0%, car 25.0%; ignore (255) 25.0%" in seg
    assert re.search(r"^  seg_conf +min 0\.90 / median 0\.90 / max 0\.90$", sections["seg"], re.MULTILINE)


def test_report_sample_is_bounded(labels: Path) -> None:
    lidar = _sections(inspect_labels(labels, sample_frames=2))["lidar"]
    assert "sample: 2 of 4 ok frames" in lidar
    assert "min 2.00" in lidar and "max 50.00 m" in lidar


def test_report_invalid_shard_and_report_only_stage(labels: Path) -> None:
    shard_path(labels, "images", "shard-00001").write_bytes(b"not an HDF5 file")
    (labels / "psmnet").mkdir()
    (labels / "psmnet" / "report.json").write_text("{}")
    sections = _sections(inspect_labels(labels))
    assert "shards: 1/2 complete; missing 0, stale 0, invalid 1" in sections["images"]
    assert "frames: 3 done, 0 failed, 2 missing (of 5)" in sections["images"]
    assert "shards: 0/2 complete; missing 2, stale 0, invalid 0" in sections["psmnet"]
    assert "frames: 0 done, 0 failed, 5 missing (of 5)" in sections["psmnet"]
    assert "no value ranges" in sections["psmnet"]


def _check_png(path: Path) -> np.ndarray:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None and image.ndim == 3 and image.shape[2] in (3, 4)
    height, width = image.shape[:2]
    assert 600 <= width <= 3000 and 150 <= height < width
    assert mpimg.imread(path).shape[:2] == (height, width)
    return image


def test_previews_first_frame(labels: Path, tmp_path: Path) -> None:
    out = tmp_path / "previews"
    paths = write_previews(labels, out)
    suffixes = ["lidar_depth", "lidar_overlay", "seg_seg", "sgbm_depth"]
    assert sorted(p.name for p in paths) == [f"{STEM0}_{s}.png" for s in suffixes]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)
    images = {p.name: _check_png(p) for p in paths}
    sgbm = images[f"{STEM0}_sgbm_depth.png"][..., :3]
    grey = (np.abs(sgbm.astype(int) - 200) <= 2).all(axis=2)  # NO_DATA_COLOUR #c8c8c8
    assert grey.mean() > 0.1  # the invalid right half is light grey
    assert sgbm.std() > 20  # and the rest is colour-mapped, not blank


def test_previews_skip_stages_where_the_frame_failed(labels: Path, tmp_path: Path) -> None:
    paths = write_previews(labels, tmp_path / "previews", max_frames=2)
    second = sorted(p.name for p in paths if p.name.startswith(STEM1))
    assert second == [f"{STEM1}_seg_seg.png", f"{STEM1}_sgbm_depth.png"]  # lidar failed for frame 1
    assert len(paths) == 6
    for path in paths:
        _check_png(path)


def test_missing_plan(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="plan.json"):
        inspect_labels(tmp_path)
    with pytest.raises(FileNotFoundError, match="plan.json"):
        write_previews(tmp_path, tmp_path / "out")
