"""One writer per label folder: a lock file naming its holder (host, process id, command).

``with folder_lock(LABELS, "labelgen run"):`` creates ``LABELS/.edgedepth.lock`` exclusively; a
second writer is refused with a line naming the holder. A lock whose process is gone (same host,
no such process id) is stale and taken over; a lock of another host cannot be checked and is
reported with the command to remove it.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from labelgen.shards import pid_alive

LOCK_FILE = ".edgedepth.lock"


class FolderLocked(ValueError):
    """Another process holds the folder's lock."""


def _holder(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text() or "{}")
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError):
        return {}


@contextmanager
def folder_lock(folder: str | Path, command: str) -> Iterator[Path]:
    """Hold ``folder``'s lock for the duration of the block (created with the folder if needed)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    mine = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "command": command,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(path)
            if holder is None:
                continue  # released meanwhile
            same_host = holder.get("host") == mine["host"]
            if same_host and isinstance(holder.get("pid"), int) and not pid_alive(holder["pid"]):
                path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            who = (
                f"{holder.get('command', 'another command')} (pid {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')}, since {holder.get('started', '?')})"
            )
            hint = "wait for it to finish" + ("" if same_host else f", or delete {path} if it is gone")
            raise FolderLocked(f"{folder}: in use by {who}; {hint}") from None
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(mine, handle)
        except OSError as err:
            path.unlink(missing_ok=True)
            raise type(err)(err.errno, err.strerror, str(path)) from None
        break
    else:
        raise FolderLocked(f"{folder}: could not take the lock {path}")
    try:
        yield path
    finally:
        if _holder(path) == mine:
            path.unlink(missing_ok=True)


__all__ = ["LOCK_FILE", "FolderLocked", "folder_lock"]
