"""Writing a rig tree (docs/rig.md): every file atomically, the same input giving the same bytes.

The importers (``edgedepth.labelgen.importers.middlebury``, ``edgedepth.labelgen.importers.kitti_depth``) write through
a ``RigWriter``, which counts what it wrote for the ``ImportReport`` they return.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgedepth.common import write_bytes_atomic, write_text_atomic
from edgedepth.labelgen.rig import CALIB_FILE
from edgedepth.labelgen.rig_arrays import encode_depth_png


def calibration_json(
    fx: float,
    fy: float,
    cx: float,
    cy: float,
    baseline_m: float,
    doffs_px: float = 0.0,
    depth_range_m: tuple[float, float] | None = None,
    t_cam_lidar: np.ndarray | None = None,
    notes: dict[str, str] | None = None,
) -> str:
    """The text of a calib.json (fixed key order, so the same values give the same bytes)."""
    data: dict[str, object] = {"fx": float(fx), "fy": float(fy), "cx": float(cx), "cy": float(cy),
                               "baseline_m": float(baseline_m), "doffs_px": float(doffs_px)}  # fmt: skip
    if depth_range_m is not None:
        data["depth_range_m"] = [float(depth_range_m[0]), float(depth_range_m[1])]
    if t_cam_lidar is not None:
        data["T_cam_lidar"] = np.asarray(t_cam_lidar, dtype=np.float64).tolist()
    data.update(notes or {})
    lines = []
    for key, value in data.items():
        if key == "T_cam_lidar":  # one matrix row a line
            rows = ",\n".join(f"  {json.dumps(row)}" for row in value)
            lines.append(f" {json.dumps(key)}: [\n{rows}\n ]")
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


@dataclass(frozen=True)
class ImportReport:
    """What an import wrote under ``out``: sequences, frames, and how many frames got each file."""

    out: Path
    sequences: tuple[str, ...]
    frames: int
    files: dict[str, int] = field(default_factory=dict)  # folder (left, right, lidar, ...) -> files
    splits: tuple[str, ...] = ()  # split files written, relative to out

    def format(self) -> str:
        """A short summary for the command line."""
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(self.files.items()))
        lines = [f"{self.out}: {self.frames} frame(s) in {len(self.sequences)} sequence(s); files: {kinds}"]
        lines += [f"  split list {self.out / name}" for name in self.splits]
        return "\n".join(lines)


class RigWriter:
    """Writes files of one rig tree under ``out``; ``counts`` holds files written per folder kind."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.counts: Counter[str] = Counter()

    def _path(self, sequence: str, kind: str, name: str) -> Path:
        self.counts[kind] += 1
        return self.out / sequence / kind / name

    def copy(self, sequence: str, kind: str, name: str, source: Path) -> Path:
        """``out/<sequence>/<kind>/<name>`` as a byte copy of ``source``."""
        return write_bytes_atomic(self._path(sequence, kind, name), Path(source).read_bytes())

    def points(self, sequence: str, name: str, points: np.ndarray) -> Path:
        """``lidar/<name>.npy``: (N, C) float32 points in the LiDAR frame."""
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(points, dtype=np.float32), allow_pickle=False)
        return write_bytes_atomic(self._path(sequence, "lidar", f"{name}.npy"), buffer.getvalue())

    def depth(self, sequence: str, kind: str, name: str, depth: np.ndarray) -> Path:
        """``<kind>/<name>.png`` (lidar_depth or depth_gt): metres as a 16-bit PNG (x 256, 0 = none)."""
        return write_bytes_atomic(self._path(sequence, kind, f"{name}.png"), encode_depth_png(depth))

    def calibration(self, sequence: str, text: str) -> Path:
        """``<sequence>/calib.json`` (text from ``calibration_json``)."""
        return write_text_atomic(self.out / sequence / CALIB_FILE, text)

    def text(self, relative: str, text: str) -> Path:
        return write_text_atomic(self.out / relative, text)

    def report(self, sequences: list[str], frames: int, splits: tuple[str, ...] = ()) -> ImportReport:
        return ImportReport(self.out, tuple(sequences), frames, dict(self.counts), splits)


__all__ = ["ImportReport", "RigWriter", "calibration_json"]
