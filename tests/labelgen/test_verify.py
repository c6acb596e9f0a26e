"""Each shard file is verified in full once: stamps trusted by later processes while the file is
unchanged, re-read when it changes, ignored by ``--verify full``; reads in parallel on dask."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edgedepth.labelgen.client import Workers
from edgedepth.labelgen.folder import LabelFolder
from edgedepth.labelgen.plan import plan_shards, write_plan
from edgedepth.labelgen.run import run_stages
from edgedepth.labelgen.verify import STAMP_FILE, StampBook, file_signature
from tests.kitti_tree import make_kitti_tree
from tests.labelgen.test_folder import write_shard
from tests.reliability.cases import flip_byte

DRIVES = {"2011_09_26_drive_0001_sync": 4, "2011_09_26_drive_0002_sync": 2}


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    """Three shards of lidar labels written by a run (so stamped as written)."""
    tree = make_kitti_tree(tmp_path / "kitti", DRIVES, {"2011_09_26": (64, 160)})
    labels = tmp_path / "labels"
    write_plan(plan_shards(tree, shard_size=2), labels)
    run_stages(labels, ["lidar"], workers=1, progress=False)
    return labels


def test_a_run_stamps_what_it_wrote_and_a_new_process_reads_nothing(labelled: Path) -> None:
    stamps = json.loads((labelled / "lidar" / STAMP_FILE).read_text())["shards"]
    assert sorted(stamps) == ["shard-00000", "shard-00001", "shard-00002"]
    assert {s["how"] for s in stamps.values()} == {"written"}
    folder = LabelFolder(labelled)  # as a later process would
    assert folder.unverified(["lidar"], "once") == []
    statuses = folder.statuses("lidar", "once")
    assert all(s.complete for s in statuses) and folder.status_checks == 0  # no file opened
    assert len(folder.unverified(["lidar"], "full")) == 3  # --verify full reads them all again


def test_a_changed_file_is_read_again_and_its_damage_found(labelled: Path) -> None:
    folder = LabelFolder(labelled)
    damaged = flip_byte(folder.shard_path("lidar", "shard-00001"), "depth", 1)
    assert [s.name for _, s in folder.unverified(["lidar"], "once")] == ["shard-00001"]
    assert folder.verify(["lidar"], "once", progress=False) == 1
    status = folder.status("lidar", "shard-00001", "once")
    assert status.state == "invalid" and "dataset depth row 1 is damaged" in status.reason
    assert "shard-00001" not in StampBook(damaged.parent).stamps  # never stamped as good
    # a touch of a good file (same bytes, new mtime and ctime) drops its stamp too
    good = folder.shard_path("lidar", "shard-00002")
    os.utime(good, ns=(0, 0))
    assert [s.name for _, s in LabelFolder(labelled).unverified(["lidar"], "once")] == [
        "shard-00001",
        "shard-00002",
    ]


def test_stamps_of_another_plan_are_not_trusted(labelled: Path, tmp_path: Path) -> None:
    tree = tmp_path / "kitti"
    write_plan(plan_shards(tree, shard_size=3), labelled, overwrite=True)
    folder = LabelFolder(labelled)
    assert folder.unverified(["lidar"], "once") == [("lidar", s) for s in folder.plan.shards]
    assert all(s.state == "stale" for s in folder.statuses("lidar", "once"))


def test_a_full_read_stamps_with_the_failures_and_parallel_equals_serial(tmp_path: Path) -> None:
    tree = make_kitti_tree(tmp_path / "kitti", DRIVES, {"2011_09_26": (64, 160)})
    folder = LabelFolder(tmp_path / "labels")
    write_plan(plan_shards(tree, shard_size=2), folder)
    for i, shard in enumerate(folder.plan.shards):
        write_shard(folder, folder.plan, "lidar", shard, failed=1 if i == 0 else -1)
    serial = LabelFolder(folder.given)
    assert serial.verify(["lidar"], "once", progress=False) == 3
    (folder.given / "lidar" / STAMP_FILE).unlink()
    with Workers(workers=2) as pool:  # asked for: a cluster even for these few frames
        parallel = LabelFolder(folder.given)
        assert parallel.verify(["lidar"], "once", pool, progress=False) == 3
        assert pool.started is not None  # the reads ran on dask workers
    assert parallel.statuses("lidar", "once") == serial.statuses("lidar", "once")
    later = LabelFolder(folder.given)
    first = later.status("lidar", later.plan.shards[0], "once")
    assert later.status_checks == 0 and first.failures == (
        (folder.plan.shards[0].frame_ids[1], "broken on purpose"),
    )


def test_a_read_only_stamp_file_costs_a_reread_not_an_error(labelled: Path) -> None:
    stamp = labelled / "lidar" / STAMP_FILE
    stamp.write_text("{not json")
    folder = LabelFolder(labelled)
    assert len(folder.unverified(["lidar"], "once")) == 3  # unreadable stamps: nothing trusted
    folder.verify(["lidar"], "once", progress=False)
    assert len(json.loads(stamp.read_text())["shards"]) == 3  # rewritten whole


def test_the_signature_changes_with_any_write(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    first = file_signature(path)
    path.write_bytes(b"abd")
    assert file_signature(path) != first and file_signature(tmp_path / "none") is None


def test_a_forced_full_rerun_reads_each_file_once_and_a_quick_one_reads_none_in_full(labelled: Path) -> None:
    folder = LabelFolder(labelled)
    (report,) = run_stages(folder, ["lidar"], workers=1, verify="full", progress=False)
    assert report.shards_complete == 3 and report.frames_processed == 0
    assert folder.status_checks == 3  # one full read a shard, none again for the report
    (labelled / "lidar" / STAMP_FILE).unlink()
    quick = LabelFolder(labelled)
    run_stages(quick, ["lidar"], workers=1, verify="quick", progress=False)
    assert not (labelled / "lidar" / STAMP_FILE).exists()  # nothing was read in full, nothing stamped
