"""Whether a process is alive on this host, and whether the writer named in a temporary file is.

Temporary files (of shards, ``edgedepth.labelgen.shards``; of every other file, ``edgedepth.common.atomic``)
end in ``.tmp-<host>-<pid>-<random>``: a resumed run deletes those whose writer is gone.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from pathlib import Path

TMP_MARK = ".tmp-"
STALE_TMP_S = 6 * 3600
"""A temporary file of another host's writer (which cannot be asked) is stale after this long."""


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (a zombie, killed but never reaped, does not).

    A killed dask worker whose parent died too is re-parented to PID 1; in a container whose PID 1
    does not reap, it stays a zombie for good, and ``kill(pid, 0)`` still succeeds on it.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): kill(pid, 0) is all we can ask
    state = stat.rsplit(")", 1)[-1].split()[:1]  # the command in (...) may hold spaces
    return state not in (["Z"], ["X"])


def temp_suffix() -> str:
    """``.tmp-<host>-<pid>-<random>``: what a temporary file's name ends in."""
    return f"{TMP_MARK}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def writer_alive(tmp: Path) -> bool:
    """Whether the writer of temporary file ``tmp`` may still be writing it: another live process of
    this host (this process asks before it writes, so its own leftovers count as gone), or another
    host's file younger than ``STALE_TMP_S``."""
    parts = tmp.name.rsplit(TMP_MARK, 1)[-1].rsplit("-", 2)
    try:
        age = time.time() - tmp.stat().st_mtime
    except FileNotFoundError:
        return True  # gone already
    if len(parts) == 2:  # <pid>-<random>: an older name without the host
        parts = [socket.gethostname(), *parts]
    host, pid = parts[0], parts[1] if len(parts) == 3 else ""
    if host == socket.gethostname() and pid.isdigit():
        return int(pid) != os.getpid() and pid_alive(int(pid))
    return age < STALE_TMP_S


def remove_dead_temps(folder: Path, pattern: str) -> int:
    """Delete the temporary files matching ``pattern`` in ``folder`` whose writer is gone; how many."""
    removed = 0
    for tmp in folder.glob(pattern):
        if not writer_alive(tmp):
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


__all__ = ["STALE_TMP_S", "TMP_MARK", "pid_alive", "remove_dead_temps", "temp_suffix", "writer_alive"]
