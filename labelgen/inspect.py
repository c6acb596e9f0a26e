"""Look at a label folder: a text report of what every stage holds, and PNG previews of frames.

The report counts shards and frames against ``plan.json`` and gives value ranges computed on a
bounded sample of ok frames (fast on any size of label set); previews colour-map depth, draw the
LiDAR points over the RGB image and paint segmentation in the Cityscapes palette.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import h5py
import numpy as np

from edgedepth.common import save_figure
from edgedepth.labelgen.cityscapes import CITYSCAPES_CLASSES, CITYSCAPES_COLOURS, IGNORE_ID
from edgedepth.labelgen.folder import LabelFolder
from edgedepth.labelgen.plan import Plan, ShardPlan
from edgedepth.labelgen.shards import BOOKKEEPING_DATASETS, ShardStatus, decode, open_shard, read_rows

SAMPLE_FRAMES = 8
MAX_FAILURES = 5
DEPTH_CMAP = "turbo_r"  # near = red, far = dark blue / purple
NO_DATA_COLOUR = "#c8c8c8"  # light grey: no hue of turbo_r, and far from its dark far end (black was not)
COLOUR_PERCENTILES = (2.0, 98.0)  # the colour scale's limits: robust to a few outliers at either end


def _class_name(class_id: int) -> str:
    if class_id == IGNORE_ID:
        return "ignore (255)"
    return CITYSCAPES_CLASSES[class_id] if class_id < len(CITYSCAPES_CLASSES) else f"class {class_id}"


def stage_dirs(labels_dir: LabelFolder | str | Path) -> list[str]:
    """Sorted names of the subfolders holding shard files or a report.json."""
    return LabelFolder.of(labels_dir).stages()


class _Meta(NamedTuple):
    """What a dataset is, kept after its file is closed."""

    kind: str  # image, seg, mask, depth or values
    dtype: np.dtype
    shape: tuple[int, ...]  # of one frame
    attrs: dict[str, object]


def _meta(name: str, dset: h5py.Dataset) -> _Meta:
    attrs = dict(dset.attrs)
    if name in ("image", "seg"):
        kind = name
    elif dset.dtype == np.bool_:
        kind = "mask"
    elif name.startswith("depth") or attrs.get("units") == "m":
        kind = "depth"
    else:
        kind = "values"
    return _Meta(kind, dset.dtype, tuple(dset.shape[1:]), attrs)


Rows = dict[str, tuple[_Meta, list[np.ndarray]]]  # dataset name -> (what it is, decoded rows)


def _read_rows(path: Path, rows: list[int]) -> tuple[dict[str, object], Rows]:
    """A shard's root attributes and, per dataset, its description and decoded ``rows``."""
    with open_shard(path) as f:
        data = {
            name: (_meta(name, dset), [decode(dset, read_rows(dset, row)) for row in rows])
            for name, dset in f.items()
            if name not in BOOKKEEPING_DATASETS
        }
        return dict(f.attrs), data


def _stats(values: np.ndarray, units: str = "") -> str:
    lo, mid, hi = np.min(values), np.median(values), np.max(values)
    return f"min {lo:.2f} / median {mid:.2f} / max {hi:.2f}" + (f" {units}" if units else "")


def _summary(meta: _Meta, rows: list[np.ndarray]) -> str:
    """One line describing a dataset's values over the sampled rows."""
    values = np.stack(rows)
    if meta.kind == "image":
        return f"{meta.dtype} {'x'.join(map(str, meta.shape))}, mean {values.mean():.1f}"
    if meta.kind == "mask":
        return f"{values.mean():.1%} True"
    if meta.kind == "seg":
        share = np.bincount(values.ravel(), minlength=256) / values.size
        present = [int(c) for c in np.argsort(-share, kind="stable") if share[c] > 0 and c != IGNORE_ID]
        parts = [f"{_class_name(c)} {share[c]:.1%}" for c in present[:5]]
        more = f", {len(present) - 5} more" if len(present) > 5 else ""
        return f"{len(present)} classes: {', '.join(parts)}{more}; ignore (255) {share[IGNORE_ID]:.1%}"
    finite = np.isfinite(values)
    bad = f", {int((~finite).sum())} non-finite" if not finite.all() else ""
    if meta.kind == "depth":
        valid = finite & (values > 0)
        if not valid.any():
            return f"no valid (> 0) pixels{bad}"
        return f"valid (> 0) {_stats(values[valid], 'm')}, {valid.mean():.1%} valid pixels{bad}"
    invalid = meta.attrs.get("invalid")
    kept = values[finite & (values != invalid)] if invalid is not None else values[finite]
    return (_stats(kept, str(meta.attrs.get("units", ""))) if kept.size else "no valid values") + bad


