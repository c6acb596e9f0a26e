"""Whether a process is alive on this host (asked of the writer named in a shard's temporary file)."""

from __future__ import annotations

import os
from pathlib import Path


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


__all__ = ["pid_alive"]
