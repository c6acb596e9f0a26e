"""One writer per folder: an OS file lock, and a small record naming its holder.

``with folder_lock(LABELS, "labelgen run"):`` takes an exclusive ``flock`` on ``LABELS/.edgedepth.lock``
(``filelock.FileLock``, one attempt that does not wait), then writes the holder's record (host,
process id, command, start time, as JSON) to ``LABELS/.edgedepth.lock.json``. A second writer is
refused with one line naming the holder from that record.

- **A killed holder does not block.** The kernel drops a ``flock`` with the last descriptor of its
  holder, SIGKILL included, so there is no stale lock to judge; the lock file and record a killed
  holder leaves are reused and overwritten by the next one. A forked child does not keep the lock
  alive: filelock closes its inherited copy of the descriptor.
- **Why a separate record.** The lock file's content belongs to filelock: older releases (3.x) opened
  it with ``O_TRUNC`` at every attempt, so a refused contender erased the holder's record; 4.3 no
  longer truncates, but without ``flock`` (below) it writes its own marker into that file. The
  record is written atomically (temporary sibling, rename) once the lock is held, so a refused
  process reads a whole record or none.
- **Released, the folder is as it was found.** Still holding the lock, the holder removes the record
  and then the lock file, and unlocks last. A contender that opened the lock file just before it
  was removed gets its ``flock`` on a nameless file, which filelock 4.3 finds by its link count
  after locking and does not take; refused while the record is missing (a holder just starting or
  just leaving), ``folder_lock`` tries again for up to a second.
- **Without flock** (``ENOSYS``: some NFS and FUSE file systems), filelock warns ("flock not supported
  on this filesystem, falling back to SoftFileLock") and uses the lock file as an existence marker
  (created exclusively, holding its pid and host, removed on release). A marker left by a killed
  holder on this host is taken over (its process is gone); one left by another host stays until
  deleted by hand. Other ``flock`` failures (``ENOLCK`` with no NFS lock service) are raised as OS
  errors naming the lock file. On NFS mounted ``nolock`` (or ``local_lock=flock``) a ``flock`` is
  seen by its own host only.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

from filelock import BaseFileLock, FileLock, Timeout

from edgedepth.common.atomic import write_text_atomic

LOCK_FILE = ".edgedepth.lock"
RECORD_FILE = ".edgedepth.lock.json"
RECORD_WAIT_S = 1.0
"""How long a refused writer waits for the holder's record before naming an unknown holder, in s."""


class FolderLocked(ValueError):
    """Another process holds the folder's lock."""


def read_record(folder: str | Path) -> dict | None:
    """The holder's record in ``folder`` (None without one; {} if it cannot be read)."""
    try:
        record = json.loads((Path(folder) / RECORD_FILE).read_text() or "{}")
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _refusal(folder: Path, holder: dict) -> str:
    who = (
        f"{holder.get('command', 'another command')} (pid {holder.get('pid', '?')} on "
        f"{holder.get('host', '?')}, since {holder.get('started', '?')})"
    )
    return f"{folder}: in use by {who}; wait for it to finish"


def _take(folder: Path, path: Path) -> BaseFileLock:
    """``path``'s lock, held; FolderLocked naming the holder while another process holds it."""
    lock = FileLock(path, blocking=False)
    deadline = time.monotonic() + RECORD_WAIT_S
    while True:
        try:
            lock.acquire()
            return lock
        except Timeout:  # an OSError too: caught first
            holder = read_record(folder)
        except OSError as err:
            if err.errno is not None and err.filename is None:
                raise type(err)(err.errno, err.strerror, str(path)) from None
            raise
        if holder is not None or time.monotonic() >= deadline:
            raise FolderLocked(_refusal(folder, holder or {}))
        time.sleep(0.05)


@contextmanager
def folder_lock(folder: str | Path, command: str) -> Iterator[Path]:
    """Hold ``folder``'s lock for the duration of the block (created with the folder if needed);
    yields the lock file's path. FolderLocked (one line naming the holder) if another holds it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    lock = _take(folder, path)
    owner = os.getpid()
    try:
        mine = {
            "host": socket.gethostname(),
            "pid": owner,
            "command": command,
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        write_text_atomic(folder / RECORD_FILE, json.dumps(mine))
        yield path
    finally:
        if os.getpid() == owner:  # a forked child leaves the parent's lock and files alone
            try:
                for done in (folder / RECORD_FILE, path):  # the lock file last, still held (see above)
                    with suppress(OSError):  # a leftover file blocks nobody: the OS lock is the lock
                        done.unlink(missing_ok=True)
            finally:
                lock.release()


__all__ = ["LOCK_FILE", "RECORD_FILE", "RECORD_WAIT_S", "FolderLocked", "folder_lock", "read_record"]
