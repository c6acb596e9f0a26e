"""Run label stages on dask.distributed: one task per (stage, shard), resumable, with a report.

Tasks carry only the label folder, a stage name, a shard index and small options; workers read
the plan and the input files (KITTI or rig layout) themselves and load a stage's model once per process (module-level
cache), so nothing heavy travels through the scheduler. A shard that is complete and belongs to
the current plan is skipped, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from labelgen.atomic import write_text_atomic
from labelgen.devices import resolve_device
from labelgen.errors import describe
from labelgen.folder import LabelFolder
from labelgen.lock import folder_lock
from labelgen.plan import Plan, ShardPlan, load_plan_cached
from labelgen.shards import ShardWriter, remove_stale_tmp, shard_path
from labelgen.stages import make_stage

REPORT_FILE = "report.json"
GPU = {"GPU": 1}


@functools.lru_cache(maxsize=4)
def _cached_model(stage_name: str, options_json: str, device: str) -> Any:
    """A stage's model, loaded once per worker process and reused by every later task."""
    return make_stage(stage_name, json.loads(options_json)).load(device)


def _worker_device(device: str) -> str:
    """The device on this worker: ``auto`` resolved here (the driver may have no GPU), and a plain
    ``cuda`` spread over a multi-GPU machine (worker N uses GPU N mod count)."""
    device = resolve_device(device)
    if device != "cuda":
        return device
    import torch
    from distributed import get_worker

    count = torch.cuda.device_count()
    try:
        name = get_worker().name
    except ValueError:  # not inside a worker
        return device
    return f"cuda:{name % count}" if isinstance(name, int) and count > 1 else device


def process_shard(
    labels_dir: str,
    stage_name: str,
    shard_index: int,
    options: dict,
    device: str = "cpu",
    batch_size: int = 1,
) -> dict[str, Any]:
    """Label every frame of one shard for one stage and write the shard atomically (a dask task)."""
    started = time.perf_counter()
    plan = load_plan_cached(labels_dir)
    shard = plan.shards[shard_index]
    stage = make_stage(stage_name, options)
    path = shard_path(labels_dir, stage_name, shard.name)
    remove_stale_tmp(path)
    calib = plan.calibrations.get(shard.date)
    device = _worker_device(device)
    attrs = {
        "stage": stage_name,
        "plan_id": plan.plan_id,
        "shard_index": shard.index,
        "shard_name": shard.name,
        "teacher": stage.teacher,
        "checkpoint_sha256": stage.checkpoint_sha256,
        "calibration": calib.to_dict() if calib else {},
        "settings": stage.settings(),
        "device": device,
    }
    size = tuple(max(1, s) for s in shard.image_size)
    frames, root = shard.frames, Path(plan.data_root)
    with ShardWriter(path, shard.frame_ids, stage.datasets(size), attrs) as writer:
        if calib is None:
            for i in range(len(frames)):
                writer.fail(i, plan.calibration_errors.get(shard.date, "calibration missing"))
        else:
            model = _cached_model(stage_name, json.dumps(options, sort_keys=True), device)
            for start in range(0, len(frames), max(1, batch_size)):
                batch = frames[start : start + max(1, batch_size)]
                for i, result in enumerate(stage.process_batch(batch, calib, root, model), start=start):
                    if isinstance(result, Exception):
                        writer.fail(i, _reason(result))
                        continue
                    try:
                        writer.write(i, result)
                    except ValueError as err:
                        writer.fail(i, str(err))
    failures = [(shard.frame_ids[i], writer.failures[i]) for i in range(len(frames)) if not writer.ok[i]]
    return {
        "stage": stage_name,
        "shard": shard.name,
        "frames": len(frames),
        "failures": failures,
        "seconds": time.perf_counter() - started,
    }


def _reason(err: BaseException) -> str:
    """One line for a failed frame or shard: the message (with the OS's reason for OS errors), or
    the exception type and message for an unexpected error."""
    text = describe(err)
    return text if isinstance(err, ValueError | OSError) and text else f"{type(err).__name__}: {text}"


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


@dataclass(frozen=True)
class ClusterSpec:
    """Where the work runs: batch jobs of ``kind`` (slurm, pbs, sge, lsf, htcondor) through
    dask-jobqueue, ``jobs`` of them, with the cluster class's own ``options``."""

    kind: str
    jobs: int = 1
    options: dict = field(default_factory=dict)
    job_timeout: float = 600.0


