"""Run label stages on dask.distributed: one task per (stage, shard), resumable, with a report.

Tasks carry only the label folder, a stage name, a shard index and small options; workers read
the plan and the input files (KITTI or rig layout) themselves and load a stage's model once per process (module-level
cache), so nothing heavy travels through the scheduler. A shard that is complete and belongs to
the current plan is skipped, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from edgedepth.common import (
    describe,
    folder_lock,
    is_os_fault,
    remove_stale_temps,
    resolve_device,
    write_text_atomic,
)
from edgedepth.labelgen.client import GPU, ClusterSpec, Workers
from edgedepth.labelgen.folder import LabelFolder
from edgedepth.labelgen.plan import ShardPlan, load_plan_cached
from edgedepth.labelgen.report import REPORT_FILE, StageReport, history, stage_report
from edgedepth.labelgen.shards import ShardWriter, remove_stale_tmp, shard_path
from edgedepth.labelgen.space import out_of_space
from edgedepth.labelgen.stages import make_stage
from edgedepth.labelgen.verify import STAMP_FILE, file_signature


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
    """Label every frame of one shard for one stage and write the shard atomically (a dask task).

    An error that a retry cannot cure (a full disk, a read-only folder, a bad option) is returned
    as ``{"error": line, "os_fault": bool}`` rather than raised: dask retries only lost workers.
    """
    started = time.perf_counter()
    try:
        return _process_shard(labels_dir, stage_name, shard_index, options, device, batch_size, started)
    except Exception as err:  # deterministic: reported once, not retried
        return {"stage": stage_name, "shard_index": shard_index, "error": _reason(err),
                "os_fault": is_os_fault(err), "errno": getattr(err, "errno", None)}  # fmt: skip


def _process_shard(
    labels_dir: str, stage_name: str, shard_index: int, options: dict, device: str, batch_size: int,
    started: float,
) -> dict[str, Any]:  # fmt: skip
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
        "signature": file_signature(path),
    }


def _reason(err: BaseException) -> str:
    """One line for a failed frame or shard: the message (with the OS's reason for OS errors), or
    the exception type and message for an unexpected error."""
    text = describe(err)
    return text if isinstance(err, ValueError | OSError) and text else f"{type(err).__name__}: {text}"


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
    verify: str = "once",
    stage_options: dict[str, dict] | None = None,
    progress: bool = True,
    cluster: ClusterSpec | None = None,
) -> list[StageReport]:
    """Run ``stages`` over every shard of the plan in ``labels_dir``; returns one report per stage.

    Complete shards are kept (resume), checked with ``verify`` (``once``: a full checksum read of
    each shard file not verified before, ``edgedepth.labelgen.verify``; ``full``: of every one, now;
    ``quick``: attributes only), on the workers; ``retry_failed`` also redoes the complete shards
    that hold failed frames; ``overwrite`` redoes everything. One run per label folder at a time (a
    lock file). No cluster is started when there is nothing to verify or label. ``labels_dir``
    may be a ``LabelFolder``: its plan and statuses are used, and each stage that wrote is
    refreshed in it. A full disk (or another OS fault) stops the run with one ``OSError`` naming
    the file system and the space needed; no retry.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    if not stages:
        raise ValueError("no stages given")
    pool = Workers(scheduler, workers, device, cluster, note=_stderr if progress else None)
    folder = LabelFolder.of(labels_dir, resolve=True)
    plan = folder.plan  # its one-line error before the lock (and the folder) is created; looked at
    # again under the lock (re-read if changed), since a `labelgen plan --overwrite` may replace it
    if batch_size > plan.shard_size:  # a batch never spans shards: bigger asks nothing more
        batch_size = plan.shard_size
    with folder_lock(folder.given, f"labelgen run --stages {','.join(stages)}"), pool:
        return _run_locked(folder, stages, pool, device, batch_size, overwrite, retry_failed, verify,
                           stage_options, progress)  # fmt: skip


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _run_locked(
    folder: LabelFolder, stages: Sequence[str], pool: Workers, device: str, batch_size: int,
    overwrite: bool, retry_failed: bool, verify: str, stage_options: dict | None, progress: bool,
) -> list[StageReport]:  # fmt: skip
    plan = folder.plan
    if not pool.remote:  # local: this machine's devices; remote workers resolve their own
        device = resolve_device(device)
        pool.device = device
    options = {name: dict((stage_options or {}).get(name) or {}) for name in stages}
    gpu_stages = {name for name in stages if _validated_stage(name, options[name]).gpu}
    for name in stages:  # what a killed run left half-written beside the stage's stamps and report
        for small in (STAMP_FILE, REPORT_FILE):
            remove_stale_temps(folder.given / name / small)
    started = time.perf_counter()
    pending = folder.unverified(stages, verify)
    if pending:
        folder.verify(stages, verify, pool, progress)
    todo: list[tuple[str, ShardPlan]] = []
    for name in stages:
        for shard in plan.shards:
            status = folder.status(name, shard, verify)
            if overwrite or not status.complete or (retry_failed and status.failures):
                todo.append((name, shard))
    errors: dict[tuple[str, str], str] = {}
    processed = dict.fromkeys(stages, 0)
    task_seconds = dict.fromkeys(stages, 0.0)
    if todo:
        client = pool.client(len(todo), inline=False)  # labelling always runs on dask workers
        try:
            if pool.scheduler and gpu_stages and device.startswith("cuda"):
                _check_gpu_workers(client, pool.scheduler)
            errors = _submit_and_wait(
                client,
                folder,
                todo,
                options,
                gpu_stages,
                device,
                batch_size,
                processed,
                task_seconds,
                progress,
            )
        finally:
            folder.save_stamps()
            for name in dict.fromkeys(name for name, _ in todo):
                folder.refresh(name)  # its shards were (re)written: checked again from disk
    n_workers = len(pool.started.scheduler_info(n_workers=-1)["workers"]) if pool.started else 0
    ids = getattr(pool.started, "edgedepth_job_ids", set()) if pool.started else set()
    seconds = time.perf_counter() - started
    where = pool.cluster.kind if pool.cluster else (pool.scheduler or "local")
    reports = []
    for name in stages:
        report = stage_report(folder, plan, name, errors, verify)
        report.frames_processed, report.seconds, report.wall_seconds = (
            processed[name],
            task_seconds[name],
            seconds,
        )
        report.workers, report.device = n_workers, device
        report.cluster, report.job_ids = where, sorted(ids, key=lambda j: (len(j), j))
        report.finished = datetime.now(UTC).isoformat(timespec="seconds")
        path = folder.given / name / REPORT_FILE
        report.history = history(path) + [report.run_entry()]
        write_text_atomic(path, report.to_json())
        reports.append(report)
    return reports


def _submit_and_wait(
    client, folder, todo, options, gpu_stages, device, batch_size, processed, task_seconds, progress
):
    from distributed import as_completed

    futures = {}
    for name, shard in todo:
        resources = GPU if name in gpu_stages and device.startswith("cuda") else None
        future = client.submit(
            process_shard,
            str(folder.path),
            name,
            shard.index,
            options[name],
            device,
            batch_size,
            key=f"{name}-{shard.name}-{os.urandom(4).hex()}",
            pure=False,
            retries=2,  # for lost workers only: process_shard returns its own errors
            resources=resources,
        )
        futures[future] = (name, shard)
    errors: dict[tuple[str, str], str] = {}
    frame_total = sum(len(shard.frame_ids) for _, shard in todo)
    fault: tuple[dict[str, Any], str, ShardPlan] | None = None
    # Two stacked bars move the cursor (ESC[A) to redraw: on a terminal only. In a log file one
    # bar, with the frame count as its postfix, leaves plain carriage-return lines.
    stacked, frames_done = progress and sys.stderr.isatty(), 0
    with (
        tqdm(
            total=len(todo), unit="shard", disable=not progress, position=0 if stacked else None
        ) as shard_bar,
        tqdm(total=frame_total, unit="frame", disable=not stacked, position=1) as frame_bar,
    ):
        for future in as_completed(futures):
            name, shard = futures[future]
            try:
                result = future.result()
            except Exception as err:  # a lost worker, three times: reported, the rest go on
                result = {"error": _reason(err), "os_fault": False}
            if "error" in result:
                errors[(name, shard.name)] = result["error"]
                if result.get("os_fault") and fault is None:
                    fault = (result, name, shard)
                    for other in futures:  # a retry cannot cure it: stop submitting work
                        other.cancel()
            else:
                processed[name] += len(shard.frame_ids)
                task_seconds[name] += result["seconds"]
                folder.stamp_written(name, shard, result.get("signature"), result["failures"])
            frame_bar.update(len(shard.frame_ids))
            frames_done += len(shard.frame_ids)
            if not stacked:
                shard_bar.set_postfix_str(f"{frames_done}/{frame_total} frames", refresh=False)
            shard_bar.update(1)
    if fault is not None:
        result, name, shard = fault
        left = [(n, s) for (n, s) in todo if (n, s.name) in errors]
        raise out_of_space(result, folder, name, shard, left)
    return errors
