"""The student wing under faults that take more than one command: two trainings on one run folder
(a real second process), a start that fails or is killed before its first checkpoint and the retry
that must follow, and outputs on a read-only disk (named by their own path, found before the work)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgedepth import cli
from edgedepth.common.atomic import atomic_writer, check_writable
from edgedepth.common.lock import LOCK_FILE, RECORD_FILE, read_record
from edgedepth.student.train import run_folder as rf
from tests.reliability.cases import DATE, DRIVE, tree
from tests.reliability.cases_student import FIRST_CONV, _checkpoint, _fill
from tests.student.labelfolder import make_label_folder

BIN = Path(sys.executable).parent


def invoke(*args: object):
    return CliRunner().invoke(cli.main, [str(a) for a in args])


def one_error_line(result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in result.output, result.output
    return errors[0]


def train_argv(labels: Path, run: Path, iters: int = 1, *extra: object) -> list[object]:
    return ["student", "train", labels, "--out", run, "--teacher", "synth", "--no-seg", "--size", "64x32",
            "--epochs", "1", "--iters-per-epoch", iters, "--batch-size", "1", "--workers", "0", "--no-progress",
            *extra]  # fmt: skip


@pytest.fixture(scope="module")
def labels(tmp_path_factory) -> Path:
    return make_label_folder(tmp_path_factory.mktemp("student-faults"), {DRIVE: 2}, seg=False, lidar=False)


def wait_for(path: Path, process: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, f"the first training ended early:\n{process.communicate()[0]}"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.2)


def test_a_second_training_on_one_run_folder_is_refused_and_a_dead_holder_is_taken_over(labels, tmp_path):
    """Two `student train --out RUN` at once: the second is refused with one line naming the first
    (its pid), and leaves the first's files alone. Killed with SIGKILL, the first leaves its lock
    file and record (its OS lock went with it) and a folder without a checkpoint: a plain retry with
    other settings takes both over."""
    run = tmp_path / "run"
    first = subprocess.Popen(
        [str(BIN / "edgedepth"), *map(str, train_argv(labels, run, 1_000_000))],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(run / rf.CONFIG_FILE, first)  # it holds the lock and has written its settings
        config_before = (run / rf.CONFIG_FILE).read_bytes()
        line = one_error_line(invoke(*train_argv(labels, run)))
        assert f"{run}: in use by student train --out {run} (pid {first.pid} on" in line
        assert first.poll() is None, "the second training disturbed the first"
        assert read_record(run)["pid"] == first.pid
        assert (run / rf.CONFIG_FILE).read_bytes() == config_before
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    assert read_record(run)["pid"] == first.pid  # stale now: its process (and OS lock) is gone
    assert not rf.checkpoints_of(run)

    retry = invoke(*train_argv(labels, run, 2))  # other settings than the killed start: it was no run yet
    assert retry.exit_code == 0, retry.output
    assert not (run / LOCK_FILE).exists() and not (run / RECORD_FILE).exists()
    saved = json.loads((run / rf.CONFIG_FILE).read_text())
    assert saved["train"]["iters_per_epoch"] == 2 and (run / rf.LAST).is_file()


def test_a_failed_start_does_not_block_the_retry(labels, tmp_path):
    """A start refused after the folder was prepared (a bad --encoder-weights file), then a plain
    retry and a --resume: both proceed, since a folder is a run only once it holds a checkpoint."""
    run = tmp_path / "run"
    weights = tmp_path / "encoder.pt"
    weights.write_bytes(b"not a checkpoint at all")
    line = one_error_line(invoke(*train_argv(labels, run, 1, "--encoder-weights", weights)))
    assert str(weights) in line
    assert not rf.checkpoints_of(run)

    retry = invoke(*train_argv(labels, run))
    assert retry.exit_code == 0, retry.output
    assert (run / rf.LAST).is_file()

    # a start killed before its first checkpoint: settings and events of an attempt, no checkpoint
    other = tmp_path / "other"
    (other / rf.TENSORBOARD_DIR).mkdir(parents=True)
    (other / rf.TENSORBOARD_DIR / "events.out.tfevents.stale").write_bytes(b"x")
    (other / rf.CONFIG_FILE).write_text(json.dumps({"train": {"lr": 0.5}, "model": {}}))
    resumed = invoke(*train_argv(labels, other), "--resume")  # "settings differ" no more
    assert resumed.exit_code == 0, resumed.output
    assert not (other / rf.TENSORBOARD_DIR / "events.out.tfevents.stale").exists()
    assert json.loads((other / rf.CONFIG_FILE).read_text())["train"]["lr"] == 0.01

    # once committed, the folder is a run: a plain start is refused, with the same one line as before
    line = one_error_line(invoke(*train_argv(labels, run)))
    assert "already holds a training run; pass --resume" in line


def test_outputs_on_a_read_only_disk_name_their_own_path_before_the_work(read_only_disk, tmp_path):
    """eval, bench, predict and export on a read-only folder: exit 4, one line naming the output
    path (never the hidden temporary file), found at the door: the checkpoint given has a NaN
    weight, so a check made after loading it would have said that instead."""
    checkpoint = _checkpoint(tmp_path, _fill(FIRST_CONV, float("nan")))
    root = tree(tmp_path)
    split = tmp_path / "split.txt"
    split.write_text(f"{DATE}/{DRIVE} 1 l\n")
    image = tmp_path / "kitti" / DATE / DRIVE / "image_02" / "data" / "0000000001.png"
    commands = {
        read_only_disk / "eval.json": ["student", "eval", checkpoint, "--data-root", root, "--split", split,
                                       "--gt", "lidar", "--no-progress", "--out", read_only_disk / "eval.json"],
        read_only_disk / "bench.json": ["student", "bench", checkpoint, "--backends", "torch", "--variants", "XS",
                                        "--out", read_only_disk / "bench.json"],
        read_only_disk / "pred": ["student", "predict", checkpoint, image, "--out", read_only_disk / "pred"],
        read_only_disk / "export": ["student", "export", checkpoint, "--out", read_only_disk / "export"],
    }  # fmt: skip
    for output, argv in commands.items():
        line = one_error_line(invoke(*argv), code=4)
        assert "Read-only file system" in line and str(output) in line, line
        assert ".tmp-" not in line and "NaN" not in line, line

    with pytest.raises(OSError) as info:
        with atomic_writer(read_only_disk / "table.json") as handle:
            handle.write(b"{}")
    assert info.value.filename == str(read_only_disk / "table.json")


def test_check_writable_names_the_target_and_leaves_nothing(tmp_path):
    target = tmp_path / "a" / "b" / "eval.json"
    assert check_writable(target) == target
    assert not (tmp_path / "a").exists(), "a check must not create folders"
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError) as info:
        check_writable(tmp_path / "f" / "sub" / "eval.json")
    assert info.value.filename == str(tmp_path / "f" / "sub" / "eval.json")
    with pytest.raises(IsADirectoryError):
        check_writable(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]
