"""Faults from outside: kills at random moments, a full disk, a shard damaged in place, retries of
failed frames, and two writers on one folder. Each ends with labels equal to an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from edgedepth import cli
from edgedepth.common.lock import LOCK_FILE, RECORD_FILE
from edgedepth.labelgen.plan import load_plan, plan_shards, write_plan
from edgedepth.labelgen.run import run_stages
from edgedepth.labelgen.shards import TMP_MARK, check_shard, shard_path
from tests.common.lock_holders import holder_record, leave_stale
from tests.kitti_tree import make_kitti_tree
from tests.labelgen.test_run import assert_same_shards
from tests.reliability.cases import flip_byte

BIN = Path(sys.executable).parent
STAGES = ["lidar", "sgbm"]
DRIVES = {"2011_09_26_drive_0001_sync": 4, "2011_09_26_drive_0002_sync": 4}


def invoke(*args: str):
    return CliRunner().invoke(cli.main, [str(a) for a in args])


def assert_nothing_partial(labels: Path, stages=STAGES) -> int:
    """Every shard file on disk is complete and verifies in full; returns how many there are."""
    plan, count = load_plan(labels), 0
    for stage in stages:
        for shard in plan.shards:
            status = check_shard(shard_path(labels, stage, shard.name), plan.plan_id, shard.frame_ids)
            assert status.state in ("complete", "missing"), (stage, shard.name, status)
            count += status.complete
    return count


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A small tree (64x160 frames), its plan in shards of 2, and an uninterrupted run."""
    root = tmp_path_factory.mktemp("faults")
    tree = make_kitti_tree(root / "kitti", DRIVES, {"2011_09_26": (64, 160)})
    labels = root / "reference"
    write_plan(plan_shards(tree, shard_size=2), labels)
    run_stages(labels, STAGES, workers=2, progress=False)
    return tree, labels


def fresh(tree: Path, labels: Path) -> Path:
    write_plan(plan_shards(tree, shard_size=2), labels)
    return labels


def test_a_damaged_shard_is_found_and_redone_by_the_next_run(small, tmp_path):
    tree, expected = small
    labels = fresh(tree, tmp_path / "labels")
    run_stages(labels, STAGES, workers=1, progress=False)
    damaged = flip_byte(shard_path(labels, "sgbm", "shard-00002"), "disparity", 1)
    untouched = shard_path(labels, "sgbm", "shard-00000").stat().st_mtime_ns
    result = invoke("labelgen", "inspect", labels)
    assert f"invalid {damaged.name}: dataset disparity row 1 is damaged" in result.output, result.output
    reports = run_stages(labels, STAGES, workers=1, progress=False)
    assert reports[1].frames_processed == 2 and reports[0].frames_processed == 0  # only that shard
    assert shard_path(labels, "sgbm", "shard-00000").stat().st_mtime_ns == untouched
    assert_same_shards(expected, labels, STAGES)


def test_retry_failed_redoes_exactly_the_shards_with_failed_frames(small, tmp_path):
    tree, expected = small
    labels = tmp_path / "labels"
    broken_tree = tmp_path / "kitti"
    shutil.copytree(tree, broken_tree)
    fresh(broken_tree, labels)
    scan = (
        broken_tree
        / "2011_09_26"
        / "2011_09_26_drive_0002_sync"
        / "velodyne_points"
        / "data"
        / "0000000003.bin"
    )
    good = scan.read_bytes()
    scan.write_bytes(b"")
    first = invoke("labelgen", "run", labels, "--stages", "lidar", "--workers", "1", "--no-progress")
    assert first.exit_code == 1 and f"{scan}: empty velodyne scan" in first.output, first.output
    assert "--retry-failed" in first.output
    scan.write_bytes(good)  # the user fixes the input
    times = {p.name: p.stat().st_mtime_ns for p in (labels / "lidar").glob("shard-*.h5")}
    again = invoke("labelgen", "run", labels, "--stages", "lidar", "--workers", "1", "--no-progress")
    assert again.exit_code == 1, again.output  # a plain rerun keeps complete shards, failures included
    retried = invoke(
        "labelgen", "run", labels, "--stages", "lidar", "--workers", "1", "--no-progress", "--retry-failed"
    )
    assert retried.exit_code == 0, retried.output
    after = {p.name: p.stat().st_mtime_ns for p in (labels / "lidar").glob("shard-*.h5")}
    assert [name for name in times if after[name] != times[name]] == ["shard-00003.h5"]
    # the tree was copied, so the plan's root (and id) differs: compare the datasets
    for shard in load_plan(labels).shards:
        with (
            h5py.File(shard_path(expected, "lidar", shard.name)) as a,
            h5py.File(shard_path(labels, "lidar", shard.name)) as b,
        ):
            assert set(a) == set(b)
            for name in a:
                np.testing.assert_array_equal(a[name][()], b[name][()], err_msg=f"{shard.name}/{name}")


