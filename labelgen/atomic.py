"""Atomic file writes: a temporary sibling, fsync, then rename, so no reader ever sees half a file.

Every file the toolkit writes outside HDF5 shards (which ``labelgen.shards.ShardWriter`` handles)
goes through here: checkpoints, run-folder files, evaluation results, prediction PNGs.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_writer(path: str | Path) -> Iterator[BinaryIO]:
    """``with atomic_writer(path) as handle: ...`` writes ``path`` whole or not at all.

    The parent folder is created; on an exception the temporary file is removed and ``path`` is
    left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:
        if err.filename is None and err.errno is not None:  # a write or flush: name the file
            raise type(err)(err.errno, err.strerror, str(path)) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


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


__all__ = ["atomic_writer", "save_figure", "write_bytes_atomic", "write_text_atomic"]
