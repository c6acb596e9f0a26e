"""LabelFolder: the plan and shard statuses cached per process, invalidated when files change, and
the driver-side plan parses and status checks of the demo's sequence through one folder."""

from __future__ import annotations

import collections
import os
import pickle
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import edgedepth.labelgen as labelgen
from edgedepth.calib.fit import fit_from_labels
from edgedepth.labelgen import shards as shards_module
from edgedepth.labelgen.folder import LabelFolder
from edgedepth.labelgen.inspect import inspect_labels, stage_dirs, write_previews
from edgedepth.labelgen.plan import PLAN_FILE, Plan, ShardPlan, load_plan, plan_shards, write_plan
from edgedepth.labelgen.reader import LabelReader
from edgedepth.labelgen.run import run_stages
from edgedepth.labelgen.shards import DatasetSpec, ShardWriter, check_shard
from tests.kitti_tree import make_kitti_tree

DRIVE = "2011_09_26_drive_0001_sync"
FAST = {"sgbm": {"num_disparities": 32}}
SPECS = {"depth": DatasetSpec((64, 160), "float32")}  # the plan's image size (lidar's schema)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """One drive of five small frames (files only: no stage is run)."""
    return make_kitti_tree(tmp_path / "kitti", {DRIVE: 5}, {"2011_09_26": (64, 160)})


def write_shard(folder: LabelFolder, plan: Plan, stage: str, shard: ShardPlan, failed: int = -1) -> None:
    """A complete shard of ``stage`` (row ``failed`` a failed frame)."""
    attrs = {"stage": stage, "plan_id": plan.plan_id, "shard_index": shard.index, "shard_name": shard.name}
    with ShardWriter(folder.shard_path(stage, shard), shard.frame_ids, SPECS, attrs) as writer:
        for row in range(len(shard.frame_ids)):
            if row == failed:
                writer.fail(row, "broken on purpose")
            else:
                writer.write(row, {"depth": np.full((64, 160), row + 1, dtype=np.float32)})


@pytest.fixture
def folder(tree: Path, tmp_path: Path) -> LabelFolder:
    """A planned folder (shards of 3: two shards), its ``lidar`` shards written."""
    folder = LabelFolder(tmp_path / "labels")
    write_plan(plan_shards(tree, shard_size=3), folder)
    for shard in folder.plan.shards:
        write_shard(folder, folder.plan, "lidar", shard)
    return folder


def test_paths_identity_repr_and_pickle(tmp_path: Path) -> None:
    folder = LabelFolder(tmp_path / "labels")
    assert LabelFolder.of(folder) is folder
    assert LabelFolder.of(str(tmp_path / "labels")) is not folder
    assert folder.path == (tmp_path / "labels").resolve() and os.fspath(folder) == str(folder.path)
    assert folder.given == tmp_path / "labels" and repr(folder) == f"LabelFolder({str(folder.given)!r})"
    relative = LabelFolder("labels")
    assert relative.given == Path("labels") and relative.path == Path.cwd().resolve() / "labels"
    assert LabelFolder.of("labels", resolve=True).given == relative.path
    assert labelgen.LabelFolder is LabelFolder and "LabelFolder" in labelgen.__all__
    folder.plan_reads = 5
    copy = pickle.loads(pickle.dumps(folder))
    assert isinstance(copy, LabelFolder) and copy.given == folder.given and copy.plan_reads == 0


def test_the_plan_is_parsed_once_and_again_after_a_different_plan_is_written(
    folder: LabelFolder, tree: Path
) -> None:
    first = folder.plan
    assert folder.plan is first and folder.plan is first and folder.plan_reads == 1
    other = plan_shards(tree, shard_size=2)
    write_plan(other, folder, overwrite=True)
    assert folder.plan.plan_id == other.plan_id != first.plan_id and folder.plan_reads == 2
    write_plan(first, folder.given, overwrite=True)  # another writer: seen by the file's stat
    assert folder.plan.plan_id == first.plan_id and folder.plan_reads == 3
    assert folder.plan.plan_id == first.plan_id and folder.plan_reads == 3


