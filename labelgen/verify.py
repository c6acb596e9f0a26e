"""Verify each shard file once: full checksum reads as parallel tasks, remembered in stamps.

A full verification (``check_shard(verify="full")``: every chunk read, its Fletcher-32 checksum
checked) costs tens of milliseconds per frame, so it is done once per shard file and remembered in
``LABELS/<stage>/.verified.json``: one stamp per shard, keyed by the file's size, mtime, inode and
ctime (which no ``touch`` can set back) and the plan id, holding the status it verified (complete,
and the failed frames). A later process (the next ``run``, ``inspect``, ``calib fit``) trusts a
file whose stat still matches its stamp and reads nothing; a rewritten, replaced or touched file, another plan, or a newer ``CHECK_VERSION``
(the checks grew) makes it verify again. ``labelgen run`` stamps the shards it writes (verified by
writing them). ``--verify full`` ignores the stamps and reads everything again.

Stamps are an optimisation, never a source of truth for data: losing the file (or failing to
write it, on a read-only folder) costs a re-read, nothing else. Reads run as dask tasks
(``verify_task``) that get only a path, the plan id and the frame ids.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edgedepth.common import remove_stale_temps, write_text_atomic
from edgedepth.labelgen.shards import ShardStatus, check_shard

STAMP_FILE = ".verified.json"
CHECK_VERSION = 2  # 2: the schema checks on read (links, virtual datasets, filters, dtypes, shapes)
VERIFY_LEVELS = ("quick", "once", "full")
"""``quick``: attributes and bookkeeping only; ``once``: a full read unless a stamp says this very
file was verified; ``full``: a full read now."""

Signature = tuple[int, ...]  # (st_mtime_ns, st_size, st_ino, st_ctime_ns)


def file_signature(path: str | os.PathLike[str]) -> Signature | None:
    """What tells a rewritten file from the one read before (None: no such file)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)  # ctime: no utime can set it back


def check_level(verify: str) -> None:
    """One line unless ``verify`` is one of ``VERIFY_LEVELS``."""
    if verify not in VERIFY_LEVELS:
        raise ValueError(f"verify must be one of {', '.join(VERIFY_LEVELS)}, got {verify!r}")


@dataclass(frozen=True)
class Stamp:
    """One shard file verified in full: its stat signature, the plan, what the check found."""

    signature: Signature
    plan_id: str
    failures: tuple[tuple[str, str], ...]
    how: str = "read"  # read (check_shard full) or written (by labelgen run)

    def to_dict(self) -> dict[str, object]:
        return {
            "mtime_ns": self.signature[0],
            "size": self.signature[1],
            "inode": self.signature[2],
            "ctime_ns": self.signature[3],
            "plan_id": self.plan_id,
            "check": CHECK_VERSION,
            "failures": [list(f) for f in self.failures],
            "how": self.how,
        }

    @classmethod
    def from_dict(cls, data: object) -> Stamp | None:
        """The stamp, or None for one of another check version or of any other shape."""
        try:
            if data.get("check") != CHECK_VERSION:  # type: ignore[union-attr]
                return None
            keys = ("mtime_ns", "size", "inode", "ctime_ns")
            signature = tuple(int(data[k]) for k in keys)  # type: ignore[index]
            failures = tuple((str(f), str(r)) for f, r in data["failures"])  # type: ignore[index]
            return cls(signature, str(data["plan_id"]), failures, str(data.get("how", "read")))  # type: ignore[union-attr,index]
        except (AttributeError, KeyError, TypeError, ValueError):
            return None

    def status(self, path: Path) -> ShardStatus:
        return ShardStatus(path, "complete", failures=self.failures)


