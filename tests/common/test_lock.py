"""The run lock (``edgedepth.common.lock``): an OS lock that dies with its holder, and a record that
names the holder in the one line refusing a second writer."""

from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import ExitStack

import pytest

from edgedepth.common import lock as lock_module
from edgedepth.common.errors import describe
from edgedepth.common.lock import LOCK_FILE, RECORD_FILE, FolderLocked, folder_lock, read_record
from tests.common.lock_holders import hold, holder_record, holding_process, leave_stale
from tests.reliability.conftest import tmpfs


def names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def refusal(folder, record: dict) -> str:
    return (
        f"{folder}: in use by {record['command']} (pid {record['pid']} on {record['host']}, "
        f"since {record['started']}); wait for it to finish"
    )


def test_a_second_writer_is_refused_with_one_line_naming_the_holder(tmp_path):
    folder = tmp_path / "labels"
    holder = holding_process(folder, "labelgen run --stages sgbm")
    try:
        record = read_record(folder)
        assert record["pid"] == holder.pid and record["command"] == "labelgen run --stages sgbm"
        with pytest.raises(FolderLocked) as refused, folder_lock(folder, "labelgen plan"):
            pass
        assert str(refused.value) == refusal(folder, record)
        assert read_record(folder) == record and holder.poll() is None  # the holder is left alone
    finally:
        holder.kill()
        holder.wait()


def test_two_lock_objects_in_one_process_conflict(tmp_path):
    """What the in-process holder of the catalogue relies on; a nested lock is refused too."""
    record = holder_record("student train --out run")
    held = hold(tmp_path, record)
    with pytest.raises(FolderLocked, match="in use by student train --out run"), folder_lock(tmp_path, "x"):
        pass
    held.release()
    with folder_lock(tmp_path, "outer"):
        with pytest.raises(FolderLocked, match=f"in use by outer \\(pid {os.getpid()} on"):
            with folder_lock(tmp_path, "inner"):
                pass
        assert read_record(tmp_path)["command"] == "outer"  # the refused one took nothing


def test_the_lock_is_released_on_exit_and_on_exception(tmp_path):
    folder = tmp_path / "run"
    with folder_lock(folder, "student train --out run") as path:
        assert path == folder / LOCK_FILE and names(folder) == [LOCK_FILE, RECORD_FILE]
        record = read_record(folder)
        assert record["pid"] == os.getpid() and record["command"] == "student train --out run"
    assert names(folder) == []  # the folder is left as it was found
    with pytest.raises(KeyError, match="boom"), folder_lock(folder, "first"):
        raise KeyError("boom")
    assert names(folder) == []
    with folder_lock(folder, "again"):
        assert read_record(folder)["command"] == "again"


def test_a_sigkilled_holder_does_not_block_the_next_run(tmp_path):
    holder = holding_process(tmp_path, "labelgen run")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert read_record(tmp_path)["pid"] == holder.pid  # its files stay, its OS lock went with it
    with folder_lock(tmp_path, "labelgen run"):
        assert read_record(tmp_path)["pid"] == os.getpid()  # the leftover record is overwritten
    assert names(tmp_path) == []


def test_a_record_without_the_os_lock_blocks_nothing(tmp_path):
    leave_stale(tmp_path, holder_record("labelgen run", pid=1, started="then"))
    with folder_lock(tmp_path, "calib apply --teacher sgbm"):
        assert read_record(tmp_path)["command"] == "calib apply --teacher sgbm"
    assert names(tmp_path) == []


def test_a_refused_writer_waits_briefly_for_the_holders_record(tmp_path, monkeypatch):
    """A holder between taking the lock and writing its record: named once it is written, else
    refused with what is unknown."""
    monkeypatch.setattr(lock_module, "RECORD_WAIT_S", 0.3)
    held = hold(tmp_path, holder_record("x"))
    (tmp_path / RECORD_FILE).unlink()
    with pytest.raises(FolderLocked) as refused, folder_lock(tmp_path, "y"):
        pass
    assert (
        str(refused.value)
        == f"{tmp_path}: in use by another command (pid ? on ?, since ?); wait for it to finish"
    )
    monkeypatch.setattr(lock_module, "RECORD_WAIT_S", 30.0)
    record = holder_record("labelgen run", started="now")
    later = threading.Timer(0.2, leave_stale, (tmp_path, record))
    later.start()
    started = time.monotonic()
    with pytest.raises(FolderLocked) as refused, folder_lock(tmp_path, "y"):
        pass
    later.join()
    assert str(refused.value) == refusal(tmp_path, record) and time.monotonic() - started < 5
    held.release()


def test_a_forked_child_leaves_the_parents_lock(tmp_path):
    """A child forked while the lock is held (a DataLoader worker) that unwinds the block on its way
    out neither removes the parent's files nor releases its lock."""
    held = ExitStack()
    held.enter_context(folder_lock(tmp_path, "student train --out run"))
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            held.close()
            code = 0
        finally:
            os._exit(code)
    assert os.waitpid(pid, 0)[1] == 0
    assert names(tmp_path) == [LOCK_FILE, RECORD_FILE]
    with pytest.raises(FolderLocked, match="in use by student train --out run"), folder_lock(tmp_path, "x"):
        pass
    held.close()
    assert names(tmp_path) == []


@pytest.fixture
def unwritable(tmp_path):
    """A folder nobody can write in: chmod for a user, a read-only tmpfs for root (who ignores modes)."""
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
    else:
        with tmpfs(tmp_path / "ro", "size=1m,ro") as mount:
            yield mount


@pytest.mark.parametrize("inside", ["", "labels"], ids=["the folder", "a folder to create"])
def test_an_unwritable_folder_gives_an_error_naming_the_path(unwritable, inside):
    folder = unwritable / inside if inside else unwritable
    named = folder if inside else folder / LOCK_FILE
    with pytest.raises(OSError) as failed, folder_lock(folder, "labelgen plan"):
        pass
    assert not isinstance(failed.value, FolderLocked | TimeoutError)
    assert describe(failed.value).startswith(f"{named}: "), describe(failed.value)
    assert names(unwritable) == []