def test_a_stale_lock_is_taken_over_and_a_live_one_refuses(small, tmp_path):
    tree, _ = small
    labels = fresh(tree, tmp_path / "labels")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leave_stale(labels, holder_record("labelgen run", pid=dead.pid, started="then"))  # no OS lock
    result = invoke("labelgen", "run", labels, "--stages", "lidar", "--workers", "1", "--no-progress")
    assert result.exit_code == 0, result.output
    assert not (labels / LOCK_FILE).exists() and not (labels / RECORD_FILE).exists()  # released at the end
    run = subprocess.Popen(
        [BIN / "edgedepth", "labelgen", "run", labels, "--stages", "sgbm", "--workers", "1", "--no-progress"],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (labels / RECORD_FILE).exists() and time.monotonic() < deadline:  # written once locked
            time.sleep(0.01)
        second = invoke("labelgen", "run", labels, "--stages", "sgbm", "--workers", "1", "--no-progress")
        assert (
            second.exit_code == 2 and f"in use by labelgen run --stages sgbm (pid {run.pid}" in second.output
        )
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()


@pytest.mark.slow
def test_kills_at_random_moments_resume_to_the_uninterrupted_result(tmp_path):
    """SIGKILL of the whole run (driver and workers) at 4 seeded random moments, then a resume."""
    tree = make_kitti_tree(tmp_path / "kitti", DRIVES, {"2011_09_26": (375, 1242)})  # SGBM ~0.3 s a frame
    expected = fresh(tree, tmp_path / "reference")
    run_stages(expected, STAGES, workers=2, progress=False)
    labels = fresh(tree, tmp_path / "labels")
    rng = random.Random(20261201)
    command = [
        BIN / "edgedepth",
        "labelgen",
        "run",
        labels,
        "--stages",
        ",".join(STAGES),
        "--workers",
        "2",
        "--no-progress",
    ]
    done = []
    for _ in range(4):
        run = subprocess.Popen(
            command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(rng.uniform(1.5, 6.0))
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
        time.sleep(0.3)
        done.append(assert_nothing_partial(labels))  # whatever is on disk is whole and verified
    final = subprocess.run(command, capture_output=True, text=True, check=False)
    assert final.returncode == 0, final.stdout + final.stderr
    assert not list(labels.rglob(f"*{TMP_MARK}*")) and not (labels / LOCK_FILE).exists()
    assert not (labels / RECORD_FILE).exists()
    assert_same_shards(expected, labels, STAGES)
    assert done == sorted(done), done  # no kill lost a shard that was already complete


# ---- a full disk -----------------------------------------------------------------------------------


def test_a_read_only_folder_gives_one_line_in_every_writing_command(small, read_only_disk, tmp_path):
    tree, expected = small
    line = one_error_line(
        invoke("labelgen", "plan", "--kitti-root", tree, "--out", read_only_disk / "labels")
    )
    assert "Read-only file system" in line and str(read_only_disk) in line
    fit = [
        "calib",
        "fit",
        expected,
        "--teacher",
        "sgbm",
        "--holdout",
        "0",
        "--min-count",
        "1",
        "--no-progress",
    ]
    line = one_error_line(invoke(*fit, "--out", read_only_disk / "lut.json"))
    assert "Read-only file system" in line and str(read_only_disk) in line
    result = invoke(
        "labelgen", "inspect", expected, "--png", read_only_disk / "png"
    )  # report, then the error
    assert result.exit_code == 4 and result.output.strip().splitlines()[-1] == (
        f"Error: {read_only_disk / 'png'}: Read-only file system"
    ), result.output


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill the file system to the last byte (but ``leave`` bytes); returns the filler to delete."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
        if leave:
            os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave))
    finally:
        os.close(fd)
    return filler


def one_error_line(result, code: int = 4) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == code and len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def test_a_full_disk_gives_one_line_and_recovers_when_space_is_freed(small, small_disk, tmp_path):
    tree, expected = small
    labels = small_disk / "labels"
    filler = fill(small_disk)

    line = one_error_line(
        invoke("labelgen", "plan", "--kitti-root", tree, "--out", labels, "--shard-size", "2")
    )
    assert "No space left on device" in line and str(small_disk) in line
    assert not (labels / "plan.json").exists() and not list(small_disk.rglob("*.tmp-*"))

    filler.unlink()
    assert (
        invoke("labelgen", "plan", "--kitti-root", tree, "--out", labels, "--shard-size", "2").exit_code == 0
    )
    filler = fill(small_disk, leave=48 * 1024)  # room for the lock, not for the shards
    run = subprocess.run(  # a real process: what the dask workers print reaches the terminal too
        [BIN / "edgedepth", "labelgen", "run", labels, "--stages", ",".join(STAGES), "--workers", "2",
         "--no-progress"], capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    output = (run.stdout + run.stderr).strip().splitlines()
    assert run.returncode == 4 and len(output) == 1 and output[0].startswith("Error: "), output
    line = output[0]  # one line, whatever the number of shards and stages; no retry, no traceback
    assert "No space left on device on the file system at " + str(small_disk) in line, line
    assert "free" in line and "rerun" in line and str(labels) in line
    assert_nothing_partial(labels)  # no shard half-written, none readable but wrong

    filler = fill(small_disk)  # to the last byte again
    line = one_error_line(invoke("calib", "fit", expected, "--teacher", "sgbm", "--holdout", "0", "--min-count", "1",
                                 "--out", small_disk / "lut.json", "--no-progress"))  # fmt: skip
    assert "No space left on device" in line and not (small_disk / "lut.json").exists()

    filler.unlink()
    result = invoke(
        "labelgen", "run", labels, "--stages", ",".join(STAGES), "--workers", "1", "--no-progress"
    )
    assert result.exit_code == 0, result.output
    assert_same_shards(expected, labels, STAGES)
    for path in labels.rglob("report.json"):
        assert json.loads(path.read_text())["shards_complete"] == len(load_plan(labels).shards)
