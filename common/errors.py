"""One-line descriptions of errors, shared by every command: the path and the OS's reason.

h5py reports OS faults (a full disk, a read-only folder) as ``OSError`` whose first line drops the
cause ("Unable to synchronously write data (file write failed: ... errno = 28, error message = 'No
space left on device' ...)"); :func:`describe` recovers the file name and the reason from it.
"""

from __future__ import annotations

import errno as errno_codes
import os
import re

_H5_FILE = re.compile(r"filename = '([^']+)'")
_H5_MESSAGE = re.compile(r"error message = '([^']+)'")
_H5_ERRNO = re.compile(r"errno = (\d+)")

OS_FAULTS = frozenset(
    {errno_codes.ENOSPC, errno_codes.EDQUOT, errno_codes.EACCES, errno_codes.EPERM, errno_codes.EROFS,
     errno_codes.ENOTDIR, errno_codes.EISDIR, errno_codes.EIO, errno_codes.EMFILE, errno_codes.ENAMETOOLONG}
)  # fmt: skip
"""errno values that are faults of the machine or its file system, not of the user's input."""


_WORKER_PREFIX = re.compile(r"^Caught \w+ in .*\.$")  # torch DataLoader's re-raise of a worker's error
_QUALIFIED = re.compile(r"^[\w.]+(Error|Exception): ")


def first_line(text: object) -> str:
    """The message's first line; for an error re-raised from a DataLoader worker ("Caught X in
    DataLoader worker process 0." + the worker's traceback) the worker's own message."""
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    if len(lines) > 2 and _WORKER_PREFIX.match(lines[0]) and lines[1].startswith("Original Traceback"):
        return _QUALIFIED.sub("", lines[-1])
    return lines[0] if lines else ""


def os_reason(err: OSError) -> tuple[str | None, str, int | None]:
    """(file name, reason, errno) of an OS error, h5py's included (any may be unknown)."""
    text = str(err)
    name = err.filename if err.filename is not None else None
    reason, code = err.strerror, err.errno
    if name is None and (match := _H5_FILE.search(text)):
        name = match.group(1)
    if match := _H5_MESSAGE.search(text):
        reason = match.group(1)
    if code is None and (match := _H5_ERRNO.search(text)):
        code = int(match.group(1))
    if not reason and code:
        reason = os.strerror(code)
    if isinstance(err, FileExistsError) and name and os.path.exists(name) and not os.path.isdir(name):
        reason, code = f"{os.strerror(errno_codes.ENOTDIR)} (a file is in the way)", errno_codes.ENOTDIR
    return (str(name) if name is not None else None), (reason or first_line(text)), code


def describe(err: BaseException) -> str:
    """One line: ``<path>: <reason>`` for OS errors, the message's first line otherwise."""
    if isinstance(err, OSError):
        name, reason, _ = os_reason(err)
        if name:
            target = f" -> {err.filename2}" if getattr(err, "filename2", None) else ""
            return f"{name}{target}: {reason}"
        line = first_line(err)
        return line if reason in line else f"{line}: {reason}"
    line = first_line(err)
    return line or type(err).__name__


def is_os_fault(err: BaseException) -> bool:
    """An OS error that is the machine's fault (disk full, permissions, read-only, ...)."""
    return isinstance(err, OSError) and os_reason(err)[2] in OS_FAULTS


__all__ = ["OS_FAULTS", "describe", "first_line", "is_os_fault", "os_reason"]