@contextmanager
def dask_client(
    scheduler: str | None, workers: int | None, device: str, cluster: ClusterSpec | None = None
) -> Iterator[Any]:
    """A client of batch jobs (``cluster``), of the user's scheduler, or of a LocalCluster sized
    to the machine (one worker a GPU)."""
    import dask
    from distributed import Client, LocalCluster

    if cluster is not None:
        from labelgen.cluster import jobqueue_client

        if scheduler:
            raise ValueError("give --cluster or --scheduler, not both")
        if workers is not None:
            raise ValueError(
                "--workers sizes a local cluster; with --cluster use --jobs (and --job-option processes=N)"
            )
        with jobqueue_client(
            cluster.kind, cluster.jobs, cluster.options, device, cluster.job_timeout
        ) as client:
            yield client
        return
    if scheduler:
        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError) as err:
            raise ValueError(f"{scheduler}: scheduler unreachable ({type(err).__name__})") from None
        try:
            yield client
        finally:
            client.close()
        return
    gpu = device.startswith("cuda")
    if workers is None:
        import torch

        workers = max(1, torch.cuda.device_count()) if gpu else max(1, os.cpu_count() or 1)
    with dask.config.set({"distributed.nanny.pre-spawn-environ": _worker_environ(workers)}):
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",  # a free port: several runs may share a machine
            resources=GPU if gpu else None,
            silence_logs=logging.ERROR,
        )
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def _worker_environ(workers: int) -> dict[str, str]:
    """Set before local workers start: the machine's cores shared out among them, and malloc
    thresholds that let frame-sized buffers be reused. Dask sets MALLOC_TRIM_THRESHOLD_ to 64 KiB,
    which also freezes glibc's mmap threshold at 128 KiB: every frame buffer is then mapped and
    unmapped anew, and SGBM runs 20 % slower than outside dask."""
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    return {
        "MALLOC_TRIM_THRESHOLD_": str(128 * 2**20),
        "MALLOC_MMAP_THRESHOLD_": str(64 * 2**20),
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "OPENBLAS_NUM_THREADS": threads,
    }


def _check_gpu_workers(client: Any, scheduler: str | None) -> None:
    infos = client.scheduler_info(n_workers=-1)["workers"].values()
    if not any(w.get("resources", {}).get("GPU") for w in infos):
        raise ValueError(f"{scheduler}: no worker declares a GPU; start workers with `--resources GPU=1`")


def _validated_stage(name: str, options: dict) -> Any:
    """Build the stage once in the driver, so bad options or a mismatched checkpoint fail here,
    in one line, rather than in every task."""
    stage = make_stage(name, options)
    if stage.checkpoint_sha256:  # hashes the file, so a missing one is reported now
        stage.load("cpu")
    return stage


def run_stages(
    labels_dir: LabelFolder | str | Path,
    stages: Sequence[str],
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    device: str = "cpu",
    batch_size: int = 1,
    overwrite: bool = False,
    retry_failed: bool = False,
    verify: str = "full",
    stage_options: dict[str, dict] | None = None,
    progress: bool = True,
    cluster: ClusterSpec | None = None,
) -> list[StageReport]:
    """Run ``stages`` over every shard of the plan in ``labels_dir``; returns one report per stage.

    Complete shards are kept (resume), checked with ``verify`` (``full``: every chunk's checksum;
    ``quick``: attributes only); ``retry_failed`` also redoes the complete shards that hold failed
    frames; ``overwrite`` redoes everything. One run per label folder at a time (a lock file).
    ``labels_dir`` may be a ``LabelFolder``: its plan and statuses are used, and each stage that
    wrote is refreshed in it.
    """
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    if not stages:
        raise ValueError("no stages given")
    folder = LabelFolder.of(labels_dir, resolve=True)
    _ = folder.plan  # its one-line error before the lock (and the folder) is created; looked at
    # again under the lock (re-read if changed), since a `labelgen plan --overwrite` may replace it
    with folder_lock(folder.given, f"labelgen run --stages {','.join(stages)}"):
        return _run_locked(folder, stages, workers, scheduler, device, batch_size, overwrite,
                           retry_failed, verify, stage_options, progress, cluster)  # fmt: skip


