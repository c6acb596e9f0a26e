"""labelgen and calib on a real one-node SLURM through dask-jobqueue (slow: SLURM starts once).

Each run submits real batch jobs whose dask workers join the run's scheduler: shards equal a local
run's, a job cancelled with scancel mid-run is survived, a job for a partition that does not exist
fails in one line with nothing left queued, and the bias table fitted on SLURM equals a local fit.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgedepth import cli
from edgedepth.labelgen.client import ClusterSpec
from edgedepth.labelgen.plan import load_plan, plan_shards, write_plan
from edgedepth.labelgen.run import run_stages
from edgedepth.labelgen.shards import shard_path
from tests.cluster.slurm import PARTITION
from tests.labelgen.test_run import assert_same_shards

pytestmark = pytest.mark.slow
STAGES = ["images", "lidar", "sgbm"]
DRIVE = "2011_09_26_drive_0001_sync"


def job_options(tmp: Path) -> list[str]:
    return [
        f"queue={PARTITION}",
        "cores=1",
        "memory=2GB",
        "walltime=00:20:00",
        f"log_directory={tmp / 'jobs'}",
    ]


def job_flags(tmp: Path) -> list[str]:
    return [flag for option in job_options(tmp) for flag in ("--job-option", option)]


@pytest.fixture(scope="module")
def sample_labels(kitti_sample, tmp_path_factory):
    """Six copies of the real KITTI frame (two drives), planned in shards of 2, labelled locally."""
    root = tmp_path_factory.mktemp("slurm_sample")
    tree = root / "kitti"
    date = tree / "2011_09_26"
    date.mkdir(parents=True)
    for name in ("calib_cam_to_cam.txt", "calib_velo_to_cam.txt"):
        shutil.copy(kitti_sample / "2011_09_26" / name, date / name)
    for drive in (DRIVE, "2011_09_26_drive_0002_sync"):
        for sub, suffix in (("image_02", ".png"), ("image_03", ".png"), ("velodyne_points", ".bin")):
            source = kitti_sample / "2011_09_26" / DRIVE / sub / "data" / f"0000000005{suffix}"
            target = date / drive / sub / "data"
            target.mkdir(parents=True)
            for i in range(3):
                shutil.copy(source, target / f"{i:010d}{suffix}")
    local = root / "local"
    write_plan(plan_shards(tree, shard_size=2), local)
    run_stages(local, STAGES, workers=2, progress=False)
    return tree, local


def fresh(tree: Path, labels: Path) -> Path:
    write_plan(plan_shards(tree, shard_size=2), labels)
    return labels


def test_run_on_two_slurm_jobs_equals_a_local_run(slurm, sample_labels, tmp_path):
    tree, local = sample_labels
    labels = fresh(tree, tmp_path / "labels")
    argv = ["labelgen", "run", str(labels), "--stages", ",".join(STAGES), "--cluster", "slurm", "--jobs", "2",
            *job_flags(tmp_path), "--job-timeout", "120", "--no-progress"]  # fmt: skip
    result = CliRunner().invoke(cli.main, argv)
    assert result.exit_code == 0, result.output
    assert_same_shards(local, labels, STAGES)
    report = json.loads((labels / "sgbm" / "report.json").read_text())
    assert report["cluster"] == "slurm" and len(report["job_ids"]) == 2, report
    assert report["shards_complete"] == len(load_plan(labels).shards)
    deadline = time.monotonic() + 60
    while slurm.queue() and time.monotonic() < deadline:  # the jobs end with the run
        time.sleep(0.5)
    assert not slurm.queue()


def test_a_job_cancelled_mid_run_is_survived(slurm, sample_labels, tmp_path):
    tree, local = sample_labels
    labels = fresh(tree, tmp_path / "labels")
    # generous waits: on 2 cores shared with another pytest-xdist worker, a job once took over 120 s to start
    spec = ClusterSpec("slurm", 2, dict(o.split("=", 1) for o in job_options(tmp_path)), job_timeout=300)
    spec.options["cores"] = 1
    result: dict[str, object] = {}

    def drive() -> None:
        try:
            result["reports"] = run_stages(labels, STAGES, progress=False, cluster=spec)
        except BaseException as err:  # surfaced below
            result["error"] = err

    runner = threading.Thread(target=drive)
    runner.start()
    deadline = time.monotonic() + 300
    while not list((labels / "images").glob("shard-*.h5")) and time.monotonic() < deadline:
        time.sleep(0.1)  # the jobs are up and working
    jobs = slurm.queue()
    assert len(jobs) == 2, (jobs, slurm._sinfo(), result)
    subprocess.run(["scancel", jobs[0]], check=True)
    runner.join(timeout=600)
    assert not runner.is_alive() and "error" not in result, result
    assert all(r.shards_complete == r.shards_total and not r.frames_failed for r in result["reports"])
    assert_same_shards(local, labels, STAGES)


def test_a_partition_that_does_not_exist_fails_in_one_line(slurm, sample_labels, tmp_path):
    tree, _ = sample_labels
    labels = fresh(tree, tmp_path / "labels")
    argv = ["labelgen", "run", str(labels), "--stages", "images", "--cluster", "slurm", *job_flags(tmp_path),
            "--job-option", "queue=no-such-partition", "--no-progress"]  # fmt: skip
    result = CliRunner().invoke(cli.main, argv)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert (
        lines[0].startswith("Error: slurm: the scheduler refused the job")
        and "queue=no-such-partition" in lines[0]
    )
    assert "invalid partition" in lines[0]
    assert not slurm.queue() and not list((labels / "images").glob("shard-*.h5"))


def test_dry_run_prints_the_job_script_and_submits_nothing(slurm, sample_labels, tmp_path):
    tree, _ = sample_labels
    labels = fresh(tree, tmp_path / "labels")
    argv = ["labelgen", "run", str(labels), "--cluster", "slurm", *job_flags(tmp_path), "--device", "cuda",
            "--dry-run"]  # fmt: skip
    result = CliRunner().invoke(cli.main, argv)
    assert result.exit_code == 0, result.output
    assert f"#SBATCH -p {PARTITION}" in result.output and "#SBATCH --gres=gpu:1" in result.output
    assert "--resources GPU=1" in result.output and "distributed.cli.dask_worker" in result.output
    assert not slurm.queue() and not (labels / "images").exists()


def test_calib_fit_and_apply_on_slurm_equal_local(slurm, sample_labels, tmp_path):
    _, local = sample_labels
    labels = tmp_path / "labels"
    shutil.copytree(local, labels)
    fit = [
        "calib",
        "fit",
        str(labels),
        "--teacher",
        "sgbm",
        "--holdout",
        "0",
        "--min-count",
        "1",
        "--no-progress",
    ]
    here = CliRunner().invoke(cli.main, [*fit, "--out", str(tmp_path / "local.json")])
    there = CliRunner().invoke(
        cli.main,
        [
            *fit,
            "--out",
            str(tmp_path / "slurm.json"),
            "--cluster",
            "slurm",
            "--jobs",
            "2",
            *job_flags(tmp_path),
        ],
    )
    assert here.exit_code == 0 and there.exit_code == 0, here.output + there.output
    a, b = (json.loads((tmp_path / name).read_text()) for name in ("local.json", "slurm.json"))
    assert a["sha256"] == b["sha256"] and a["bins"] == b["bins"]
    applied = CliRunner().invoke(
        cli.main, ["calib", "apply", str(tmp_path / "slurm.json"), str(labels), "--teacher", "sgbm",
                   "--cluster", "slurm", *job_flags(tmp_path)],
    )  # fmt: skip
    assert applied.exit_code == 0 and "shards written" in applied.output, applied.output
    plan = load_plan(labels)
    assert all(shard_path(labels, "sgbm_corrected", s.name).is_file() for s in plan.shards)
