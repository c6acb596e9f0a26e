"""KITTI Eigen-split evaluation of a student checkpoint (the library side of ``edgedepth student eval``).

For every frame of a split: read the camera image, pre-process it exactly as in training, predict
metric depth, build the frame's ground truth (raw LiDAR with the public protocol, or KITTI's annotated
maps), score it with ``student.metrics.evaluate_image`` and average over frames. Frames without
ground truth are listed, never dropped silently. The protocol and the output files are described in
docs/evaluation.md.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from labelgen.atomic import write_text_atomic
from labelgen.checkpoints import sha256_file
from labelgen.kitti import (
    CAM_TO_CAM,
    VELO_TO_CAM,
    Calibration,
    Frame,
    read_calibration,
    read_image,
    read_split_file,
    read_velodyne,
)
from student.checkpoint import load_student
from student.data import preprocess_image
from student.groundtruth import annotated_groundtruth_path, lidar_groundtruth, read_annotated
from student.metrics import (
    MAX_DEPTH,
    METRIC_NAMES,
    MIN_DEPTH,
    RESIZE_MODES,
    crop_mask,
    evaluate_image,
    normalise_crop,
)
from student.model import check_input_size

GT_KINDS = ("lidar", "annotated")
PACKAGED_SPLITS = {"eigen": "eigen_test.txt", "eigen_benchmark": "eigen_benchmark_test.txt"}
METRIC_LABELS = {
    "abs_rel": "Abs Rel",
    "sq_rel": "Sq Rel",
    "rmse": "RMSE",
    "rmse_log": "RMSE log",
    "a1": "d<1.25",
    "a2": "d<1.25^2",
    "a3": "d<1.25^3",
}
CSV_COLUMNS = ("frame_id", "side", *METRIC_NAMES, "gt_pixels")
_SIDE_CAM = {"l": 2, "r": 3}


@dataclass(frozen=True)
class SplitEntry:
    """One line of a split file: the frame and its side (``l`` = camera 2, ``r`` = camera 3)."""

    frame: Frame
    side: str = "l"

    @property
    def cam(self) -> int:
        return _SIDE_CAM[self.side]

    @property
    def frame_id(self) -> str:
        return self.frame.frame_id


def resolve_split(split: str | Path) -> tuple[str, Path]:
    """(name, file) of a split: ``eigen`` / ``eigen_benchmark`` are packaged, anything else is a file path."""
    name = str(split)
    if name in PACKAGED_SPLITS:
        path = Path(str(resources.files("student") / "splits" / PACKAGED_SPLITS[name]))
        if not path.is_file():
            raise FileNotFoundError(f"{path}: packaged split file missing (broken install?)")
        return name, path
    path = Path(split)
    if not path.is_file():
        known = ", ".join(PACKAGED_SPLITS)
        raise FileNotFoundError(f"{path}: split file not found (packaged splits: {known})")
    return path.stem, path


def read_split_entries(path: str | Path) -> list[SplitEntry]:
    """The split's lines in order (duplicates kept), with their side; format checks by read_split_file."""
    path = Path(path)
    frames = read_split_file(path)
    lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    entries = []
    for number, (frame, parts) in enumerate(zip(frames, lines, strict=True), start=1):
        side = parts[2].lower() if len(parts) == 3 else "l"
        if side not in _SIDE_CAM:
            raise ValueError(f"{path}: line {number}: side must be l or r, got {parts[2]!r}")
        entries.append(SplitEntry(frame, side))
    if not entries:
        raise ValueError(f"{path}: split file lists no frames")
    return entries


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
        lines = [
            header,
            values,
            f"{self.frames} frames, split {prov.get('split')}, gt {prov.get('gt')}, crop {prov.get('crop')}",
        ]
        if self.no_gt:
            lines.append(
                f"{len(self.no_gt)} frames without ground truth (not scored): {', '.join(self.no_gt)}"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """What eval.json holds: the seven metrics, frames, no_gt, then the provenance keys."""
        return {**self.metrics, "frames": self.frames, "no_gt": list(self.no_gt), **self.provenance}

    def save(self, out_json: str | Path) -> tuple[Path, Path]:
        """Write eval.json and ``<stem>_frames.csv`` beside it, each atomically; returns both paths."""
        out_json = Path(out_json)
        csv_path = out_json.with_name(f"{out_json.stem}_frames.csv")
        data = {**self.to_dict(), "per_frame_csv": csv_path.name}
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in self.per_frame:
            writer.writerow(
                {key: (f"{row[key]:.9g}" if key in METRIC_NAMES else row[key]) for key in CSV_COLUMNS}
            )
        write_text_atomic(csv_path, buffer.getvalue())
        write_text_atomic(out_json, json.dumps(data, indent=2) + "\n")
        return out_json, csv_path


def _check_choice(value: str, choices: Sequence[str], what: str) -> str:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")
    return value


def _missing_inputs(entry: SplitEntry, root: Path, gt: str) -> bool:
    if not entry.frame.image_path(root, entry.cam).is_file():
        return True
    if gt == "lidar":
        date_dir = root / entry.frame.date
        needed = (entry.frame.velodyne_path(root), date_dir / CAM_TO_CAM, date_dir / VELO_TO_CAM)
        return not all(path.is_file() for path in needed)
    return False


def _batches(items: Sequence[SplitEntry], size: int) -> Iterator[Sequence[SplitEntry]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def evaluate_checkpoint(
    checkpoint: str | Path,
    kitti_root: str | Path,
    split: str | Path = "eigen",
    gt: str = "lidar",
    variant: str | None = None,
    crop: str | bool = "garg",
    size: tuple[int, int] | None = None,
    device: str | torch.device = "cpu",
    annotated_root: str | Path | None = None,
    batch_size: int = 4,
    progress: bool = True,
    resize_in: str = "depth",
) -> EvalResult:
    """Evaluate a student checkpoint on a KITTI split; see the module docstring and docs/evaluation.md.

    ``gt="lidar"`` scores against the public raw-LiDAR ground truth (``lidar_groundtruth``),
    ``gt="annotated"`` against KITTI's annotated maps (``annotated_groundtruth_path``). Frames with
    side ``r`` use camera 3 (image_03 and its ground truth), as monodepth2's loader does. The input
    size is ``size`` (h, w) or the checkpoint's ``input_size``; no median scaling.
    """
    gt = _check_choice(gt, GT_KINDS, "ground truth kind")
    resize_in = _check_choice(resize_in, RESIZE_MODES, "resize mode")
    crop = normalise_crop(crop)
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    root = Path(kitti_root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: KITTI root folder not found")
    if annotated_root is not None and not Path(annotated_root).is_dir():
        raise FileNotFoundError(f"{annotated_root}: annotated depth folder not found")
    split_name, split_file = resolve_split(split)
    entries = read_split_entries(split_file)

    missing = [entry.frame_id for entry in entries if _missing_inputs(entry, root, gt)]
    if missing:
        raise ValueError(
            f"{split_file}: {len(missing)} of {len(entries)} frames not found under {root} "
            f"(first: {', '.join(missing[:3])})"
        )

    model, config = load_student(checkpoint, variant, device)
    if size is None:
        size = config.input_size
    try:
        height, width = (int(side) for side in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be (height, width) in pixels, got {size!r}") from None
    size = (height, width)
    check_input_size(*size)

    calibrations: dict[str, Calibration] = {}
    rows: list[dict[str, Any]] = []
    no_gt: list[str] = []
    suffixes: set[str] = set()
    with tqdm(total=len(entries), desc="eval", unit="frame", disable=not progress) as bar:
        for batch in _batches(entries, batch_size):
            paths = [entry.frame.image_path(root, entry.cam) for entry in batch]
            suffixes.update(path.suffix.lower().lstrip(".") for path in paths)
            inputs = torch.stack(
                [preprocess_image(read_image(p), size, config.mean, config.std) for p in paths]
            )
            with torch.inference_mode():
                depth = model(inputs.to(device))
            predictions = depth.float().cpu().numpy()[:, 0]
            for entry, prediction in zip(batch, predictions, strict=True):
                gt_map = _groundtruth(entry, root, gt, annotated_root, calibrations)
                errors = (
                    None
                    if gt_map is None
                    else evaluate_image(prediction, gt_map, crop=crop, resize_in=resize_in)
                )
                if errors is None:
                    no_gt.append(entry.frame_id)
                else:
                    valid = (gt_map > MIN_DEPTH) & (gt_map <= MAX_DEPTH) & crop_mask(crop, *gt_map.shape)
                    rows.append(
                        {
                            "frame_id": entry.frame_id,
                            "side": entry.side,
                            **errors,
                            "gt_pixels": int(valid.sum()),
                        }
                    )
                bar.update(1)

    if not rows:
        raise ValueError(
            f"{split_file}: none of the {len(entries)} frames has ground truth (gt {gt}, crop {crop})"
        )
    metrics = {name: float(np.mean([row[name] for row in rows])) for name in METRIC_NAMES}
    provenance = {
        "checkpoint": str(Path(checkpoint).resolve()),
        "checkpoint_sha256": sha256_file(checkpoint),
        "variant": config.variant,
        "input_size": list(size),
        "split": split_name,
        "split_file": str(split_file),
        "split_lines": len(entries),
        "gt": gt,
        "crop": crop,
        "resize_in": resize_in,
        "median_scaling": False,
        "min_depth": MIN_DEPTH,
        "max_depth": MAX_DEPTH,
        "gt_mask": f"{MIN_DEPTH:g} < gt <= {MAX_DEPTH:g}",
        "image_formats": sorted(suffixes),
        "kitti_root": str(root.resolve()),
        "annotated_root": str(Path(annotated_root).resolve()) if annotated_root is not None else None,
    }
    return EvalResult(metrics, len(rows), tuple(rows), tuple(no_gt), provenance)


def _groundtruth(
    entry: SplitEntry,
    root: Path,
    gt: str,
    annotated_root: str | Path | None,
    calibrations: dict[str, Calibration],
) -> np.ndarray | None:
    frame = entry.frame
    if gt == "annotated":
        path = annotated_groundtruth_path(root, frame, annotated_root, cam=entry.cam)
        return None if path is None else read_annotated(path)
    if frame.date not in calibrations:
        calibrations[frame.date] = read_calibration(root / frame.date)
    scan = frame.velodyne_path(root)
    if scan.is_file() and scan.stat().st_size == 0:
        return None  # an empty scan: the frame has no ground truth (listed, not scored)
    return lidar_groundtruth(read_velodyne(scan), calibrations[frame.date], cam=entry.cam)


__all__ = [
    "CSV_COLUMNS",
    "GT_KINDS",
    "METRIC_LABELS",
    "PACKAGED_SPLITS",
    "EvalResult",
    "SplitEntry",
    "evaluate_checkpoint",
    "read_split_entries",
    "resolve_split",
]