def test_missing_and_malformed_plans_keep_load_plans_errors(tmp_path: Path) -> None:
    folder = LabelFolder(tmp_path / "labels")
    with pytest.raises(FileNotFoundError) as expected:
        load_plan(tmp_path / "labels")
    with pytest.raises(FileNotFoundError) as got:
        _ = folder.plan
    assert str(got.value) == str(expected.value)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / PLAN_FILE).write_text("{oops")
    with pytest.raises(ValueError) as expected:
        load_plan(tmp_path / "labels")
    with pytest.raises(ValueError) as got:
        _ = folder.plan
    assert str(got.value) == str(expected.value) and "malformed plan" in str(got.value)


def test_a_status_is_checked_once_and_again_after_the_file_is_rewritten(folder: LabelFolder) -> None:
    plan, shard = folder.plan, folder.plan.shards[0]
    status = folder.status("lidar", shard)
    assert status.complete and not status.failures and folder.status_checks == 1
    assert folder.status("lidar", shard.name) is status and folder.status_checks == 1
    write_shard(folder, plan, "lidar", shard, failed=1)
    again = folder.status("lidar", shard)
    assert again.failures == ((shard.frame_ids[1], "broken on purpose"),) and folder.status_checks == 2
    assert again == check_shard(folder.shard_path("lidar", shard), plan.plan_id, shard.frame_ids)


def test_a_full_check_serves_a_quick_one_but_not_the_reverse(folder: LabelFolder) -> None:
    first, second = folder.plan.shards
    folder.status("lidar", first, "full")
    folder.status("lidar", first, "quick")
    assert folder.status_checks == 1
    folder.status("lidar", second, "quick")
    folder.status("lidar", second, "full")
    folder.status("lidar", second, "quick")
    folder.status("lidar", second, "full")
    assert folder.status_checks == 3
    with pytest.raises(ValueError, match="verify must be one of quick, once, full, got 'fast'"):
        folder.status("lidar", first, "fast")


def test_missing_shards_are_cached_until_the_file_appears(folder: LabelFolder) -> None:
    shard = folder.plan.shards[0]  # "teacher": a stage of no documented schema, as SPECS is none
    assert folder.status("teacher", shard).state == "missing"
    assert folder.status("teacher", shard).state == "missing" and folder.status_checks == 1
    write_shard(folder, folder.plan, "teacher", shard)
    assert folder.status("teacher", shard).complete and folder.status_checks == 2


def test_refresh_drops_one_stage_or_everything(folder: LabelFolder) -> None:
    for stage in ("lidar", "sgbm"):
        folder.statuses(stage)
    assert folder.status_checks == 4
    folder.refresh("sgbm")
    folder.statuses("lidar")
    assert folder.status_checks == 4
    folder.statuses("sgbm")
    assert folder.status_checks == 6
    folder.refresh()
    folder.statuses("lidar")
    assert folder.status_checks == 8 and folder.plan_reads == 2


def test_statuses_follow_the_plan_and_a_new_plan_makes_shards_stale(folder: LabelFolder, tree: Path) -> None:
    statuses = folder.statuses("lidar")
    assert [s.path for s in statuses] == [folder.shard_path("lidar", s) for s in folder.plan.shards]
    assert all(s.complete for s in statuses)
    write_plan(plan_shards(tree, shard_size=2), folder.given, overwrite=True)  # not through the folder
    assert {s.state for s in folder.statuses("lidar")} == {"stale", "missing"}
    with pytest.raises(ValueError, match="no shard 'shard-00099' in the plan"):
        folder.status("lidar", "shard-00099")


def test_stages_and_has_stage(folder: LabelFolder) -> None:
    (folder.given / "previews").mkdir()
    (folder.given / "sgbm").mkdir()
    assert folder.stages() == stage_dirs(folder.given) == ["lidar"]
    assert folder.has_stage("lidar") and folder.has_stage("sgbm") and not folder.has_stage("seg")


