"""Scoring depth against ground truth: a student checkpoint (``student eval``), a teacher's label
shards (``labelgen score``) or a constant depth (the baseline rows of ``student ablate``).

Every scorer walks an ``EvalSet`` (``edgedepth.student.evaluate.frames``: the frames, their ground truth, crop and
depth range, for KITTI and rig data), computes the KITTI metrics per frame with
``edgedepth.student.evaluate.metrics.evaluate_image`` and averages them over frames. Frames without ground truth are
listed, never dropped silently. With ``median_scaling`` each prediction is scaled by
median(gt) / median(prediction) over the scored pixels first: the self-supervised literature's
protocol, which measures depth structure but not scale. The protocol and the output files are
described in docs/evaluation.md.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from edgedepth.common import check_choice, check_writable, sha256_file, write_text_atomic
from edgedepth.labelgen import read_image
from edgedepth.student.evaluate.frames import EvalFrame, EvalSet, resolve_split
from edgedepth.student.evaluate.metrics import METRIC_NAMES, RESIZE_MODES, crop_mask, evaluate_image
from edgedepth.student.model import MAX_BATCH_SIZE, check_input_size, load_student, preprocess_image

GT_KINDS = ("lidar", "annotated", "depth_gt")
METRIC_LABELS = {
    "abs_rel": "Abs Rel",
    "sq_rel": "Sq Rel",
    "rmse": "RMSE",
    "rmse_log": "RMSE log",
    "a1": "d<1.25",
    "a2": "d<1.25^2",
    "a3": "d<1.25^3",
}
CSV_COLUMNS = ("frame_id", "side", *METRIC_NAMES, "gt_pixels", "coverage")

Predictions = Iterable[tuple[EvalFrame, np.ndarray]]
"""(frame, predicted depth (h, w) metres, 0 = no prediction there) pairs, in any order."""


@dataclass(frozen=True)
class EvalResult:
    """Mean metrics over the scored frames, the per-frame rows, the frames without GT, and provenance."""

    metrics: dict[str, float]
    frames: int
    per_frame: tuple[dict[str, Any], ...]
    no_gt: tuple[str, ...]
    provenance: dict[str, Any] = field(default_factory=dict)

    def format_table(self) -> str:
        """The Table IV layout: metric labels, one row of values (3 decimals), a summary, the no-GT list."""
        widths = [max(len(METRIC_LABELS[name]), 7) for name in METRIC_NAMES]
        header = "  ".join(f"{METRIC_LABELS[n]:>{w}}" for n, w in zip(METRIC_NAMES, widths, strict=True))
        values = "  ".join(f"{self.metrics[n]:>{w}.3f}" for n, w in zip(METRIC_NAMES, widths, strict=True))
        prov = self.provenance
        summary = (
            f"{self.frames} frames, split {prov.get('split')}, gt {prov.get('gt')}, crop {prov.get('crop')}"
        )
        if prov.get("median_scaling"):
            summary += ", median-scaled per frame"
        if prov.get("coverage") is not None and prov["coverage"] < 1:
            summary += f", on the {prov['coverage']:.1%} of ground-truth pixels the prediction covers"
        lines = [header, values, summary]
        if self.no_gt:
            lines.append(
                f"{len(self.no_gt)} frames without ground truth (not scored): {', '.join(self.no_gt)}"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """What eval.json holds: the seven metrics, frames, no_gt, then the provenance keys."""
        return {**self.metrics, "frames": self.frames, "no_gt": list(self.no_gt), **self.provenance}

    @staticmethod
    def outputs(out_json: str | Path) -> tuple[Path, Path]:
        """(eval.json, its per-frame CSV) for ``out_json``."""
        out_json = Path(out_json)
        return out_json, out_json.with_name(f"{out_json.stem}_frames.csv")

    @staticmethod
    def check_writable(out_json: str | Path) -> None:
        """Raise the OS error naming the file unless both outputs could be written (before the work)."""
        for path in EvalResult.outputs(out_json):
            check_writable(path)

    def save(self, out_json: str | Path) -> tuple[Path, Path]:
        """Write eval.json and ``<stem>_frames.csv`` beside it, each atomically; returns both paths."""
        out_json, csv_path = self.outputs(out_json)
        data = {**self.to_dict(), "per_frame_csv": csv_path.name}
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in self.per_frame:
            writer.writerow(
                {key: (f"{row[key]:.9g}" if key in METRIC_NAMES else row.get(key, "")) for key in CSV_COLUMNS}
            )
        write_text_atomic(csv_path, buffer.getvalue())
        write_text_atomic(out_json, json.dumps(data, indent=2) + "\n")
        return out_json, csv_path


def score_predictions(
    eval_set: EvalSet,
    predictions: Predictions,
    median_scaling: bool = False,
    resize_in: str = "depth",
) -> EvalResult:
    """Score predictions of ``eval_set``'s frames; frames without ground truth go to ``no_gt``.

    A prediction is resized to its ground truth (``resize_in``: as depth or disparity); pixels where
    it is 0 (a teacher's holes) are left out and the covered share is recorded as ``coverage``.
    """
    resize_in = check_choice(resize_in, RESIZE_MODES, "resize mode")
    rows, no_gt, scored, covered = [], [], 0, 0
    for frame, prediction in predictions:
        gt = eval_set.groundtruth(frame)
        lo, hi = eval_set.depth_range(frame)
        valid = None if gt is None else (gt > lo) & (gt <= hi) & crop_mask(eval_set.crop, *gt.shape)
        if valid is None or not valid.any():
            no_gt.append(frame.frame_id)
            continue
        holes = _holes(prediction, gt.shape)
        if holes is not None:
            scored_here = valid & ~holes
            gt = np.where(holes, 0, gt)
        else:
            scored_here = valid
        errors = evaluate_image(
            prediction, gt, crop=eval_set.crop, resize_in=resize_in, median_scaling=median_scaling,
            min_depth=lo, max_depth=hi,
        ) if scored_here.any() else None  # fmt: skip
        scored, covered = scored + int(valid.sum()), covered + int(scored_here.sum())
        if errors is None:
            no_gt.append(frame.frame_id)  # the prediction covers none of its ground truth
            continue
        rows.append(
            {
                "frame_id": frame.frame_id,
                "side": frame.side,
                **errors,
                "gt_pixels": int(scored_here.sum()),
                "coverage": float(scored_here.sum() / valid.sum()),
            }
        )
    where = eval_set.split_file or eval_set.root
    if not rows:
        raise ValueError(
            f"{where}: none of the {len(eval_set)} frames has ground truth "
            f"(gt {eval_set.gt}, crop {eval_set.crop})"
        )
    metrics = {name: float(np.mean([row[name] for row in rows])) for name in METRIC_NAMES}
    bad = [name for name, value in metrics.items() if not np.isfinite(value)]
    if bad:  # a figure that is not a number is never reported as a result
        raise ValueError(f"{where}: the {bad[0]} over {len(rows)} frames is {metrics[bad[0]]}, not a number")
    provenance = {
        "protocol": eval_set.describe() + (", median-scaled per frame" if median_scaling else ""),
        **eval_set.provenance(),
        "resize_in": resize_in,
        "median_scaling": bool(median_scaling),
        "depth_ranges": [list(r) for r in sorted({eval_set.depth_range(f) for f in eval_set.frames})],
        "gt_mask": "min < gt <= max of each frame's depth range",
        "coverage": covered / scored if scored else 0.0,
    }
    return EvalResult(metrics, len(rows), tuple(rows), tuple(no_gt), provenance)


def _holes(prediction: np.ndarray, shape: tuple[int, int]) -> np.ndarray | None:
    """Ground-truth-size mask of where a prediction has no value (0), or None when it has none."""
    if np.all(prediction > 0):
        return None
    if prediction.shape != tuple(shape):
        raise ValueError(
            f"a prediction with holes must have the ground truth's size {shape}, got {prediction.shape}"
        )
    return ~(prediction > 0)


def _batches(items: Sequence[EvalFrame], size: int) -> Iterator[Sequence[EvalFrame]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def checkpoint_predictions(
    model: torch.nn.Module,
    config: Any,
    eval_set: EvalSet,
    size: tuple[int, int],
    device: str | torch.device = "cpu",
    batch_size: int = 4,
    progress: bool = True,
    formats: set[str] | None = None,
    source: str | Path = "the network",
) -> Iterator[tuple[EvalFrame, np.ndarray]]:
    """A model's depth for every frame: the image pre-processed exactly as in training. Depth that
    is not finite is refused (a ValueError naming ``source`` and the frame), never scored."""
    with tqdm(total=len(eval_set), desc="eval", unit="frame", disable=not progress) as bar:
        for batch in _batches(eval_set.frames, batch_size):
            if formats is not None:
                formats.update(frame.image.suffix.lower().lstrip(".") for frame in batch)
            inputs = torch.stack(
                [preprocess_image(read_image(f.image), size, config.mean, config.std) for f in batch]
            )
            with torch.inference_mode():
                depth = model(inputs.to(device))
            for frame, prediction in zip(batch, depth.float().cpu().numpy()[:, 0], strict=True):
                if not np.isfinite(prediction).all():
                    raise ValueError(
                        f"{source}: predicts NaN or infinite depth for {frame.image}; the checkpoint is "
                        "damaged or its training diverged"
                    )
                yield frame, prediction
                bar.update(1)


def evaluate_checkpoint(
    checkpoint: str | Path,
    data_root: str | Path,
    split: str | Path | None = None,
    gt: str | None = None,
    variant: str | None = None,
    crop: str | bool | None = None,
    size: tuple[int, int] | None = None,
    device: str | torch.device = "cpu",
    annotated_root: str | Path | None = None,
    batch_size: int = 4,
    progress: bool = True,
    resize_in: str = "depth",
    median_scaling: bool = False,
    layout: str | None = None,
) -> EvalResult:
    """Evaluate a student checkpoint on a data root's frames; see ``edgedepth.student.evaluate.frames``.

    KITTI: ``split`` (default ``eigen``), ``gt`` ``lidar`` (default, the public raw-LiDAR protocol)
    or ``annotated``, Garg crop; frames with side ``r`` use camera 3. Rig layout: ``split`` a
    frame-list file (default: every frame with ground truth), ``gt`` ``depth_gt`` (default) or
    ``lidar``, no crop, the sequences' depth ranges. The input size is ``size`` (h, w) or the
    checkpoint's ``input_size``.
    """
    if gt is not None:
        check_choice(gt, GT_KINDS, "ground truth kind")
    check_choice(resize_in, RESIZE_MODES, "resize mode")
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"--batch-size must be 1..{MAX_BATCH_SIZE}, got {batch_size}")
    eval_set = EvalSet(data_root, split, gt, crop, layout, annotated_root)
    batch_size = min(batch_size, max(len(eval_set), 1))  # a larger batch holds no more frames
    model, config = load_student(checkpoint, variant, device)
    try:
        height, width = (int(side) for side in (size or config.input_size))
    except (TypeError, ValueError):
        raise ValueError(f"size must be (height, width) in pixels, got {size!r}") from None
    check_input_size(height, width)
    formats: set[str] = set()
    predictions = checkpoint_predictions(
        model, config, eval_set, (height, width), device, batch_size, progress, formats, checkpoint
    )
    result = score_predictions(eval_set, predictions, median_scaling, resize_in)
    provenance = {
        "checkpoint": str(Path(checkpoint).resolve()),
        "checkpoint_sha256": sha256_file(checkpoint),
        "variant": config.variant,
        "input_size": [height, width],
        **result.provenance,
        "image_formats": sorted(formats),
        "kitti_root": str(eval_set.root.resolve()) if eval_set.layout == "kitti" else None,
    }
    return EvalResult(result.metrics, result.frames, result.per_frame, result.no_gt, provenance)


def constant_predictions(eval_set: EvalSet, depth_m: float) -> Iterator[tuple[EvalFrame, np.ndarray]]:
    """The same depth everywhere, for every frame (a baseline: the training labels' median, say)."""
    if not depth_m > 0:
        raise ValueError(f"a constant depth must be positive, got {depth_m}")
    for frame in eval_set.frames:
        yield frame, np.full((1, 1), depth_m, dtype=np.float32)


def score_constant(eval_set: EvalSet, depth_m: float, median_scaling: bool = False) -> EvalResult:
    """Metrics of predicting ``depth_m`` metres at every pixel; median-scaled, this is predicting
    each frame's ground-truth median everywhere (the per-image-median constant)."""
    result = score_predictions(eval_set, constant_predictions(eval_set, depth_m), median_scaling)
    return EvalResult(
        result.metrics,
        result.frames,
        result.per_frame,
        result.no_gt,
        {**result.provenance, "predictor": f"constant {depth_m:.6g} m"},
    )


def score_teacher(
    labels_dir: str | Path,
    stage: str,
    eval_set: EvalSet | None = None,
    median_scaling: bool = False,
    progress: bool = True,
    lut: Any = None,
) -> EvalResult:
    """Score a label stage's depth (``sgbm``, ``psmnet``, ``<teacher>_corrected``, ``lidar``) against
    ground truth, on the pixels it labels (its coverage of the ground truth is reported); with
    ``lut`` (a bias table or its file) the depth is corrected by it first, as training does.

    ``eval_set`` defaults to every frame of the plan's data root with ground truth; frames of the
    eval set that the label folder lacks, or whose label failed, are listed as without a label.
    """
    from edgedepth.calib import apply_lut, load_lut
    from edgedepth.labelgen import LabelFolder, LabelReader

    table = load_lut(lut) if isinstance(lut, str | Path) else lut
    folder = LabelFolder.of(labels_dir)
    plan = folder.plan
    if not folder.has_stage(stage):
        raise ValueError(f"{folder.given / stage}: no such label stage to score")
    if eval_set is None:
        eval_set = EvalSet(plan.data_root, layout=plan.layout)
    if eval_set.layout != plan.layout:
        raise ValueError(f"{folder.given}: {plan.layout} labels cannot be scored on {eval_set.layout} data")
    reader = LabelReader(folder, [stage])
    rows = {fid: i for i, fid in enumerate(reader.frame_ids)}
    ok = reader.all_ok()
    wanted = [f for f in eval_set.frames if f.side == "l"]
    absent = [f.frame_id for f in wanted if f.frame_id not in rows or not ok[rows[f.frame_id]]]

    def predictions() -> Iterator[tuple[EvalFrame, np.ndarray]]:
        for frame in tqdm(wanted, desc=f"score {stage}", unit="frame", disable=not progress):
            if frame.frame_id in rows and ok[rows[frame.frame_id]]:
                depth = np.asarray(reader[rows[frame.frame_id]][f"{stage}/depth"], dtype=np.float32)
                if table is not None:
                    depth = apply_lut(depth, table)
                yield frame, np.where(np.isfinite(depth) & (depth > 0), depth, 0).astype(np.float32)

    try:
        result = score_predictions(eval_set, predictions(), median_scaling)
    finally:
        reader.close()
    provenance = {
        **result.provenance,
        "labels_dir": str(folder.given),
        "stage": stage,
        "lut_sha256": table.sha256 if table is not None else None,
        "no_label": absent,
    }
    return EvalResult(result.metrics, result.frames, result.per_frame, result.no_gt, provenance)


__all__ = [
    "CSV_COLUMNS",
    "GT_KINDS",
    "METRIC_LABELS",
    "EvalResult",
    "checkpoint_predictions",
    "constant_predictions",
    "evaluate_checkpoint",
    "resolve_split",
    "score_constant",
    "score_predictions",
    "score_teacher",
]
