"""HDF5 label shards: the schema, an atomic writer, a validity check and a joined reader.

One file per (stage, shard): ``LABELS/<stage>/shard-00000.h5``. Every planned frame has a row in
every dataset (a failed frame's row is zero-filled and ``ok`` is False), so stages join by shard
and row. Files are built in memory, written to a temporary sibling and renamed into place only
once complete, so a killed run never leaves a readable-but-partial shard. Full schema:
docs/shards.md.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np

from edgedepth.common import TMP_MARK, __version__, first_line, remove_dead_temps, temp_suffix
from edgedepth.labelgen.shard_schema import (
    BOOKKEEPING_DATASETS,
    ShardReadError,
    bookkeeping_problem,
    decode,
    error_line,
    open_members,
    open_shard,
    read_rows,
    stage_of,
    stage_problem,
    stored_problem,
    verify_chunks,
)

SCHEMA_VERSION = 2  # 2: every dataset carries HDF5's Fletcher-32 checksum per chunk
WRITE_PIECE = 1 << 20  # bytes per write(2) of a finished shard
VERIFY_MODES = ("full", "quick")
"""``check_shard`` verification: both check the attributes, the bookkeeping datasets and the
schema; ``full`` also checks every stored chunk's Fletcher-32 checksum."""


@dataclass(frozen=True)
class DatasetSpec:
    """One per-frame dataset of a stage: shape of one frame, dtype, gzip level, attributes."""

    shape: tuple[int, ...]
    dtype: str
    gzip: int = 1  # level 1: as small as 4 on depth maps (byte shuffle does the work) and faster
    attrs: Mapping[str, object] = field(default_factory=dict)


def shard_path(labels_dir: str | Path, stage: str, shard_name: str) -> Path:
    return Path(labels_dir) / stage / f"{shard_name}.h5"


def remove_stale_tmp(path: Path) -> int:
    """Delete temporary files a killed writer left beside ``path``; returns how many.

    A temporary file is named ``<name>.tmp-<host>-<pid>-<random>``; it is deleted only when its
    writer is gone (``edgedepth.common.processes.writer_alive``): a process of this host that no
    longer exists, or a file untouched for ``STALE_TMP_S`` (another host's writer, which cannot be
    asked). A live writer's file is kept.
    """
    return remove_dead_temps(path.parent, f"{path.name}{TMP_MARK}*")


