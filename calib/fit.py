"""Fitting the bias table from a label folder, and writing the corrected teacher shards.

The teacher's and the LiDAR's shards are joined by shard and row (same plan). Whole drives are
held out (chosen by a hash of the drive name, so the choice is stable); every other shard is one
task, ``accumulate_shard``, that returns a small mergeable accumulator, so the fit runs in a plain
loop or as dask tasks and the reduction (in shard order) gives the same table either way.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
from collections import deque
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from tqdm import tqdm

from edgedepth.calib.lut import BinAccumulator, Evaluation, FitSettings, Lut, lut_from_accumulator
from edgedepth.labelgen import (
    PLAN_FILE,
    LabelFolder,
    Plan,
    ShardPlan,
    Workers,
    decode,
    load_plan_cached,
    open_shard,
    read_rows,
    shard_path,
)

LIDAR = "lidar"
CORRECTED_SUFFIX = "_corrected"
IN_FLIGHT = 128  # dask tasks submitted ahead of the in-order merge


def check_stages(
    labels_dir: LabelFolder | str | Path,
    teacher: str,
    lidar: bool = True,
    workers: Any = None,
    progress: bool = False,
    verify: str = "once",
) -> tuple[Plan, dict[str, list[str]]]:
    """The plan, once the teacher's (and unless ``lidar`` is False the LiDAR's) shard sets are
    complete and of this plan; also the teacher names and checkpoint SHA-256s in the shards' attrs.
    Shard files not verified before are read in full first (``verify="once"``, on ``workers``: a
    ``edgedepth.labelgen.client.Workers`` or a dask client); a ``LabelFolder``'s known statuses count."""
    folder = LabelFolder.of(labels_dir)
    labels_dir = folder.given
    if lidar and (teacher == LIDAR or teacher.startswith(LIDAR + "_")):
        raise ValueError(
            f"--teacher {teacher}: the LiDAR cannot be fitted against itself; pick a teacher stage (psmnet, sgbm)"
        )
    plan = folder.plan
    if not plan.shards:
        raise ValueError(f"{labels_dir / PLAN_FILE}: the plan has no frames")
    stages = ((LIDAR,) if lidar else ()) + (teacher,)
    for stage in stages:  # absent or of another plan: said before anything is read in full
        _check_stage(folder, plan, stage, "LiDAR" if stage == LIDAR else "teacher", "quick")
    folder.verify(stages, verify, workers, progress)
    for stage in stages:
        _check_stage(folder, plan, stage, "LiDAR" if stage == LIDAR else "teacher", verify)
    names, checkpoints = set(), set()
    for shard in plan.shards:
        with open_shard(folder.shard_path(teacher, shard)) as f:
            if "depth" not in f:
                raise ValueError(f"{f.filename}: no `depth` dataset; {teacher} is not a depth teacher")
            names.add(str(f.attrs.get("teacher", "")))
            checkpoints.add(str(f.attrs.get("checkpoint_sha256", "")))
    return plan, {"teacher": sorted(names), "checkpoint_sha256": sorted(checkpoints)}


def _check_stage(folder: LabelFolder, plan: Plan, stage: str, role: str, verify: str) -> None:
    """One-line errors for a stage whose shards are absent, incomplete or of another plan."""
    bad = []
    for shard in plan.shards:
        status = folder.status(stage, shard, verify)
        if status.state == "stale" and status.reason == "written for another plan":
            with open_shard(status.path) as f:
                other = str(f.attrs.get("plan_id", ""))[:12]
            raise ValueError(
                f"{status.path}: shards of different plans (plan_id {other}... vs {plan.plan_id[:12]}... "
                f"in plan.json); re-run `edgedepth labelgen run --stages {stage}`"
            )
        if not status.complete:
            bad.append(status)
    if bad:
        what = "absent" if len(bad) == len(plan.shards) else "incomplete"
        first = f"{bad[0].path.name} {bad[0].state}" + (f" ({bad[0].reason})" if bad[0].reason else "")
        raise ValueError(
            f"{folder.given / stage}: {role} stage {stage!r} {what} ({len(plan.shards) - len(bad)}/"
            f"{len(plan.shards)} shards complete; {first}); run `edgedepth labelgen run --stages {stage}`"
        )


DEFAULT_HOLDOUT = 0.1