def test_a_reader_over_a_folder_pickles_without_the_folders_caches(folder: LabelFolder) -> None:
    folder.statuses("lidar", "full")
    reader = LabelReader(folder, ["lidar"])
    assert folder.status_checks == 2 and reader.labels_dir == folder.given
    assert "_checked" not in pickle.dumps(reader).decode("latin-1")
    copy = pickle.loads(pickle.dumps(reader))
    assert copy[4]["lidar/depth"][0, 0] == 2.0 and copy.frame_ids == folder.plan.frame_ids
    reader.close()
    copy.close()


# ---- the demo's sequence through one folder --------------------------------------------------------


@pytest.fixture
def driver_counts(monkeypatch: pytest.MonkeyPatch) -> Iterator[collections.Counter]:
    """``Plan.from_json`` and ``check_shard`` calls in this process (dask workers are others)."""
    counts: collections.Counter = collections.Counter()
    from_json = Plan.from_json.__func__

    def counted_from_json(cls, *args, **kwargs):
        counts["plan"] += 1
        return from_json(cls, *args, **kwargs)

    original = shards_module.check_shard

    def counted_check(*args, **kwargs):
        counts["check"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(Plan, "from_json", classmethod(counted_from_json))
    for module in list(sys.modules.values()):
        name = getattr(module, "__name__", "") or ""
        if name.startswith("edgedepth.") and getattr(module, "check_shard", None) is original:
            monkeypatch.setattr(module, "check_shard", counted_check)
    yield counts


def test_the_demo_sequence_parses_the_plan_once_and_checks_each_shard_at_most_twice_a_run(
    tmp_path: Path, driver_counts: collections.Counter
) -> None:
    """Plain paths (before LabelFolder): 7 plan parses and 16 status checks for this sequence."""
    tree = make_kitti_tree(tmp_path / "kitti", {DRIVE: 3}, {"2011_09_26": (64, 160)})
    folder = LabelFolder(tmp_path / "labels")
    stages = ["images", "lidar", "sgbm"]
    seen: dict[str, tuple[int, int]] = {}

    def step(name: str) -> None:
        assert (folder.plan_reads, folder.status_checks) == (driver_counts["plan"], driver_counts["check"])
        seen[name] = (folder.plan_reads, folder.status_checks)

    write_plan(plan_shards(tree, shard_size=64), folder)
    step("plan")
    reports = run_stages(folder, stages, workers=1, stage_options=FAST, progress=False)
    assert [(r.stage, r.shards_complete, r.frames_done) for r in reports] == [(s, 1, 3) for s in stages]
    step("run")
    report = inspect_labels(folder)
    assert "shards: 1/1 complete" in report
    step("inspect")
    assert write_previews(folder, tmp_path / "previews")
    step("previews")
    lut = fit_from_labels(folder, "sgbm", holdout=0.0, min_count=20, n_bootstrap=100, progress=False)
    assert lut.source["plan_id"] == folder.plan.plan_id and lut.source["labels_dir"] == str(folder.path)
    step("fit")
    reader = LabelReader(folder, ["lidar", "sgbm"])
    assert len(reader) == 3
    reader.close()
    step("reader")
    assert all(r.shards_complete == 1 for r in run_stages(folder, stages, workers=1, progress=False))
    step("rerun")  # nothing to do: every status is known, no task runs

    plans, checks = zip(*seen.values(), strict=True)
    assert max(plans) <= 1  # plan.json parsed once in the whole sequence
    per_step = dict(zip(seen, np.diff((0, *checks)), strict=True))
    assert per_step["plan"] == 0
    assert per_step["run"] <= 2 * len(stages)  # each (stage, shard): before and after writing
    assert per_step["inspect"] <= len(stages)  # its full check: the run's last check was quick
    assert per_step["previews"] == per_step["fit"] == per_step["reader"] == per_step["rerun"] == 0
    assert checks[-1] <= 9
