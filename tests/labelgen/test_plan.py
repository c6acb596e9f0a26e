"""The plan: deterministic, partitioned by drive and image size, and safe to re-write."""

from __future__ import annotations

import re

import pytest

from edgedepth.labelgen.plan import load_plan, plan_shards, write_plan


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


def test_plan_id_is_computed_once_and_equals_the_hash_of_the_content(kitti_tree, monkeypatch):
    import hashlib
    import json

    from edgedepth.labelgen.plan import Plan

    plan = plan_shards(kitti_tree, shard_size=2)
    expected = hashlib.sha256(json.dumps(plan._content(), sort_keys=True).encode()).hexdigest()
    calls = []
    original = Plan._content
    monkeypatch.setattr(Plan, "_content", lambda self: calls.append(1) or original(self))
    fresh = plan_shards(kitti_tree, shard_size=2)
    assert all(fresh.plan_id == expected for _ in range(1000)) and len(calls) == 1
    assert json.loads(fresh.to_json())["plan_id"] == expected and len(calls) == 2  # to_json's content


def _plan_data(kitti_tree, tmp_path):
    import json

    write_plan(plan_shards(kitti_tree, shard_size=2), tmp_path)
    return json.loads((tmp_path / "plan.json").read_text())


def _broken(name, data):
    """``data`` (a written plan of the kitti_tree fixture, shard_size 2) broken as ``name`` says."""
    shards, calib = data["shards"], data["calibrations"]["2011_09_26"]
    first = shards[0]["frames"][0]
    edits = {
        "duplicate-index": lambda: shards[1].update(index=0, name="shard-00000"),
        "index-string": lambda: shards[1].update(index="1"),
        "name": lambda: shards[1].update(name="shard-00007"),
        "duplicate-frame-across": lambda: shards[1]["frames"].__setitem__(0, first),
        "duplicate-frame-within": lambda: shards[0]["frames"].__setitem__(1, first),
        "frame-escapes": lambda: shards[0]["frames"].__setitem__(
            0, "../outside/2011_09_26_drive_0001_sync/0000000000"
        ),
        "frame-absolute": lambda: shards[0]["frames"].__setitem__(0, "/etc/passwd"),
        "frame-short-index": lambda: shards[0]["frames"].__setitem__(0, first[:-3]),
        "frame-number": lambda: shards[0]["frames"].__setitem__(0, 7),
        "frame-other-drive": lambda: shards[0]["frames"].__setitem__(0, shards[3]["frames"][0]),
        "frames-string": lambda: shards[0].update(frames="abc"),
        "frames-empty": lambda: shards[0].update(frames=[]),
        "frames-beyond-shard-size": lambda: shards[0]["frames"].append(shards[1]["frames"].pop()),
        "size-infinity": lambda: shards[0].update(image_size=[float("inf"), 160]),
        "size-nan": lambda: shards[0].update(image_size=[64, float("nan")]),
        "size-negative": lambda: shards[0].update(image_size=[-64, 160]),
        "size-float": lambda: shards[0].update(image_size=[64.5, 160]),
        "size-huge": lambda: shards[0].update(image_size=[10**9, 10**9]),
        "size-other": lambda: shards[0].update(image_size=[32, 80]),
        "date-unknown": lambda: shards[0].update(date="2011_10_03"),
        "shards-empty": lambda: data.update(shards=[]),
        "root-int": lambda: data.update(data_root=3),
        "root-relative": lambda: data.update(data_root="kitti"),
        "shard-size-0": lambda: data.update(shard_size=0),
        "shard-size-string": lambda: data.update(shard_size="abc"),
        "shard-size-bool": lambda: data.update(shard_size=True),
        "selection": lambda: data.update(selection="all"),
        "calib-shape": lambda: calib.update(P_rect_02=[[1, 2], [3, 4]]),
        "calib-strings": lambda: calib.update(R_rect_00=[["1", "0", "0"]] * 3),
        "calib-missing": lambda: calib.pop("velo_to_cam"),
        "calib-key": lambda: calib.update(date="2011_09_28"),
        "calib-size": lambda: calib.update(image_size=["abc", 160]),
        "calib-errors": lambda: data.update(calibration_errors={"2011_09_30": 5}),
    }
    edits[name]()
    return data


