"""The plan: deterministic, partitioned by drive and image size, and safe to re-write."""

from __future__ import annotations

import pytest

from labelgen.plan import load_plan, plan_shards, write_plan


def test_shards_hold_one_drive_and_at_most_shard_size_frames(kitti_tree):
    plan = plan_shards(kitti_tree, shard_size=2)
    assert [(s.drive[-15:], len(s.frame_ids)) for s in plan.shards] == [
        ("drive_0001_sync", 2),
        ("drive_0001_sync", 2),
        ("drive_0001_sync", 1),
        ("drive_0002_sync", 2),
        ("drive_0002_sync", 1),
        ("drive_0001_sync", 2),
        ("drive_0001_sync", 1),
    ]
    assert [s.name for s in plan.shards][:2] == ["shard-00000", "shard-00001"]
    assert {s.image_size for s in plan.shards if s.date == "2011_09_28"} == {(62, 156)}
    assert {s.image_size for s in plan.shards if s.date == "2011_09_26"} == {(64, 160)}
    assert len(plan.frame_ids) == 11 and len(set(plan.frame_ids)) == 11


def test_replanning_gives_the_same_bytes(kitti_tree, tmp_path):
    first = write_plan(plan_shards(kitti_tree, shard_size=3), tmp_path / "a").read_bytes()
    second = write_plan(plan_shards(kitti_tree, shard_size=3), tmp_path / "b").read_bytes()
    assert first == second
    loaded = load_plan(tmp_path / "a")
    assert loaded.plan_id == plan_shards(kitti_tree, shard_size=3).plan_id
    assert loaded.calibrations["2011_09_26"].focal == pytest.approx(721.5377)


def test_a_different_plan_is_not_overwritten_silently(kitti_tree, tmp_path):
    write_plan(plan_shards(kitti_tree, shard_size=3), tmp_path)
    write_plan(plan_shards(kitti_tree, shard_size=3), tmp_path)  # identical: fine
    with pytest.raises(ValueError, match="a different plan exists; pass --overwrite"):
        write_plan(plan_shards(kitti_tree, shard_size=4), tmp_path)
    write_plan(plan_shards(kitti_tree, shard_size=4), tmp_path, overwrite=True)
    assert load_plan(tmp_path).shard_size == 4


def test_missing_calibration_is_recorded_not_fatal(kitti_tree):
    (kitti_tree / "2011_09_28" / "calib_velo_to_cam.txt").unlink()
    plan = plan_shards(kitti_tree)
    assert "2011_09_28" not in plan.calibrations
    assert "calib_velo_to_cam.txt: calibration file not found" in plan.calibration_errors["2011_09_28"]
    assert [s.image_size for s in plan.shards if s.date == "2011_09_28"] == [(62, 156)]  # read from the image


def test_plan_errors_name_the_path(tmp_path, kitti_tree):
    with pytest.raises(FileNotFoundError, match=r"plan\.json: no plan; run `edgedepth labelgen plan` first"):
        load_plan(tmp_path)
    (tmp_path / "plan.json").write_text("{")
    with pytest.raises(ValueError, match=r"plan\.json: malformed plan"):
        load_plan(tmp_path)
    with pytest.raises(ValueError, match="shard size must be at least 1"):
        plan_shards(kitti_tree, shard_size=0)
