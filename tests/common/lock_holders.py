"""Holders of a folder's lock (``edgedepth.common.lock``) for the tests: a live one, whose OS lock
is really held (in this process, or by a child process), and the files a killed one leaves."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from filelock import FileLock

from edgedepth.common.atomic import write_text_atomic
from edgedepth.common.lock import LOCK_FILE, RECORD_FILE

HOLDER = """
import sys, time
from edgedepth.common.lock import folder_lock
with folder_lock(sys.argv[1], sys.argv[2]):
    print("held", flush=True)
    time.sleep(600)
"""


def holder_record(command: str, pid: int | None = None, started: str = "2026-12-01T00:00:00+00:00") -> dict:
    """The record a holder running ``command`` writes (this process's pid unless given)."""
    return {"host": socket.gethostname(), "pid": os.getpid() if pid is None else pid, "command": command,
            "started": started}  # fmt: skip


def hold(folder: Path, record: dict) -> FileLock:
    """Hold ``folder``'s OS lock in this process, with ``record``; ``release()`` it when done.

    The lock is a ``FileLock`` of its own: ``flock`` locks of two open files conflict within one
    process too, so a ``folder_lock`` here (the command under test) is refused as by another process.
    """
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / LOCK_FILE, blocking=False)
    lock.acquire()
    write_text_atomic(folder / RECORD_FILE, json.dumps(record))
    return lock


def leave_stale(folder: Path, record: dict) -> None:
    """What a killed holder leaves: the lock file and its record, without the OS lock."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK_FILE).touch()
    write_text_atomic(folder / RECORD_FILE, json.dumps(record))


def holding_process(folder: Path, command: str) -> subprocess.Popen:
    """A child process holding ``folder``'s lock through ``folder_lock`` (started, record written);
    the caller kills it."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder), command], stdout=subprocess.PIPE, text=True
    )
    line = child.stdout.readline().strip()
    if line != "held":
        child.kill()
        raise AssertionError(f"the holder did not start: {line!r} {child.communicate()}")
    return child


__all__ = ["HOLDER", "hold", "holder_record", "holding_process", "leave_stale"]
