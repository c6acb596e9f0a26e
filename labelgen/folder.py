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
from dataclasses import dataclass
from pathlib import Path

from labelgen.plan import PLAN_FILE, Plan, ShardPlan, load_plan
from labelgen.shards import ShardStatus, check_shard, check_verify, shard_path

Signature = tuple[int, int, int]  # (st_mtime_ns, st_size, st_ino)


def _signature(path: Path) -> Signature | None:
    """What tells a rewritten file from the one read before (None: no such file)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


@dataclass(frozen=True)
class _Checked:
    """A cached shard status and what it was computed from."""

    signature: Signature | None
    verify: str
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
        """``check_shard`` of one (stage, shard) against the plan ``.plan`` last returned; cached
        until the shard file's stat changes, ``refresh`` drops it, or ``verify="full"`` is asked of
        a status checked ``quick`` (a ``full`` one serves ``quick``)."""
        check_verify(verify)
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
            and (cached.verify == "full" or verify == "quick")
        ):
            return cached.status
        self.status_checks += 1
        status = check_shard(path, plan_id, shard.frame_ids, verify=verify)
        self._checked[(stage, shard.name)] = _Checked(signature, verify, plan_id, shard, status)
        return status

    def statuses(self, stage: str, verify: str = "quick") -> list[ShardStatus]:
        """The status of every shard of ``stage``, in plan order (the plan re-read if it changed)."""
        return [self.status(stage, shard, verify) for shard in self.plan.shards]

    def refresh(self, stage: str | None = None) -> None:
        """Forget the statuses of ``stage``; with no stage, every status and the plan."""
        if stage is None:
            self._checked.clear()
            self._forget_plan()
            return
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