def default_holdout(plan: Plan) -> float:
    """``DEFAULT_HOLDOUT``, or 0 when holding that share out would leave no drive to fit on (a plan
    of one drive, or of one large drive after small ones)."""
    try:
        split_drives(plan, DEFAULT_HOLDOUT)
    except ValueError:
        return 0.0
    return DEFAULT_HOLDOUT


def split_drives(plan: Plan, holdout: float) -> tuple[list[int], list[int], list[str]]:
    """(fit shard indices, held-out shard indices, held-out drives): drives in order of the SHA-256
    of their name, the shortest prefix whose frames reach ``holdout`` of all frames is held out."""
    if not 0 <= holdout < 1:
        raise ValueError(f"holdout must be in [0, 1), got {holdout}")
    frames: dict[str, int] = {}
    for shard in plan.shards:
        frames[shard.drive] = frames.get(shard.drive, 0) + len(shard.frame_ids)
    order = sorted(frames, key=lambda d: hashlib.sha256(d.encode()).hexdigest())
    target, held = holdout * sum(frames.values()), []
    for drive in order:
        if sum(frames[d] for d in held) >= target:
            break
        held.append(drive)
    if len(held) == len(frames):
        raise ValueError(
            f"holdout {holdout:g} leaves no drive to fit on ({len(frames)} drive(s) in the plan); "
            "use --holdout 0"
        )
    fit = [s.index for s in plan.shards if s.drive not in held]
    return fit, [s.index for s in plan.shards if s.drive in held], sorted(held)


