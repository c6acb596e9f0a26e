"""Atomic file writes: a temporary sibling, fsync, then rename, so no reader ever sees half a file.

Every file the toolkit writes outside HDF5 shards (which ``edgedepth.labelgen.shards.ShardWriter`` handles)
goes through here: checkpoints, run-folder files, evaluation results, prediction PNGs.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from edgedepth.common.processes import TMP_MARK, remove_dead_temps, temp_suffix


@contextmanager
def atomic_writer(path: str | Path) -> Iterator[BinaryIO]:
    """``with atomic_writer(path) as handle: ...`` writes ``path`` whole or not at all.

    The parent folder is created; on an exception the temporary file is removed and ``path`` is
    left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(path)
    try:
        with open(tmp, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:
        if err.errno is not None and err.filename in (None, str(tmp)):  # name the file, not its temp
            raise type(err)(err.errno, err.strerror, str(path)) from None
        raise
    finally:
        with suppress(OSError):  # on a read-only disk even removing a missing file fails (EROFS)
            tmp.unlink(missing_ok=True)


def _temp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}{temp_suffix()}")


def remove_stale_temps(path: str | Path) -> int:
    """Delete the temporary siblings of ``path`` that a killed writer left (``.<name>.tmp-<host>-<pid>-...``,
    its writer gone: ``edgedepth.common.processes.writer_alive``); how many. For files a resumed run
    rewrites (a stage's report, the verified stamps)."""
    path = Path(path)
    return remove_dead_temps(path.parent, f".{path.name}{TMP_MARK}*")


def check_writable(path: str | Path) -> Path:
    """Raise the OS error (naming ``path``) unless ``path`` could be written now; leave nothing behind.

    For commands that write their output after long work: they call this at the door. The nearest
    existing folder of ``path`` gets a temporary file, created and removed at once (folders that do
    not exist yet are not created); a regular file in the way is ``NotADirectoryError``.
    """
    path = Path(path)
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        if not folder.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder))
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        probe = _temp_sibling(folder / path.name)
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise type(err)(err.errno, err.strerror, str(path)) from None
    return path


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    with atomic_writer(path) as handle:
        handle.write(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """UTF-8 text, newlines written as given."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def save_figure(fig, path: str | Path, **savefig_kwargs) -> Path:
    """A matplotlib figure as a PNG (or the format of ``path``'s suffix), written atomically."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format=Path(path).suffix.lstrip(".") or "png", **savefig_kwargs)
    return write_bytes_atomic(path, buffer.getvalue())


__all__ = [
    "atomic_writer",
    "check_writable",
    "remove_stale_temps",
    "save_figure",
    "write_bytes_atomic",
    "write_text_atomic",
]
