"""Killed runs and killed workers: nothing partial is readable, and resuming equals not failing.

These tests start real processes (a run in its own process group; a `dask scheduler` and `dask
worker` processes on localhost) and kill them with SIGKILL part-way through writing a shard.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edgedepth.labelgen.plan import load_plan, plan_shards, write_plan
from edgedepth.labelgen.run import run_stages
from edgedepth.labelgen.shards import TMP_MARK, check_shard, shard_path
from tests.kitti_tree import make_kitti_tree
from tests.labelgen.test_run import assert_same_shards

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
STAGES = ["lidar", "sgbm"]
KITTI_SIZE = (375, 1242)  # full-size frames: SGBM takes long enough to be caught mid-shard


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A KITTI-size tree, its plan, and an uninterrupted run to compare against."""
    root = tmp_path_factory.mktemp("resume")
    tree = make_kitti_tree(
        root / "kitti",
        {"2011_09_26_drive_0001_sync": 6, "2011_09_26_drive_0002_sync": 6},
        {"2011_09_26": KITTI_SIZE},
    )
    labels = root / "reference"
    write_plan(plan_shards(tree, shard_size=3), labels)
    run_stages(labels, STAGES, workers=2, progress=False)
    return tree, labels


def wait_for(condition, timeout: float = 120.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def temporaries(labels: Path) -> list[Path]:
    return [p for p in labels.glob(f"sgbm/*{TMP_MARK}*")]


def assert_no_partial_shard(labels: Path) -> None:
    plan = load_plan(labels)
    for stage in STAGES:
        for shard in plan.shards:
            status = check_shard(shard_path(labels, stage, shard.name), plan.plan_id, shard.frame_ids)
            assert status.state in ("complete", "missing"), (stage, shard.name, status)


def test_a_killed_run_resumes_to_the_uninterrupted_result(reference, tmp_path):
    tree, expected = reference
    labels = tmp_path / "labels"
    write_plan(plan_shards(tree, shard_size=3), labels)
    run = subprocess.Popen(
        [
            BIN / "edgedepth",
            "labelgen",
            "run",
            str(labels),
            "--stages",
            ",".join(STAGES),
            "--workers",
            "2",
            "--no-progress",
        ],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:  # shards are built in memory: the kill catches the other worker's shard half-computed
        wait_for(lambda: any(labels.glob("sgbm/shard-*.h5")), what="a first complete shard")
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    time.sleep(0.5)  # let the killed workers' files settle
    assert_no_partial_shard(labels)
    done_before = sum(1 for _ in labels.glob("sgbm/shard-*.h5"))
    assert 0 < done_before < len(load_plan(labels).shards)

    reports = run_stages(labels, STAGES, workers=2, progress=False)
    assert all(r.shards_complete == r.shards_total for r in reports)
    assert reports[1].frames_processed == 3 * (len(load_plan(labels).shards) - done_before)
    assert not temporaries(labels)
    assert_same_shards(expected, labels, STAGES)


def test_separate_scheduler_and_workers_retry_a_killed_worker(reference, tmp_path):
    tree, expected = reference
    labels = tmp_path / "labels"
    write_plan(plan_shards(tree, shard_size=3), labels)
    scheduler_file = tmp_path / "scheduler.json"
    env = {**os.environ, "DASK_DISTRIBUTED__LOGGING__DISTRIBUTED": "error"}
    procs = [
        subprocess.Popen(
            [
                BIN / "dask",
                "scheduler",
                "--scheduler-file",
                scheduler_file,
                "--port",
                "0",
                "--dashboard-address",
                ":0",
            ],
            env=env,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        wait_for(scheduler_file.exists, 60, "the scheduler")
        address = json.loads(scheduler_file.read_text())["address"]
        for _ in range(2):
            procs.append(
                subprocess.Popen(
                    [
                        BIN / "dask",
                        "worker",
                        "--scheduler-file",
                        scheduler_file,
                        "--nthreads",
                        "1",
                        "--memory-limit",
                        "4GB",
                    ],
                    env=env,
                    stderr=subprocess.DEVNULL,
                )
            )
        from distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
        result: dict[str, object] = {}

        def drive() -> None:
            try:
                result["reports"] = run_stages(labels, STAGES, scheduler=address, progress=False)
            except BaseException as err:  # surfaced by the assertion below
                result["error"] = err

        runner = threading.Thread(target=drive)
        runner.start()

        def kill_a_writer() -> bool:
            for tmp in temporaries(labels):  # a shard mid-write: <name>.tmp-<host>-<pid>-<random>
                try:
                    os.kill(int(tmp.name.split(TMP_MARK)[1].rsplit("-", 2)[1]), signal.SIGKILL)
                    return True
                except ProcessLookupError:  # that writer finished meanwhile
                    continue
            return False

        wait_for(kill_a_writer, what="a shard mid-write whose writer can be killed")
        runner.join(timeout=300)
        assert not runner.is_alive() and "error" not in result, result
        reports = result["reports"]
        assert all(r.shards_complete == r.shards_total and not r.shards_failed for r in reports)
        assert reports[0].workers == 2
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
    assert_same_shards(expected, labels, STAGES)
