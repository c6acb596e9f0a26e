"""What a label run leaves in ``LABELS/<stage>/report.json``, and the summary it prints.

The report holds the stage's state after the run (shards complete, frames done, failed frames with
their reasons, shards not written) and a ``history``: one entry per run, oldest first (at most
``HISTORY_KEEP``), so a no-op rerun appends its own entry instead of erasing the real run's
throughput, failures and job ids. Schema: docs/shards.md.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgedepth.labelgen.folder import LabelFolder
from edgedepth.labelgen.plan import Plan

REPORT_FILE = "report.json"
HISTORY_KEEP = 100  # runs kept in a stage's report.json history (the oldest are dropped)
RUN_FIELDS = ("finished", "frames_processed", "seconds", "wall_seconds", "workers", "device", "cluster",
              "job_ids", "shards_complete", "frames_done", "frames_failed", "shards_failed")  # fmt: skip


@dataclass
class StageReport:
    """What one stage's shard set holds after a run (written to LABELS/<stage>/report.json)."""

    stage: str
    plan_id: str
    shards_total: int
    shards_complete: int
    frames_total: int
    frames_done: int
    frames_failed: list[tuple[str, str]] = field(default_factory=list)  # (frame_id, reason)
    shards_failed: list[tuple[str, str]] = field(default_factory=list)  # (shard, reason), not written
    frames_processed: int = 0  # by this run (the rest were complete before)
    seconds: float = 0.0  # summed over this run's tasks of the stage
    wall_seconds: float = 0.0  # of the whole run (all stages)
    workers: int = 0
    device: str = "cpu"
    cluster: str = "local"  # local, the scheduler address, or slurm / pbs / sge / lsf / htcondor
    job_ids: list[str] = field(default_factory=list)  # batch jobs that ran this run's workers
    finished: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)  # every run's entry, oldest first

    def run_entry(self) -> dict[str, Any]:
        """This run's line of the history (what a later no-op rerun must not erase)."""
        entry = {k: getattr(self, k) for k in RUN_FIELDS}
        entry["frames_failed"] = len(self.frames_failed)
        entry["shards_failed"] = len(self.shards_failed)
        entry["frames_per_second"] = self.frames_per_second
        return entry

    @property
    def frames_per_second(self) -> float:
        """Throughput of one worker on this stage (frames per task-second)."""
        return self.frames_processed / self.seconds if self.seconds > 0 else 0.0

    @property
    def all_done(self) -> bool:
        """Every planned frame of the stage is labelled."""
        return self.shards_complete == self.shards_total and not self.frames_failed

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "frames_per_second": self.frames_per_second}, indent=1) + "\n"


def history(path: Path) -> list[dict[str, Any]]:
    """The run entries of an existing report.json (none if absent or unreadable); a report of
    before histories counts as one entry."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(data, dict):
        return []
    history = data.get("history")
    if isinstance(history, list):
        return [h for h in history if isinstance(h, dict)][-(HISTORY_KEEP - 1) :]
    entry = {k: data[k] for k in RUN_FIELDS if k in data}
    for key in ("frames_failed", "shards_failed"):
        entry[key] = len(entry[key]) if isinstance(entry.get(key), list) else entry.get(key, 0)
    return [entry]


def stage_report(
    folder: LabelFolder, plan: Plan, name: str, errors: dict[tuple[str, str], str], verify: str = "once"
) -> StageReport:
    """The stage's state after a run that checked existing shards at ``verify``: what the run wrote
    is stamped and the rest was checked at that level, so nothing is read again here."""
    report = StageReport(name, plan.plan_id, len(plan.shards), 0, len(plan.frame_ids), 0)
    level = "quick" if verify == "quick" else "once"
    for shard in plan.shards:
        status = folder.status(name, shard, level)
        if status.complete:
            report.shards_complete += 1
            report.frames_done += len(shard.frame_ids) - len(status.failures)
            report.frames_failed += list(status.failures)
        else:
            reason = errors.get((name, shard.name), f"shard {status.state} {status.reason}".strip())
            report.shards_failed.append((shard.name, reason))
    return report


def format_reports(reports: Sequence[StageReport]) -> str:
    """A summary table (frames done / failed / missing, throughput) and the failure reasons."""
    header = f"{'stage':<10}{'shards':>10}{'frames':>9}{'failed':>8}{'missing':>9}{'frames/s':>10}"
    lines = [header, "-" * len(header)]
    for r in reports:
        missing = r.frames_total - r.frames_done - len(r.frames_failed)
        lines.append(
            f"{r.stage:<10}{f'{r.shards_complete}/{r.shards_total}':>10}{r.frames_done:>9}"
            f"{len(r.frames_failed):>8}{missing:>9}{r.frames_per_second:>10.2f}"
        )
    for r in reports:
        for frame_id, reason in r.frames_failed[:20]:
            lines.append(f"  {r.stage}: {frame_id}: {reason}")
        if len(r.frames_failed) > 20:
            lines.append(f"  {r.stage}: ... {len(r.frames_failed) - 20} more in {r.stage}/{REPORT_FILE}")
        for shard_name, reason in r.shards_failed:
            lines.append(f"  {r.stage}: {shard_name} not written: {reason}")
    failed = [r.stage for r in reports if r.frames_failed]
    unwritten = [r.stage for r in reports if r.shards_failed]
    if failed:
        lines.append(
            f"{sum(len(r.frames_failed) for r in reports)} frame(s) failed; fix their input, then redo just "
            f"their shards with: edgedepth labelgen run LABELS --stages {','.join(failed)} --retry-failed"
        )
    if unwritten:
        lines.append(f"shards not written in {', '.join(unwritten)}: a plain rerun redoes them")
    return "\n".join(lines)


__all__ = ["HISTORY_KEEP", "REPORT_FILE", "StageReport", "format_reports", "history", "stage_report"]
