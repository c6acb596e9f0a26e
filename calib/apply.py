"""Writing the corrected teacher shards: ``LABELS/<teacher>_corrected``, the teacher's depth plus
the bias table's correction (``calib apply``), one shard per task, skipping shards already written
from the same table and the same teacher shard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from edgedepth.calib.fit import CORRECTED_SUFFIX, _plan_of, _stored_depth, check_stages
from edgedepth.calib.lut import Lut, apply_lut, load_lut
from edgedepth.labelgen import (
    DEPTH_ATTRS,
    DatasetSpec,
    LabelFolder,
    Plan,
    ShardPlan,
    ShardWriter,
    Workers,
    open_shard,
    read_rows,
    remove_stale_tmp,
    shard_path,
)


def write_corrected(
    labels_dir: LabelFolder | str | Path,
    lut: Lut | str | Path,
    teacher: str = "sgbm",
    lut_path: str | Path | None = None,
    progress: bool = False,
    client: Any = None,
) -> dict[str, Any]:
    """Write ``LABELS/<teacher>_corrected/shard-*.h5`` (depth float16 = apply_lut of the teacher's),
    skipping shards already written with the same table and the same teacher shard; a summary.
    With a dask ``client`` each shard is one task. ``labels_dir`` may be a ``LabelFolder`` (its
    plan and statuses are used; the corrected stage is refreshed in it)."""
    if not isinstance(lut, Lut):
        lut_path, lut = lut, load_lut(lut)
    folder = LabelFolder.of(labels_dir, resolve=True)
    pool = Workers.of(client)
    plan, info = check_stages(folder, teacher, lidar=False, workers=pool, progress=progress)
    _check_lut_matches(lut, teacher, info, lut_path)
    stage = f"{teacher}{CORRECTED_SUFFIX}"
    folder.verify([stage], "once", pool, progress)  # corrected shards of an earlier apply, read once
    written = failed = 0
    todo = []
    for shard in plan.shards:
        source = _source_identity(folder.given, teacher, shard, lut)
        status = folder.status(stage, shard, "once")
        if status.complete and _made_from(status.path, source):
            failed += len(status.failures)
        else:
            todo.append((shard.index, source))
    extra = (teacher, lut, str(lut_path) if lut_path else None)
    try:
        frames = sum(len(plan.shards[index].frame_ids) for index, _ in todo)
        client = pool.client_for(len(todo), frames)
        if client is None:
            results = (correct_shard(folder, *extra, index, source) for index, source in todo)
        else:  # one task a shard; results in any order
            from distributed import as_completed

            futures = [
                client.submit(correct_shard, str(folder.path), *extra, index, source, pure=False)
                for index, source in todo
            ]
            results = (future.result() for future in as_completed(futures))
        for count in tqdm(results, total=len(todo), unit="shard", desc=stage, disable=not progress):
            failed += count
            written += 1
    finally:
        if todo:
            folder.refresh(stage)
    return {
        "stage": stage,
        "path": str(folder.given / stage),
        "lut_sha256": lut.sha256,
        "shards": len(plan.shards),
        "written": written,
        "skipped": len(plan.shards) - written,
        "frames": len(plan.frame_ids),
        "frames_failed": failed,
    }


def _check_lut_matches(lut: Lut, teacher: str, info: dict[str, list[str]], lut_path: Any) -> None:
    """A table fitted on another teacher stage or checkpoint does not describe these shards."""
    name = lut_path or "lut"
    fitted = lut.source.get("teacher_stage")
    if fitted and fitted != teacher:
        raise ValueError(f"{name}: fitted on teacher stage {fitted!r}, not {teacher!r}")
    known = set(lut.source.get("checkpoint_sha256") or [])
    if known and not set(info["checkpoint_sha256"]) <= known:
        raise ValueError(f"{name}: fitted on another {teacher} checkpoint than the shards hold")


def _source_identity(labels_dir: Path, teacher: str, shard: ShardPlan, lut: Lut) -> dict[str, Any]:
    """What a corrected shard depends on: the table and the teacher shard it was computed from."""
    with open_shard(shard_path(labels_dir, teacher, shard.name)) as f:
        return {
            "lut_sha256": lut.sha256,
            "source_stage": teacher,
            "source_settings": str(f.attrs.get("settings", "")),
            "source_created": str(f.attrs.get("created", "")),
        }


def _made_from(path: Path, source: dict[str, Any]) -> bool:
    """Was this complete corrected shard computed from ``source`` (same table, same teacher shard)?"""
    with open_shard(path) as f:
        settings = json.loads(f.attrs.get("settings", "{}"))
    return all(settings.get(k) == v for k, v in source.items())


def correct_shard(
    labels_dir: LabelFolder | str,
    teacher: str,
    lut: Lut,
    lut_path: str | None,
    shard_index: int,
    source: dict,
) -> int:
    """Write one corrected shard atomically (a dask task when a client is given); returns its number
    of failed (carried-over) frames."""
    plan, labels_dir = _plan_of(labels_dir)
    return _write_corrected_shard(
        Path(labels_dir), plan, teacher, plan.shards[shard_index], lut, lut_path, source
    )


def _write_corrected_shard(
    labels_dir: Path,
    plan: Plan,
    teacher: str,
    shard: ShardPlan,
    lut: Lut,
    lut_path: Any,
    source: dict[str, Any],
) -> int:
    """Write one corrected shard atomically; returns its number of failed (carried-over) frames."""
    target = shard_path(labels_dir, f"{teacher}{CORRECTED_SUFFIX}", shard.name)
    remove_stale_tmp(target)
    with open_shard(shard_path(labels_dir, teacher, shard.name)) as f:
        attrs = {
            "stage": f"{teacher}{CORRECTED_SUFFIX}",
            "plan_id": plan.plan_id,
            "shard_index": shard.index,
            "shard_name": shard.name,
            "teacher": f.attrs.get("teacher", ""),
            "checkpoint_sha256": f.attrs.get("checkpoint_sha256", ""),
            "calibration": f.attrs.get("calibration", "{}"),
            "settings": {**source, "lut_path": str(Path(lut_path).resolve()) if lut_path else None},
            "device": "cpu",
            "lut_sha256": lut.sha256,
        }
        depth, ok, why = f["depth"], read_rows(f["ok"]), read_rows(f["failure"], as_str=True)
        spec = {"depth": DatasetSpec(tuple(depth.shape[1:]), "float16", attrs=DEPTH_ATTRS)}
        with ShardWriter(target, shard.frame_ids, spec, attrs) as writer:
            for row in range(len(shard.frame_ids)):
                if ok[row]:
                    corrected = apply_lut(_stored_depth(depth, row), lut)
                    writer.write(row, {"depth": corrected.astype(np.float16)})
                else:
                    writer.fail(row, str(why[row]))
    return int((~ok).sum())


__all__ = ["correct_shard", "write_corrected"]