class StampBook:
    """The stamps of one stage folder, read once, written back atomically (merged with the file)."""

    def __init__(self, stage_dir: Path) -> None:
        self.path = stage_dir / STAMP_FILE
        self._stamps: dict[str, Stamp] | None = None
        self._dirty: dict[str, Stamp | None] = {}
        self._saved = -float("inf")

    def _load(self) -> dict[str, Stamp]:
        try:
            data = json.loads(self.path.read_text())
            entries = (
                data["shards"] if isinstance(data, dict) and isinstance(data.get("shards"), dict) else {}
            )
        except (OSError, ValueError):
            entries = {}
        stamps = {}
        for name, entry in entries.items():
            stamp = Stamp.from_dict(entry)
            if stamp is not None:
                stamps[str(name)] = stamp
        return stamps

    @property
    def stamps(self) -> dict[str, Stamp]:
        if self._stamps is None:
            self._stamps = self._load()
        return self._stamps

    def valid(self, shard_name: str, signature: Signature | None, plan_id: str) -> Stamp | None:
        """The stamp of this very file for this plan, or None."""
        stamp = self.stamps.get(shard_name)
        if stamp is None or signature is None or stamp.signature != signature or stamp.plan_id != plan_id:
            return None
        return stamp

    def add(self, shard_name: str, stamp: Stamp | None) -> None:
        """Record (or with None drop) a shard's stamp; written by ``save``."""
        if stamp is None:
            self.stamps.pop(shard_name, None)
        else:
            self.stamps[shard_name] = stamp
        self._dirty[shard_name] = stamp

    def save(self, at_most_every: float = 0.0) -> None:
        """Merge the changes into the file as it is now (another process may have added stamps);
        a folder that cannot be written (read-only) keeps no stamps, silently. With
        ``at_most_every``, only if the last save is that many seconds ago (later saves catch up)."""
        if not self._dirty or not self.path.parent.is_dir():
            return
        if time.monotonic() - self._saved < at_most_every:
            return
        self._saved = time.monotonic()
        merged = self._load()
        for name, stamp in self._dirty.items():
            if stamp is None:
                merged.pop(name, None)
            else:
                merged[name] = stamp
        body = {"shards": {name: merged[name].to_dict() for name in sorted(merged)}}
        try:
            remove_stale_temps(self.path)  # a writer killed mid-write left its temporary sibling
            write_text_atomic(self.path, json.dumps(body, separators=(",", ":")) + "\n")
        except OSError:
            return  # stamps are an optimisation: a read-only label folder is verified each time
        self._stamps, self._dirty = merged, {}


def verify_task(
    path: str, plan_id: str, frame_ids: Sequence[str], image_size: tuple[int, int] | None = None
) -> tuple[ShardStatus, Signature | None]:
    """``check_shard(path, plan_id, frame_ids, "full", image_size)`` and the file's signature when it did not
    change during the read (so the result may be stamped), else None. A dask task."""
    before = file_signature(path)
    status = check_shard(path, plan_id, list(frame_ids), verify="full", image_size=image_size)
    after = file_signature(path)
    return status, (before if before == after else None)


def run_verify_tasks(
    jobs: Iterable[tuple[object, str, str, Sequence[str], tuple[int, int]]],
    client: object,
    total: int,
    progress: bool,
) -> Iterable[tuple[object, ShardStatus, Signature | None]]:
    """``(key, status, signature)`` for each ``(key, path, plan_id, frame_ids, image_size)``: on ``client``'s
    workers in any order (dask), or one after the other here (``client`` None), with a progress bar."""
    from tqdm import tqdm

    with tqdm(total=total, unit="shard", desc="verify", disable=not progress, leave=False) as bar:
        if client is None:
            for key, path, plan_id, frame_ids, size in jobs:
                status, signature = verify_task(path, plan_id, frame_ids, size)
                bar.update(1)
                yield key, status, signature
            return
        from distributed import as_completed

        futures = {
            client.submit(verify_task, path, plan_id, tuple(frame_ids), size, pure=False, retries=1): key  # type: ignore[attr-defined]
            for key, path, plan_id, frame_ids, size in jobs
        }
        for future in as_completed(futures):
            status, signature = future.result()
            bar.update(1)
            yield futures[future], status, signature


__all__ = [
    "CHECK_VERSION",
    "STAMP_FILE",
    "VERIFY_LEVELS",
    "Stamp",
    "StampBook",
    "check_level",
    "file_signature",
    "run_verify_tasks",
    "verify_task",
]