def _ok_rows(shard: ShardPlan, status: ShardStatus) -> list[int]:
    failed = {frame_id for frame_id, _ in status.failures}
    return [row for row, frame_id in enumerate(shard.frame_ids) if frame_id not in failed]


def _sample_lines(
    folder: LabelFolder, stage: str, statuses: list[tuple[ShardPlan, ShardStatus]], limit: int
) -> list[str]:
    """Value ranges over at most ``limit`` ok frames spread evenly over the complete shards."""
    rows = [(shard, row) for shard, status in statuses if status.complete for row in _ok_rows(shard, status)]
    if not rows or limit < 1:
        return ["  no ok frame sampled from a complete shard: no value ranges"]
    picks = sorted({int(i) for i in np.linspace(0, len(rows) - 1, min(limit, len(rows))).round()})
    by_shard: dict[str, list[int]] = {}
    for i in picks:
        by_shard.setdefault(rows[i][0].name, []).append(rows[i][1])
    metas: dict[str, _Meta] = {}
    arrays: dict[str, list[np.ndarray]] = {}
    attrs: dict[str, object] = {}
    for shard_name, shard_rows in by_shard.items():
        attrs, data = _read_rows(folder.shard_path(stage, shard_name), shard_rows)
        for name, (meta, values) in data.items():
            metas[name] = meta
            arrays.setdefault(name, []).extend(values)
    lines = [f"  sample: {len(picks)} of {len(rows)} ok frames"]
    if attrs.get("teacher"):
        settings = str(attrs.get("settings", ""))
        lines.append(f"  teacher: {attrs['teacher']}; settings {settings[:90]}{'...' * (len(settings) > 90)}")
    return lines + [f"  {name:<12} {_summary(meta, arrays[name])}" for name, meta in metas.items()]


def _stage_lines(folder: LabelFolder, plan: Plan, stage: str, limit: int, verify: str = "once") -> list[str]:
    """The report section of one stage: shard states, frame counts, failures, value ranges."""
    statuses = [(shard, folder.status(stage, shard, verify)) for shard in plan.shards]
    states = [status.state for _, status in statuses]
    failures = [failure for _, status in statuses if status.complete for failure in status.failures]
    done = sum(len(shard.frame_ids) for shard, status in statuses if status.complete) - len(failures)
    missing = sum(len(shard.frame_ids) for shard, status in statuses if not status.complete)
    lines = [
        f"[{stage}]",
        f"  shards: {states.count('complete')}/{len(statuses)} complete; missing {states.count('missing')}, "
        f"stale {states.count('stale')}, invalid {states.count('invalid')}",
        f"  frames: {done} done, {len(failures)} failed, {missing} missing (of {len(plan.frame_ids)})",
    ]
    odd = [status for _, status in statuses if status.state in ("stale", "invalid")]
    lines += [f"  {status.state} {status.path.name}: {status.reason}" for status in odd[:3]]
    extra = sorted(
        {p.stem for p in (folder.given / stage).glob("shard-*.h5")} - {s.name for s in plan.shards}
    )
    if extra:
        lines.append(f"  {len(extra)} shard files not in the plan, e.g. {extra[0]}.h5")
    lines += [f"  failed {frame_id}: {reason}" for frame_id, reason in failures[:MAX_FAILURES]]
    if len(failures) > MAX_FAILURES:
        lines.append(f"  ... and {len(failures) - MAX_FAILURES} more failed frames")
    return lines + _sample_lines(folder, stage, statuses, limit)


def inspect_labels(
    labels_dir: LabelFolder | str | Path,
    sample_frames: int = SAMPLE_FRAMES,
    verify: str = "once",
    workers: Any = None,
    progress: bool = False,
) -> str:
    """A readable report of every stage folder: shards and frames against the plan, value ranges.
    ``verify``: ``once`` reads every chunk (checksums) of each shard file not verified before,
    ``full`` of every file, ``quick`` the attributes only (``edgedepth.labelgen.verify``); the reads run on
    ``workers`` (a ``edgedepth.labelgen.client.Workers`` or dask client; None: here), with a progress bar
    when ``progress``. A ``LabelFolder`` given lends its plan and shard statuses."""
    folder = LabelFolder.of(labels_dir)
    plan = folder.plan
    stages = folder.stages()
    verified = folder.verify(stages, verify, workers, progress)
    lines = [
        f"labels {folder.given}: plan {plan.plan_id[:12]}",
        f"planned: {len(plan.frame_ids)} frames in {len(plan.shards)} shards",
        f"value ranges: on a sample of at most {sample_frames} ok frames per stage, spread over complete shards",
    ]
    if verified and folder.last_verify is not None:
        lines.append(folder.last_verify.describe())
    if plan.calibration_errors:
        lines.append(f"no calibration for {', '.join(sorted(plan.calibration_errors))}")
    if not stages:
        lines.append("no stage folders yet")
    for stage in stages:
        lines += _stage_lines(folder, plan, stage, sample_frames, verify)
    return "\n".join(lines)