def _run_locked(
    folder, stages, workers, scheduler, device, batch_size, overwrite, retry_failed, verify,
    stage_options, progress, cluster,
) -> list[StageReport]:  # fmt: skip
    plan = folder.plan
    if (
        scheduler is None and cluster is None
    ):  # local: this machine's devices; remote workers resolve their own
        device = resolve_device(device)
    options = {name: dict((stage_options or {}).get(name) or {}) for name in stages}
    gpu_stages = {name for name in stages if _validated_stage(name, options[name]).gpu}
    todo: list[tuple[str, ShardPlan]] = []
    for name in stages:
        for shard in plan.shards:
            status = folder.status(name, shard, verify)
            if overwrite or not status.complete or (retry_failed and status.failures):
                todo.append((name, shard))
    errors: dict[tuple[str, str], str] = {}
    processed = dict.fromkeys(stages, 0)
    task_seconds = dict.fromkeys(stages, 0.0)
    started, n_workers, ids = time.perf_counter(), 0, set()
    if todo:
        try:
            with dask_client(scheduler, workers, device, cluster) as client:
                if scheduler and gpu_stages and device.startswith("cuda"):
                    _check_gpu_workers(client, scheduler)
                errors = _submit_and_wait(
                    client,
                    folder.path,
                    todo,
                    options,
                    gpu_stages,
                    device,
                    batch_size,
                    processed,
                    task_seconds,
                    progress,
                )
                n_workers = len(client.scheduler_info(n_workers=-1)["workers"])
            ids = getattr(client, "edgedepth_job_ids", set())  # filled in until the jobs end
        finally:
            for name in dict.fromkeys(name for name, _ in todo):
                folder.refresh(name)  # its shards were (re)written: checked again from disk
    seconds = time.perf_counter() - started
    where = cluster.kind if cluster else (scheduler or "local")
    reports = []
    for name in stages:
        report = _stage_report(folder, plan, name, errors)
        report.frames_processed, report.seconds, report.wall_seconds = (
            processed[name],
            task_seconds[name],
            seconds,
        )
        report.workers, report.device = n_workers, device
        report.cluster, report.job_ids = where, sorted(ids, key=lambda j: (len(j), j))
        report.finished = datetime.now(UTC).isoformat(timespec="seconds")
        write_text_atomic(folder.given / name / REPORT_FILE, report.to_json())
        reports.append(report)
    return reports


def _submit_and_wait(
    client, labels_dir, todo, options, gpu_stages, device, batch_size, processed, task_seconds, progress
):
    from distributed import as_completed

    futures = {}
    for name, shard in todo:
        resources = GPU if name in gpu_stages and device.startswith("cuda") else None
        future = client.submit(
            process_shard,
            str(labels_dir),
            name,
            shard.index,
            options[name],
            device,
            batch_size,
            key=f"{name}-{shard.name}-{os.urandom(4).hex()}",
            pure=False,
            retries=2,
            resources=resources,
        )
        futures[future] = (name, shard)
    errors: dict[tuple[str, str], str] = {}
    frame_total = sum(len(shard.frame_ids) for _, shard in todo)
    with (
        tqdm(total=len(todo), unit="shard", disable=not progress, position=0) as shard_bar,
        tqdm(total=frame_total, unit="frame", disable=not progress, position=1) as frame_bar,
    ):
        for future in as_completed(futures):
            name, shard = futures[future]
            try:
                result = future.result()
                processed[name] += len(shard.frame_ids)
                task_seconds[name] += result["seconds"]
            except Exception as err:  # a shard that could not be written is reported, the rest go on
                errors[(name, shard.name)] = _reason(err)
            shard_bar.update(1)
            frame_bar.update(len(shard.frame_ids))
    return errors


def _stage_report(
    folder: LabelFolder, plan: Plan, name: str, errors: dict[tuple[str, str], str]
) -> StageReport:
    report = StageReport(name, plan.plan_id, len(plan.shards), 0, len(plan.frame_ids), 0)
    for shard in plan.shards:  # quick: what this run wrote was just verified by writing it
        status = folder.status(name, shard, "quick")
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