BROKEN_PLANS = {
    "duplicate-index": r"shards\[1\]\.index: 0, expected 1 \(its position: one index, one file\)",
    "index-string": r"shards\[1\]\.index: not an integer \(got '1'\)",
    "name": r"shards\[1\]\.name: 'shard-00007', expected 'shard-00001'",
    "duplicate-frame-across": r"shards\[1\]\.frames\[0\]: '.*/0000000000' is listed twice \(first as shards\[0\]\.frames\[0\]\)",
    "duplicate-frame-within": r"shards\[0\]\.frames\[1\]: '2011_09_26/.*/0000000000' is listed twice \(first as shards\[0\]\.frames\[0\]\)",
    "frame-escapes": r"shards\[0\]\.frames\[0\]: '\.\./outside/.*' is not a KITTI frame id",
    "frame-absolute": r"shards\[0\]\.frames\[0\]: '/etc/passwd' is not a KITTI frame id",
    "frame-short-index": r"shards\[0\]\.frames\[0\]: '.*/0000000' is not a KITTI frame id",
    "frame-number": r"shards\[0\]\.frames\[0\]: a frame id must be a string, got int 7",
    "frame-other-drive": r"shards\[0\]\.frames\[0\]: '2011_09_26/2011_09_26_drive_0002_sync/0000000000' is not a frame of",
    "frames-string": r"shards\[0\]\.frames: not a JSON array \(got 'abc'\)",
    "frames-empty": r"shards\[0\]\.frames: 0 frames, expected 1 to shard_size 2",
    "frames-beyond-shard-size": r"shards\[0\]\.frames: 3 frames, expected 1 to shard_size 2",
    "size-infinity": r"shards\[0\]\.image_size: not \[height, width\] in whole pixels \(got \[inf, 160\]\)",
    "size-nan": r"shards\[0\]\.image_size: not \[height, width\] in whole pixels",
    "size-negative": r"shards\[0\]\.image_size: -64x160 is outside 1\.\.16384 pixels a side",
    "size-float": r"shards\[0\]\.image_size: not \[height, width\] in whole pixels",
    "size-huge": r"shards\[0\]\.image_size: 1000000000x1000000000 is outside",
    "size-other": r"shards\[0\]\.image_size: \(32, 80\) differs from calibrations\[2011_09_26\]'s",
    "date-unknown": r"shards\[0\]\.date: '2011_10_03' has neither a calibration nor a calibration error",
    "shards-empty": r"shards: empty",
    "root-int": r"data_root: not a string \(got 3\)",
    "root-relative": r"data_root: 'kitti' is not an absolute path",
    "shard-size-0": r"shard_size: 0 is less than 1",
    "shard-size-string": r"shard_size: not an integer \(got 'abc'\)",
    "shard-size-bool": r"shard_size: not an integer \(got True\)",
    "selection": r"selection: not a JSON object",
    "calib-shape": r"calibrations\[2011_09_26\]: P_rect_02: not a 3x4 matrix of numbers",
    "calib-strings": r"calibrations\[2011_09_26\]: R_rect_00: not a 3x3 matrix of numbers",
    "calib-missing": r"calibrations\[2011_09_26\]: velo_to_cam: missing",
    "calib-key": r"calibrations\[2011_09_26\]: holds the calibration of '2011_09_28'",
    "calib-size": r"calibrations\[2011_09_26\]: image_size: not \[height, width\] in whole pixels",
    "calib-errors": r"calibration_errors\[2011_09_30\]: not a string \(got 5\)",
}


@pytest.mark.parametrize("name", sorted(BROKEN_PLANS))
def test_a_broken_plan_is_one_line_naming_the_file_and_the_field(name, kitti_tree, tmp_path):
    """Each is refused by load_plan, in the driver, with a ValueError naming plan.json and the field."""
    import json

    data = _broken(name, _plan_data(kitti_tree, tmp_path))
    (tmp_path / "plan.json").write_text(json.dumps(data))
    with pytest.raises(ValueError) as caught:
        load_plan(tmp_path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{tmp_path / 'plan.json'}: malformed plan: ")
    assert re.search(BROKEN_PLANS[name], message), message


def test_a_plan_that_is_no_text_or_too_deep_is_one_line(tmp_path):
    (tmp_path / "plan.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(ValueError, match=r"plan\.json: malformed plan \(not UTF-8 text: byte 0\)"):
        load_plan(tmp_path)
    (tmp_path / "plan.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match=r"plan\.json: malformed plan \("):
        load_plan(tmp_path)
    (tmp_path / "plan.json").write_text('{"schema_version": true}')
    with pytest.raises(ValueError, match=r"plan\.json: plan schema version True is not one of"):
        load_plan(tmp_path)


def test_a_40000_frame_plan_loads_without_work_that_grows_faster_than_the_frames(kitti_tree, tmp_path):
    """Checking every frame costs about a microsecond each (0.05-0.2 s for 40,000 frames). The bound
    is 10 s, not 1: one CI run took 2.1 s on a loaded 2-core machine, and what it guards against,
    comparing frames pairwise (1.6e9 pairs), would take minutes."""
    import dataclasses
    import time

    from edgedepth.labelgen.plan import ShardPlan

    small = plan_shards(kitti_tree)
    shards = []
    for d in range(40):
        drive = f"2011_09_26_drive_{d:04d}_sync"
        ids = [f"2011_09_26/{drive}/{i:010d}" for i in range(1000)]
        for start in range(0, 1000, 64):
            shards.append(
                ShardPlan(len(shards), "2011_09_26", drive, (64, 160), tuple(ids[start : start + 64]))
            )
    write_plan(dataclasses.replace(small, shards=tuple(shards)), tmp_path)
    start = time.perf_counter()
    plan = load_plan(tmp_path)
    assert time.perf_counter() - start < 10.0 and len(plan.frame_ids) == 40_000


def test_a_plan_with_a_4301_digit_number_names_the_file(tmp_path):
    (tmp_path / "plan.json").write_text('{"schema_version": 2, "shard_size": ' + "9" * 4301 + "}")
    with pytest.raises(ValueError, match=r"plan\.json: malformed plan \(ValueError: Exceeds the limit"):
        load_plan(tmp_path)