def _preview_frames(
    folder: LabelFolder, plan: Plan, stages: list[str], limit: int
) -> list[tuple[ShardPlan, int, list[str]]]:
    """The first ``limit`` frames ok in at least one stage: (shard, row, stages where it is ok)."""
    picked: list[tuple[ShardPlan, int, list[str]]] = []
    for shard in plan.shards:
        if len(picked) >= limit:
            break
        statuses = {s: folder.status(s, shard, "quick") for s in stages}
        ok = {s: set(_ok_rows(shard, st)) if st.complete else set() for s, st in statuses.items()}
        for row in range(len(shard.frame_ids)):
            good = [s for s in stages if row in ok[s]]
            if good and len(picked) < limit:
                picked.append((shard, row, good))
    return picked


def _figure(plt: Any, shape: tuple[int, ...], title: str) -> tuple[Any, Any]:
    """A wide figure for a frame of ``shape`` (1242x375 KITTI frames get about 12x4 inches)."""
    fig, ax = plt.subplots(figsize=(12.0, max(2.5, 11.0 * shape[0] / shape[1] + 0.6)))
    ax.set_axis_off()
    ax.set_title(title, fontsize=10)
    return fig, ax


def _colour_range(depth: np.ndarray) -> tuple[np.ndarray, float, float, str]:
    """Valid mask (finite, > 0), colour limits and the colour bar's ``extend``.

    The limits are the 2nd and 98th percentiles of the valid values (``COLOUR_PERCENTILES``), so a
    few outliers (a border artefact, a far speck) don't flatten the map; values beyond saturate and
    the bar gets an arrow at that end. A (nearly) constant map gets the full min-max, widened if flat.
    """
    valid = np.isfinite(depth) & (depth > 0)
    if not valid.any():
        return valid, 0.0, 1.0, "neither"
    values = depth[valid]
    bottom, top = float(values.min()), float(values.max())
    lo, hi = (float(v) for v in np.percentile(values, COLOUR_PERCENTILES))
    if not hi > lo:
        lo, hi = bottom, top
    if not hi > lo:
        lo, hi = lo - max(0.05 * abs(lo), 1e-3), hi + max(0.05 * abs(hi), 1e-3)
    extend = {(False, False): "neither", (True, False): "min", (False, True): "max", (True, True): "both"}
    return valid, lo, hi, extend[(bottom < lo, top > hi)]


