"""A label folder as one object: its plan and shard statuses, read once and re-read on change.

``LabelFolder(LABELS)`` is what the library functions share within one process (the demo, the
CLI, the trainer): ``plan.json`` is parsed the first time ``.plan`` is read and again only when the
file's stat signature (mtime, size, inode) changes; a shard's ``check_shard`` status is kept with
the shard file's stat signature and the verify level it was checked at, so it is checked again
only when the file changed, a stricter level is asked, or ``refresh`` dropped it. Every function
that takes a label folder path also takes a ``LabelFolder`` (``LabelFolder.of``).

Dask tasks never get the object: they receive ``str(folder.path)`` and read the plan with
``load_plan_cached`` in the worker. Pickled, a folder is just its path (no caches), so objects
holding one can go to DataLoader workers. See docs/shards.md ("The label folder object").
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgedepth.labelgen.plan import PLAN_FILE, Plan, ShardPlan, load_plan
from edgedepth.labelgen.shards import ShardStatus, check_shard, shard_path
from edgedepth.labelgen.verify import (
    Signature,
    Stamp,
    StampBook,
    check_level,
    file_signature,
    run_verify_tasks,
)

_signature = file_signature
_RANK = {"quick": 0, "once": 1, "full": 2}


@dataclass(frozen=True)
class VerifyRun:
    """What one ``LabelFolder.verify`` read: shard files, their frames, the seconds spent reading
    (from the first task to the last result) and starting the workers, and how many (0: here)."""

    shards: int
    frames: int
    seconds: float
    startup_seconds: float
    workers: int

    def describe(self) -> str:
        where = f"on {self.workers} dask worker(s)" if self.workers else "in this process"
        start = f", after {self.startup_seconds:.1f} s starting them" if self.workers else ""
        rate = self.frames / self.seconds if self.seconds > 0 else 0.0
        return (
            f"verified {self.shards} shard file(s) in full ({self.frames} frame rows, {rate:.0f}/s) in "
            f"{self.seconds:.1f} s {where}{start}; stamped, so they are not read again while unchanged"
        )


@dataclass(frozen=True)
class _Checked:
    """A cached shard status and what it was computed from (``level``: what was done, in
    ``_RANK``'s terms: a stamp trusted counts as ``once``, a full read in this process as ``full``)."""

    signature: Signature | None
    level: str
    plan_id: str
    shard: ShardPlan
    status: ShardStatus


class LabelFolder:
    """``LABELS``: its plan and the status of each (stage, shard), loaded once per process.

    ``given`` is the path as the caller named it: files are reached and messages name them
    through it, exactly as the path-taking functions do. ``path`` is the resolved path (what
    dask tasks receive, and ``os.fspath(folder)``). ``plan_reads`` and ``status_checks`` count
    the actual ``plan.json`` parses and ``check_shard`` calls.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.given = Path(path)
        self.path = self.given.resolve()
        self.plan_reads = 0
        self.status_checks = 0
        self._plan: Plan | None = None
        self._plan_id = ""  # of _plan: a hash of the whole plan, so computed once per read
        self._plan_signature: Signature | None = None
        self._shards: dict[str, ShardPlan] = {}
        self._checked: dict[tuple[str, str], _Checked] = {}
        self._books: dict[str, StampBook] = {}
        self.last_verify: VerifyRun | None = None  # what the last ``verify`` read, and how fast

    @classmethod
    def of(cls, where: LabelFolder | str | os.PathLike[str], *, resolve: bool = False) -> LabelFolder:
        """``where`` itself when it is a LabelFolder, else a new one (named by its resolved path
        with ``resolve``, for callers whose messages always named the folder so)."""
        if isinstance(where, LabelFolder):
            return where
        return cls(Path(where).resolve() if resolve else where)

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"LabelFolder({str(self.given)!r})"

    def __reduce__(self) -> tuple[type[LabelFolder], tuple[str]]:
        return (LabelFolder, (str(self.given),))  # the path only: caches stay in this process

    @property
    def plan(self) -> Plan:
        """The plan in ``plan.json``: parsed on first use and whenever the file's stat changed
        (a stat per access otherwise); ``load_plan``'s one-line errors when missing or malformed."""
        signature = _signature(self.given / PLAN_FILE)
        if signature is None:  # statuses stay against the plan last returned
            plan = load_plan(self.given)  # raises its one-line error (unless the file just appeared)
            self.plan_reads += 1
            return plan
        if self._plan is None or signature != self._plan_signature:
            self._forget_plan()
            plan = load_plan(self.given)
            self.plan_reads += 1
            self._plan, self._plan_id, self._plan_signature = plan, plan.plan_id, signature
            self._shards = {shard.name: shard for shard in plan.shards}
        return self._plan

    def _forget_plan(self) -> None:
        self._plan, self._plan_id, self._plan_signature, self._shards = None, "", None, {}

    def _current_plan_id(self) -> str:
        """The id of the plan ``.plan`` last returned (statuses are checked against it)."""
        if self._plan is None:
            return self.plan.plan_id  # not kept (no file): its error, or a plan that just appeared
        return self._plan_id

    def _shard(self, shard: ShardPlan | str) -> ShardPlan:
        if isinstance(shard, ShardPlan):
            return shard
        if self._plan is None:
            _ = self.plan
        if shard not in self._shards:
            raise ValueError(f"{self.given / PLAN_FILE}: no shard {shard!r} in the plan")
        return self._shards[shard]

    def shard_path(self, stage: str, shard: ShardPlan | str) -> Path:
        """``LABELS/<stage>/<shard name>.h5``."""
        return shard_path(self.given, stage, shard.name if isinstance(shard, ShardPlan) else shard)

    def status(self, stage: str, shard: ShardPlan | str, verify: str = "quick") -> ShardStatus:
        """``check_shard`` of one (stage, shard) against the plan ``.plan`` last returned.

        ``verify``: ``quick`` (attributes and bookkeeping), ``once`` (a full read unless the
        shard's stamp says this very file was verified: ``edgedepth.labelgen.verify``) or ``full`` (a full
        read, ignoring stamps). Cached until the shard file's stat changes or ``refresh`` drops
        it; a stricter level than the cached one checks again."""
        check_level(verify)
        shard = self._shard(shard)
        plan_id = self._current_plan_id()
        path = self.shard_path(stage, shard)
        signature = _signature(path)
        cached = self._checked.get((stage, shard.name))
        if (
            cached is not None
            and cached.signature == signature
            and cached.plan_id == plan_id
            and cached.shard == shard
            and _RANK[cached.level] >= _RANK[verify]
        ):
            return cached.status
        if verify == "once" and (stamp := self._book(stage).valid(shard.name, signature, plan_id)):
            status, level = stamp.status(path), "once"
        else:
            self.status_checks += 1
            level = "full" if verify in ("once", "full") else "quick"
            status = check_shard(path, plan_id, shard.frame_ids, verify=level, image_size=shard.image_size)
            if level == "full":
                self._stamp(stage, shard, status, signature if _signature(path) == signature else None)
                self._book(stage).save(at_most_every=1.0)  # a loop of these: not a rewrite per shard
        self._checked[(stage, shard.name)] = _Checked(signature, level, plan_id, shard, status)
        return status

    def _book(self, stage: str) -> StampBook:
        if stage not in self._books:
            self._books[stage] = StampBook(self.given / stage)
        return self._books[stage]

    def _stamp(
        self,
        stage: str,
        shard: ShardPlan,
        status: ShardStatus,
        signature: Signature | None,
        how: str = "read",
    ) -> None:
        """Remember a full verification (a complete shard whose file did not change meanwhile)."""
        book = self._book(stage)
        if status.complete and signature is not None:
            book.add(shard.name, Stamp(signature, self._current_plan_id(), status.failures, how))
        elif shard.name in book.stamps:
            book.add(shard.name, None)

    def stamp_written(
        self,
        stage: str,
        shard: ShardPlan | str,
        signature: Signature | None,
        failures: Sequence[Sequence[str]],
    ) -> None:
        """Stamp a shard this process's run just wrote (``signature`` and ``failures`` as its writer
        reported them): its checksums were computed from the data written, so it needs no read to
        be trusted. Written to disk by ``save_stamps``."""
        shard = self._shard(shard)
        if signature is None or _signature(self.shard_path(stage, shard)) != tuple(signature):
            return
        status = ShardStatus(
            self.shard_path(stage, shard), "complete", failures=tuple((str(f), str(r)) for f, r in failures)
        )
        self._stamp(stage, shard, status, tuple(signature), how="written")

    def save_stamps(self) -> None:
        for book in self._books.values():
            book.save()

    def unverified(self, stages: Sequence[str], verify: str = "once") -> list[tuple[str, ShardPlan]]:
        """The (stage, shard) pairs whose status at ``verify`` needs a full read (existing files
        without a cached full check or, for ``once``, without a valid stamp); reads no shard."""
        check_level(verify)
        if verify == "quick":
            return []
        plan, plan_id, pending = self.plan, self._current_plan_id(), []
        for stage in stages:
            book = self._book(stage)
            for shard in plan.shards:
                signature = _signature(self.shard_path(stage, shard))
                if signature is None:
                    continue
                cached = self._checked.get((stage, shard.name))
                if (
                    cached is not None
                    and cached.signature == signature
                    and cached.plan_id == plan_id
                    and _RANK[cached.level] >= _RANK[verify]
                ):
                    continue
                if verify == "once" and book.valid(shard.name, signature, plan_id):
                    continue
                pending.append((stage, shard))
        return pending

    def verify(
        self, stages: Sequence[str], verify: str = "once", workers: Any = None, progress: bool = True
    ) -> int:
        """Verify in full every shard of ``stages`` that ``unverified`` names: as dask tasks when
        ``workers`` (a ``edgedepth.labelgen.client.Workers`` or a dask client) gives a client for that many
        frames, else here; stamps each complete one. Returns how many shards were read."""
        from edgedepth.labelgen.client import Workers

        pending = self.unverified(stages, verify)
        if not pending:
            return 0
        pool = Workers.of(workers)
        frames = sum(len(shard.frame_ids) for _, shard in pending)
        started = time.perf_counter()
        client = pool.client_for(len(pending), frames)
        reading = time.perf_counter()
        plan_id = self._current_plan_id()
        jobs = (
            ((stage, shard, _signature(self.shard_path(stage, shard))), str(self.shard_path(stage, shard)),
             plan_id, shard.frame_ids, shard.image_size)
            for stage, shard in pending
        )  # fmt: skip
        try:
            for (stage, shard, seen), status, signature in run_verify_tasks(
                jobs, client, len(pending), progress
            ):
                self.status_checks += 1
                self._checked[(stage, shard.name)] = _Checked(seen, "full", plan_id, shard, status)
                self._stamp(stage, shard, status, signature if signature == seen else None)
        finally:
            self.save_stamps()
        workers = len(client.scheduler_info(n_workers=-1)["workers"]) if client is not None else 0
        self.last_verify = VerifyRun(
            len(pending), frames, time.perf_counter() - reading, reading - started, workers
        )
        return len(pending)

    def statuses(self, stage: str, verify: str = "quick") -> list[ShardStatus]:
        """The status of every shard of ``stage``, in plan order (the plan re-read if it changed)."""
        return [self.status(stage, shard, verify) for shard in self.plan.shards]

    def refresh(self, stage: str | None = None) -> None:
        """Forget the statuses of ``stage``; with no stage, every status and the plan."""
        self.save_stamps()  # stamps are of files, not of this cache: kept
        if stage is None:
            self._checked.clear()
            self._books.clear()
            self._forget_plan()
            return
        self._books.pop(stage, None)
        for key in [key for key in self._checked if key[0] == stage]:
            del self._checked[key]

    def has_stage(self, stage: str) -> bool:
        """Whether ``LABELS/<stage>`` is a folder (complete or not)."""
        return (self.given / stage).is_dir()

    def stages(self) -> list[str]:
        """Sorted names of the subfolders holding shard files or a report.json."""
        return sorted(
            d.name
            for d in self.given.iterdir()
            if d.is_dir() and ((d / "report.json").is_file() or any(d.glob("shard-*.h5")))
        )


__all__ = ["LabelFolder"]