class ShardWriter:
    """Write one shard atomically: ``with ShardWriter(...) as w: w.write(i, arrays) / w.fail(i, why)``.

    The shard is built in memory (h5py on an ``io.BytesIO``), so HDF5 itself never
    meets a disk error: a failed write inside HDF5 (a full disk) leaves its file objects in a state
    that later closes and frees may crash on (glibc's ``free(): invalid pointer`` in a worker was
    seen in CI). On a clean exit the file gets ``complete = True`` as its last attribute, and its
    image is written by Python to a temporary sibling, fsynced, checked and renamed into place; on
    an exception nothing appears at ``path``. Memory: one shard (about 35 MB for 32 KITTI frames
    of the ``images`` stage, docs/shards.md).
    """

    def __init__(
        self,
        path: str | Path,
        frame_ids: Sequence[str],
        specs: Mapping[str, DatasetSpec],
        attrs: Mapping[str, object],
    ) -> None:
        self.path = Path(path)
        self.frame_ids = list(frame_ids)
        self.specs = dict(specs)
        self.attrs = dict(attrs)
        self.tmp = self.path.with_name(f"{self.path.name}{temp_suffix()}")
        self.failures = [""] * len(self.frame_ids)
        self.ok = np.zeros(len(self.frame_ids), dtype=bool)
        self._file: h5py.File | None = None

    def __enter__(self) -> ShardWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._buffer = io.BytesIO()
        self._file = h5py.File(self._buffer, "w", track_order=True)
        self._file.attrs["complete"] = False
        n = len(self.frame_ids)
        for name, spec in self.specs.items():
            dset = self._file.create_dataset(
                name,
                shape=(n, *spec.shape),
                dtype=spec.dtype,
                chunks=(1, *spec.shape),
                compression="gzip",
                compression_opts=spec.gzip,
                shuffle=np.dtype(spec.dtype).itemsize > 1,
                fletcher32=True,
                fillvalue=0,
                track_times=False,
            )
            for key, value in spec.attrs.items():
                dset.attrs[key] = value
        return self

    def write(self, index: int, arrays: Mapping[str, np.ndarray]) -> None:
        """Store one frame's arrays (every dataset of the stage, exact shapes)."""
        assert self._file is not None
        if set(arrays) != set(self.specs):
            raise ValueError(
                f"frame {self.frame_ids[index]}: datasets {sorted(arrays)} != {sorted(self.specs)}"
            )
        for name, array in arrays.items():
            if tuple(array.shape) != self.specs[name].shape:
                raise ValueError(
                    f"frame {self.frame_ids[index]}: {name} has shape {tuple(array.shape)}, "
                    f"expected {self.specs[name].shape}"
                )
            array = np.asarray(array)
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                bad = int((~np.isfinite(array)).sum())
                raise ValueError(
                    f"frame {self.frame_ids[index]}: {name} holds {bad} non-finite values (nan/inf)"
                )
        for name, array in arrays.items():  # only once all are known good: a failed row stays zero
            self._file[name][index] = array
        self.ok[index] = True

    def fail(self, index: int, reason: str) -> None:
        """Record that a frame could not be labelled (its rows stay zero)."""
        self.failures[index] = reason.strip().splitlines()[0] if reason.strip() else "unknown error"
        self.ok[index] = False

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._discard()
            return
        try:
            self._finish()
        except BaseException:
            self._discard()
            raise

    def _discard(self) -> None:
        """Close the in-memory file and remove the temporary file, if it was begun."""
        if self._file is not None and self._file.id.valid:
            self._file.close()
        self.tmp.unlink(missing_ok=True)

    def _check_written(self) -> None:
        """The temporary file, closed, holds every chunk of every frame marked ok: else an OSError
        (nothing is renamed into place). Metadata reads only."""
        try:
            with h5py.File(self.tmp, "r") as f:
                problem = stored_problem({n: f[n] for n in self.specs}, f["ok"][()])
        except (OSError, KeyError) as err:
            problem = error_line(err)
        if problem:
            raise OSError(errno.EIO, f"{os.strerror(errno.EIO)}: the shard was written incompletely ({problem})",
                          str(self.path))  # fmt: skip

    def _finish(self) -> None:
        f = self._file
        # fixed-length UTF-8 strings: HDF5 filters (the checksum) do not apply to variable-length data
        checked = {"chunks": True, "fletcher32": True}
        for name, texts in (("frame_id", self.frame_ids), ("failure", self.failures)):
            encoded = [t.encode("utf-8") for t in texts]
            dtype = h5py.string_dtype("utf-8", max(1, *(len(e) for e in encoded)) if encoded else 1)
            f.create_dataset(name, data=np.array(encoded, dtype=dtype), dtype=dtype, **checked)
        f.create_dataset("ok", data=self.ok, **checked)
        for key, value in self.attrs.items():
            f.attrs[key] = json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else value
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["tool_version"] = __version__
        f.attrs["n_frames"] = len(self.frame_ids)
        f.attrs["n_failed"] = int((~self.ok).sum())
        f.attrs["created"] = datetime.now(UTC).isoformat(timespec="seconds")
        f.attrs["host"] = socket.gethostname()
        f.attrs["complete"] = True  # last attribute: readers trust only files that have it
        f.close()
        with self._buffer.getbuffer() as image:
            try:  # the one write to disk, by Python: a full disk is a plain OSError here
                with open(self.tmp, "xb") as handle:
                    for start in range(0, len(image), WRITE_PIECE):  # one 200 MB write is 10x slower
                        handle.write(image[start : start + WRITE_PIECE])
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError as err:
                raise _write_error(err, self.path) from None
        self._buffer = io.BytesIO()
        self._check_written()
        os.replace(self.tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _write_error(err: BaseException, path: Path) -> OSError:
    """An OSError naming the shard (not its temporary file) with the OS's reason, from h5py's error."""
    code = err.errno if isinstance(err, OSError) and err.errno else None
    if code is None and (match := re.search(r"errno = (\d+)", str(err))):
        code = int(match.group(1))
    code = code or errno.EIO
    return OSError(code, os.strerror(code), str(path))


@dataclass(frozen=True)
class ShardStatus:
    """What is on disk for one planned shard: complete, missing, stale (other plan) or invalid."""

    path: Path
    state: str
    reason: str = ""
    failures: tuple[tuple[str, str], ...] = ()  # (frame_id, reason) of frames that failed

    @property
    def complete(self) -> bool:
        return self.state == "complete"


def check_verify(verify: str) -> None:
    """One line unless ``verify`` is one of ``VERIFY_MODES``."""
    if verify not in VERIFY_MODES:
        raise ValueError(f"verify must be one of {', '.join(VERIFY_MODES)}, got {verify!r}")


def check_shard(
    path: str | Path,
    plan_id: str,
    frame_ids: Sequence[str],
    verify: str = "full",
    image_size: tuple[int, int] | None = None,
) -> ShardStatus:
    """Is ``path`` a complete, undamaged shard of this plan holding exactly ``frame_ids``?

    Both levels check the attributes, the bookkeeping datasets and the schema (``edgedepth.labelgen.shard_schema``:
    link types, dtypes, per-row shapes, chunking and filters; ``image_size`` is the plan's
    (height, width) for the shard, else its calibration attribute says). ``verify="full"`` also
    checks every stored chunk of every stage dataset against its Fletcher-32 checksum, so a damaged
    byte anywhere makes the shard ``invalid`` (cost: docs/shards.md).
    """
    check_verify(verify)
    path = Path(path)
    if not path.exists():
        return ShardStatus(path, "missing")
    try:
        with h5py.File(path, "r") as f:
            attrs = f.attrs
            complete = attrs.get("complete")
            if not isinstance(complete, bool | np.bool_) or not complete:
                return ShardStatus(path, "invalid", "not marked complete")
            version = attrs.get("schema_version")
            if not isinstance(version, int | np.integer) or version != SCHEMA_VERSION:
                return ShardStatus(path, "stale", f"schema version {first_line(str(version))[:40]}")
            written_for = attrs.get("plan_id")
            if not isinstance(written_for, str) or written_for != plan_id:
                return ShardStatus(path, "stale", "written for another plan")
            problem, members = open_members(f)
            problem = problem or bookkeeping_problem(members)
            if problem:
                return ShardStatus(path, "invalid", problem)
            ids = list(read_rows(members["frame_id"], as_str=True))
            if ids != list(frame_ids):
                return ShardStatus(path, "stale", "frame list differs from the plan")
            ok, why = read_rows(members["ok"]), read_rows(members["failure"], as_str=True)
            problem = stage_problem(members, stage_of(attrs, path), attrs, len(ids), image_size)
            problem = problem or stored_problem(members, ok)
            if problem:
                return ShardStatus(path, "invalid", problem)
            if verify == "full":
                for name, dset in members.items():
                    if name not in BOOKKEEPING_DATASETS:
                        verify_chunks(dset, ok)
            failures = tuple((ids[i], str(why[i])) for i in np.flatnonzero(~ok))
    except ShardReadError as err:
        return ShardStatus(path, "invalid", str(err).split(": ", 1)[-1].split(";")[0])
    except (OSError, KeyError, TypeError, ValueError) as err:
        return ShardStatus(path, "invalid", f"unreadable ({error_line(err)})")
    return ShardStatus(path, "complete", failures=failures)


__all__ = [  # decode, open_shard, read_rows and ShardReadError live in shard_schema; reached here too
    "BOOKKEEPING_DATASETS",
    "SCHEMA_VERSION",
    "TMP_MARK",
    "VERIFY_MODES",
    "DatasetSpec",
    "ShardReadError",
    "ShardStatus",
    "ShardWriter",
    "check_shard",
    "check_verify",
    "decode",
    "open_shard",
    "read_rows",
    "remove_stale_tmp",
    "shard_path",
]