def shard_pairs(
    labels_dir: str | Path, teacher: str, shard: ShardPlan, frames: Collection[str] | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(teacher depth as stored, LiDAR depth float32) of each frame that is ok in both shards (and,
    with ``frames``, listed there)."""
    for _, teacher_depth, lidar_depth in _frame_pairs(labels_dir, teacher, shard, frames):
        yield teacher_depth, lidar_depth


def _frame_pairs(
    labels_dir: str | Path, teacher: str, shard: ShardPlan, frames: Collection[str] | None = None
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """``shard_pairs`` with each frame's id first."""
    t_path, l_path = shard_path(labels_dir, teacher, shard.name), shard_path(labels_dir, LIDAR, shard.name)
    with open_shard(t_path) as ft, open_shard(l_path) as fl:
        if ft.attrs.get("plan_id") != fl.attrs.get("plan_id"):
            raise ValueError(f"{t_path}: shards of different plans (its plan_id differs from {l_path})")
        for f, path in ((ft, t_path), (fl, l_path)):
            if not isinstance(f.get("depth"), h5py.Dataset):
                raise ValueError(f"{path}: no `depth` dataset (not a depth stage)")
        t_set, l_set = ft["depth"], fl["depth"]
        if t_set.shape != l_set.shape:
            raise ValueError(
                f"{t_path}: depth of shape {t_set.shape} does not match the LiDAR's {l_set.shape} in {l_path} "
                "(rows x height x width): the stages were run at different sizes"
            )
        ok = read_rows(ft["ok"]) & read_rows(fl["ok"])
        if frames is not None:
            ok &= np.array([f in frames for f in shard.frame_ids], dtype=bool)
        for row in np.flatnonzero(ok):
            yield shard.frame_ids[row], _stored_depth(t_set, row), decode(l_set, read_rows(l_set, row))


def _add_frames(target: Any, labels_dir: str | Path, teacher: str, shard: ShardPlan, frames: Any) -> None:
    """``target.add`` every frame pair of the shard; a frame it refuses is named with its shard."""
    for frame_id, teacher_depth, lidar_depth in _frame_pairs(labels_dir, teacher, shard, frames):
        try:
            target.add(teacher_depth, lidar_depth)
        except ValueError as err:
            path = shard_path(labels_dir, teacher, shard.name)
            raise ValueError(f"{path}: frame {frame_id}: {err}") from None


def _stored_depth(dataset: h5py.Dataset, row: int) -> np.ndarray:
    """A depth row in its stored float dtype (scaled integer storage is decoded to float32)."""
    raw = read_rows(dataset, row)
    return raw if raw.dtype.kind == "f" and "scale" not in dataset.attrs else decode(dataset, raw)


def _plan_of(labels_dir: LabelFolder | str | Path) -> tuple[Plan, Path | str]:
    """A task's plan and folder path: a LabelFolder's (in the driver), else ``load_plan_cached``."""
    if isinstance(labels_dir, LabelFolder):
        return labels_dir.plan, labels_dir.given
    return load_plan_cached(labels_dir), labels_dir


def accumulate_shard(
    labels_dir: LabelFolder | str | Path,
    teacher: str,
    shard_index: int,
    settings: FitSettings | dict,
    frames: Collection[str] | None = None,
) -> BinAccumulator:
    """The accumulator of one shard (a dask task: small arguments, small picklable result), over
    its frames listed in ``frames`` when given. Its reservoir RNG is seeded by (seed, shard index),
    so results do not depend on scheduling."""
    settings = settings if isinstance(settings, FitSettings) else FitSettings(**settings)
    plan, labels_dir = _plan_of(labels_dir)
    shard = plan.shards[shard_index]
    acc = BinAccumulator(settings.edges, settings.reservoir_size, seed=[settings.seed, 2, shard_index])
    _add_frames(acc, labels_dir, teacher, shard, frames)
    return acc


def evaluate_shard(
    labels_dir: LabelFolder | str | Path, teacher: str, shard_index: int, lut: Lut
) -> Evaluation:
    """Held-out figures of one shard before and after ``lut`` (a dask task like accumulate_shard)."""
    evaluation = Evaluation(lut)
    plan, labels_dir = _plan_of(labels_dir)
    _add_frames(evaluation, labels_dir, teacher, plan.shards[shard_index], None)
    return evaluation


def _reduce(
    task: Callable[..., Any],
    folder: LabelFolder,
    teacher: str,
    indices: Sequence[int],
    extra: Any,
    client: Any,
    progress: bool,
    desc: str,
) -> Any:
    """Run ``task(folder, teacher, index, extra)`` per shard (loop or dask) and merge the results in
    shard order; dask tasks get ``str(folder.path)``, the loop the folder itself (its plan)."""
    total = None
    frames = sum(len(folder.plan.shards[i].frame_ids) for i in indices)
    pool = Workers.of(client)  # a cluster is worth its start (a second or two) on larger work only
    client = pool.client_for(len(indices), frames)
    with tqdm(total=len(indices), unit="shard", desc=desc, disable=not progress) as bar:
        if client is None:
            results: Iterator[Any] = (task(folder, teacher, i, extra) for i in indices)
        else:
            results = _dask_results(client, task, (str(folder.path), teacher), indices, extra)
        for result in results:
            total = result if total is None else total.merge(result)
            bar.update(1)
    return total


def _dask_results(
    client: Any, task: Callable[..., Any], args: tuple[str, str], indices: Sequence[int], extra: Any
) -> Iterator[Any]:
    """Task results in shard order, with at most IN_FLIGHT tasks submitted and not yet consumed
    (bounds the memory the cluster holds for finished accumulators: about 1.3 MB each)."""
    todo, pending = iter(indices), deque()
    for i in itertools.islice(todo, IN_FLIGHT):
        pending.append(client.submit(task, *args, i, extra, pure=False))
    while pending:
        result = pending.popleft().result()  # released once the reference goes
        for i in itertools.islice(todo, 1):
            pending.append(client.submit(task, *args, i, extra, pure=False))
        yield result


def fit_from_labels(
    labels_dir: LabelFolder | str | Path,
    teacher: str = "sgbm",
    holdout: float | None = None,
    client: Any = None,
    *,
    bin_width: float = 1.0,
    min_depth: float = 1,
    max_depth: float = 80,
    stat: str = "mean",
    min_count: int = 100,
    progress: bool = True,
    frames: Collection[str] | None = None,
    **options: Any,
) -> Lut:
    """Fit the table on the label folder's non-held-out drives and
    report RMSE / Abs Rel before and after correction on the held-out ones (``holdout`` None:
    ``default_holdout``, recorded in the table's ``source.holdout``). ``labels_dir`` may be
    a ``LabelFolder`` (its plan and shard statuses are used). ``frames`` restricts the fit to those
    frame ids (e.g. an experiment's training frames, so held-out scenes never shape the table).
    ``client``: a ``edgedepth.labelgen.client.Workers`` (a cluster started when there is more than one shard
    to read), a dask client, or None (this process). One pass over the data: shard files verified
    before (stamps, ``edgedepth.labelgen.verify``) are read once, by the accumulating tasks."""
    folder = LabelFolder.of(labels_dir, resolve=True)
    settings = FitSettings(bin_width, min_depth, max_depth, stat, min_count, **options)
    client = Workers.of(client)
    plan, teacher_info = check_stages(folder, teacher, workers=client, progress=progress)
    if holdout is None:
        holdout = default_holdout(plan)
    fit_idx, held_idx, held_drives = split_drives(plan, holdout)
    task: Callable[..., Any] = accumulate_shard
    if frames is not None:
        frames = frozenset(frames)
        fit_idx = [i for i in fit_idx if frames.intersection(plan.shards[i].frame_ids)]
        if not fit_idx:
            raise ValueError(
                f"{folder.given}: none of the {len(frames)} listed frames is in the fitted drives"
            )
        task = functools.partial(accumulate_shard, frames=frames)
    acc = _reduce(task, folder, teacher, fit_idx, settings, client, progress, "fit")
    try:
        lut = lut_from_accumulator(acc, settings)
    except ValueError as err:
        raise ValueError(f"{folder.given}: {err}") from None
    fit_drives = sorted({plan.shards[i].drive for i in fit_idx})
    source = {
        "labels_dir": str(folder.path),
        "plan_id": plan.plan_id,
        "teacher_stage": teacher,
        **teacher_info,
        "holdout": holdout,
        "frame_list": frames is not None,
        "shards": [plan.shards[i].name for i in fit_idx],
        "drives": fit_drives,
        "frames": acc.frames,
        "pixels": int(acc.counts.sum()),
    }
    heldout = None
    if held_idx:
        evaluation = _reduce(evaluate_shard, folder, teacher, held_idx, lut, client, progress, "held-out")
        heldout = {
            "drives": held_drives,
            "shards": [plan.shards[i].name for i in held_idx],
            **evaluation.to_dict(),
        }
    return replace(lut, source=source, heldout=heldout)


def format_lut(lut: Lut) -> str:
    """A text report of a fit: source, held-out figures, and one row per bin."""
    s, src, held = lut.settings, lut.source, lut.heldout
    populated = np.flatnonzero(~lut.filled)
    lines = [
        f"teacher {src.get('teacher_stage', '?')} ({', '.join(src.get('teacher', [])) or '?'}), "
        f"stat {s['stat']}, {len(lut.count)} bins of {s['bin_width']:g} m over "
        f"[{lut.edges[0]:g}, {lut.edges[-1]:g}) m, min count {s['min_count']}",
        f"fit: {len(src.get('drives', []))} drive(s), {src.get('frames', '?')} frames, "
        f"{int(lut.count.sum())} pixels; populated bins {len(populated)}/{len(lut.count)}",
        f"{s['stat']} error lidar - teacher over populated bins: "
        f"{np.min(lut.value[populated]):+.3f} .. {np.max(lut.value[populated]):+.3f} m",
    ]
    if held and held.get("pixels"):
        lines.append(
            f"held-out ({', '.join(held['drives'])}; {held['frames']} frames, {held['pixels']} pixels): "
            f"RMSE {held['rmse_before']:.3f} -> {held['rmse_after']:.3f} m, "
            f"Abs Rel {held['abs_rel_before']:.4f} -> {held['abs_rel_after']:.4f}"
        )
    else:
        lines.append("held-out: none")
    lines += _bin_rows(lut)
    return "\n".join(lines)


def _bin_rows(lut: Lut) -> list[str]:
    """One row per bin from the first to the last bin with pixels (the rest is held constant)."""
    s = lut.settings
    level = f"{s['ci_level']:.0%} CI"
    rows = [f"{'bin (m)':>13}{'count':>10}{s['stat']:>9}{'std':>8}{level:>20}{'correction':>12}"]
    seen = np.flatnonzero(lut.count > 0)
    for b in range(seen[0], seen[-1] + 1):
        value = "" if np.isnan(lut.value[b]) else f"{lut.value[b]:+.3f}"
        std = "" if np.isnan(lut.std[b]) else f"{lut.std[b]:.3f}"
        ci = "" if np.isnan(lut.ci_low[b]) else f"[{lut.ci_low[b]:+.3f}, {lut.ci_high[b]:+.3f}]"
        rows.append(
            f"{f'{lut.edges[b]:g}-{lut.edges[b + 1]:g}':>13}{lut.count[b]:>10}{value:>9}{std:>8}{ci:>20}"
            f"{lut.correction[b]:>+12.3f}" + ("  filled" if lut.filled[b] else "")
        )
    rest = len(lut.count) - len(rows) + 1
    if rest:
        rows.append(f"({rest} bins without pixels outside this range hold the end values)")
    return rows
