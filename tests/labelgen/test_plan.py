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


def test_version_1_plans_load_as_kitti_with_their_plan_id(kitti_tree, tmp_path):
    """A plan.json of schema version 1 (key kitti_root, no layout, no doffs) keeps its plan_id, so its
    shards stay valid; planning the same inputs again keeps that file."""
    import hashlib
    import json

    v2 = json.loads(plan_shards(kitti_tree, shard_size=3).to_json())
    v1 = {k: v for k, v in v2.items() if k not in ("layout", "data_root", "plan_id")}
    v1.update(schema_version=1, kitti_root=v2["data_root"])
    for calib in v1["calibrations"].values():
        del calib["doffs"]
    v1_id = hashlib.sha256(json.dumps(v1, sort_keys=True).encode()).hexdigest()
    text = json.dumps({**v1, "plan_id": v1_id}, indent=1, sort_keys=True) + "\n"
    (tmp_path / "plan.json").write_text(text)
    plan = load_plan(tmp_path)
    assert (plan.layout, plan.schema_version, plan.plan_id) == ("kitti", 1, v1_id)
    assert plan.data_root == plan.kitti_root == v2["data_root"] and plan.to_json() == text
    assert plan.shards[0].frames[0].frame_id == "2011_09_26/2011_09_26_drive_0001_sync/0000000000"
    write_plan(plan_shards(kitti_tree, shard_size=3), tmp_path)  # the same plan: the v1 file is kept
    assert (tmp_path / "plan.json").read_text() == text
    with pytest.raises(ValueError, match="a different plan exists"):
        write_plan(plan_shards(kitti_tree, shard_size=2), tmp_path)


def test_schema_2_records_layout_and_data_root(kitti_tree, tmp_path):
    import json

    write_plan(plan_shards(kitti_tree), tmp_path)
    data = json.loads((tmp_path / "plan.json").read_text())
    assert (data["schema_version"], data["layout"], data["data_root"]) == (
        2,
        "kitti",
        str(kitti_tree.resolve()),
    )
    assert "kitti_root" not in data and data["calibrations"]["2011_09_26"]["doffs"] == 0.0
    plan = load_plan(tmp_path)
    assert plan.depth_range() is None and plan.layout == "kitti"
    data["layout"] = "lego"
    (tmp_path / "plan.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"plan\.json: unknown layout 'lego'; expected one of kitti, rig"):
        load_plan(tmp_path)
    data["schema_version"] = 3
    (tmp_path / "plan.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"plan\.json: plan schema version 3 is not one of \(1, 2\)"):
        load_plan(tmp_path)