def seg_palette() -> np.ndarray:
    """(256, 3) uint8 RGB per train id: the Cityscapes colours for 0..18, black for every other id (255)."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: len(CITYSCAPES_COLOURS)] = CITYSCAPES_COLOURS
    return palette


def depth_figure(plt: Any, depth: np.ndarray, title: str) -> Any:
    """A matplotlib figure of colour-mapped depth (``turbo_r``) with a labelled metre colour bar.

    The colour scale spans the 2nd-98th percentiles of the valid depth (``_colour_range``); invalid
    pixels (0, NaN, inf) are light grey (``NO_DATA_COLOUR``), unlike any depth colour. Sparse maps
    (under 20% valid) get 3x3 dots (nearest wins) to be visible. The caller saves and closes it.
    """
    valid, lo, hi, extend = _colour_range(depth)
    values = depth[valid]
    bottom, top = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    note = f"{valid.mean():.1%} valid, {bottom:.1f}-{top:.1f} m"
    if not valid.all():
        note += ", grey = no data"
    if 0 < valid.mean() < 0.2:
        inverse = np.where(valid, 1.0 / np.where(valid, depth, 1.0), 0.0).astype(np.float32)
        inverse = cv2.dilate(inverse, np.ones((3, 3), np.uint8))
        valid, depth, note = inverse > 0, 1.0 / np.maximum(inverse, 1e-12), f"{note}, points drawn 3x3"
    fig, ax = _figure(plt, depth.shape, f"{title}  ({note})")
    cmap = plt.get_cmap(DEPTH_CMAP).with_extremes(bad=NO_DATA_COLOUR)
    shown = ax.imshow(np.ma.masked_where(~valid, depth), cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
    fig.colorbar(shown, ax=ax, label=_bar_label(lo, hi), extend=extend, fraction=0.03, pad=0.01)
    return fig


def _bar_label(lo: float, hi: float) -> str:
    p_lo, p_hi = (f"{p:g}" for p in COLOUR_PERCENTILES)
    return f"depth (m): {lo:.2f}-{hi:.2f}, the {p_lo}-{p_hi}th percentiles"


def _overlay_figure(plt: Any, image: np.ndarray, depth: np.ndarray, title: str) -> Any:
    """The LiDAR points (valid pixels of ``depth``) over the RGB image, coloured by depth."""
    valid, lo, hi, extend = _colour_range(depth)
    height, width = depth.shape
    fig, ax = _figure(plt, depth.shape, f"{title}  ({int(valid.sum())} points)")
    ax.imshow(image, extent=(0, width, height, 0))  # stretched onto the depth grid if resized
    rows, cols = np.nonzero(valid)
    dots = ax.scatter(cols + 0.5, rows + 0.5, c=depth[valid], s=2, cmap=DEPTH_CMAP, vmin=lo, vmax=hi, lw=0)
    ax.set(xlim=(0, width), ylim=(height, 0))
    fig.colorbar(dots, ax=ax, label=_bar_label(lo, hi), extend=extend, fraction=0.03, pad=0.01)
    return fig


def _seg_figure(plt: Any, seg: np.ndarray, image: np.ndarray | None, title: str) -> Any:
    """Train ids in the Cityscapes palette (255 black), over the image when there is one, with a legend."""
    from matplotlib.patches import Patch

    palette = seg_palette()
    extent = (0, seg.shape[1], seg.shape[0], 0)
    fig, ax = _figure(plt, seg.shape, title)
    if image is not None:
        ax.imshow(image, extent=extent)
    ax.imshow(palette[seg], alpha=1.0 if image is None else 0.55, extent=extent, interpolation="nearest")
    share = np.bincount(seg.ravel(), minlength=256) / seg.size
    handles = [
        Patch(facecolor=palette[c] / 255.0, edgecolor="grey", label=f"{_class_name(c)} {share[c]:.1%}")
        for c in np.argsort(-share, kind="stable")
        if share[c] > 0
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return fig


def _frame_figures(plt: Any, frame_id: str, data: dict[str, Rows]) -> Iterator[tuple[str, Any]]:
    """(file name, figure) of one frame's previews, each made only when the previous one is saved."""
    stem = frame_id.replace("/", "_")
    image = data["images"]["image"][1][0] if "image" in data.get("images", {}) else None
    for stage, datasets in data.items():
        for name, (meta, (values,)) in datasets.items():
            title = f"{frame_id}  {stage}/{name}"
            if meta.kind == "depth":
                yield f"{stem}_{stage}_{name}.png", depth_figure(plt, values, title)
            elif meta.kind == "seg":
                yield f"{stem}_{stage}_{name}.png", _seg_figure(plt, values, image, title)
    if image is not None and "depth" in data.get("lidar", {}):
        depth = data["lidar"]["depth"][1][0]
        yield (
            f"{stem}_lidar_overlay.png",
            _overlay_figure(plt, image, depth, f"{frame_id}  lidar/depth on image"),
        )


def write_previews(
    labels_dir: LabelFolder | str | Path, out_dir: str | Path, max_frames: int = 1
) -> list[Path]:
    """PNG previews of the first ``max_frames`` ok frames: depth maps, LiDAR over RGB, segmentation
    (``labels_dir`` a path or a ``LabelFolder``, whose statuses are used)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder, out_dir = LabelFolder.of(labels_dir), Path(out_dir)
    plan = folder.plan
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for shard, row, stages in _preview_frames(folder, plan, folder.stages(), max_frames):
        data = {stage: _read_rows(folder.shard_path(stage, shard), [row])[1] for stage in stages}
        for file_name, fig in _frame_figures(plt, shard.frame_ids[row], data):
            try:
                save_figure(fig, out_dir / file_name, dpi=120, bbox_inches="tight")
            finally:
                plt.close(fig)
            written.append(out_dir / file_name)
    return written
