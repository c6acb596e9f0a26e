"""The plan: which frames are labelled, their calibration, and their partition into shards.

Frames come from a KITTI raw tree or a rig tree (``edgedepth.labelgen.layout``); the plan records which.

``LABELS/plan.json`` is written once by ``edgedepth labelgen plan`` and read by every stage, the
bias fit and the student's data loader. It holds no timestamps, so re-planning the same inputs
gives a byte-identical file; ``plan_id`` (a hash of the content) tags every shard written for it.
Schema: see docs/shards.md.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

import cv2

from edgedepth.common import write_text_atomic
from edgedepth.labelgen.fields import MAX_IMAGE_SIDE
from edgedepth.labelgen.layout import AnyCalibration, AnyFrame, detect_layout, get_layout
from edgedepth.labelgen.plan_check import check_plan_data

PLAN_VERSION = 2
PLAN_FILE = "plan.json"


@dataclass(frozen=True)
class ShardPlan:
    """Frames of one drive or sequence (hence one image size) written together as one HDF5 file per
    stage. ``date`` keys the plan's calibrations (a KITTI date, or the rig sequence)."""

    index: int
    date: str
    drive: str
    image_size: tuple[int, int]  # (height, width)
    frame_ids: tuple[str, ...]
    layout: str = "kitti"

    @property
    def name(self) -> str:
        return f"shard-{self.index:05d}"

    @property
    def frames(self) -> list[AnyFrame]:
        """The frame objects (``edgedepth.labelgen.kitti.Frame`` or ``edgedepth.labelgen.rig.RigFrame``)."""
        layout = get_layout(self.layout)
        return [layout.frame_from_id(f) for f in self.frame_ids]


@dataclass(frozen=True)
class Plan:
    """Ordered frames, per-date (KITTI) or per-sequence (rig) calibration (or the reason it could not
    be read), and shards."""

    data_root: str
    shard_size: int
    selection: dict[str, object]
    calibrations: dict[str, AnyCalibration]
    calibration_errors: dict[str, str]
    shards: tuple[ShardPlan, ...]
    layout: str = "kitti"
    schema_version: int = PLAN_VERSION  # 1 for a plan read from a version-1 file (same plan_id)

    @property
    def kitti_root(self) -> str:
        """The data root (the name version-1 plans used; new code reads ``data_root``)."""
        return self.data_root

    @property
    def frame_ids(self) -> list[str]:
        return [f for shard in self.shards for f in shard.frame_ids]

    @functools.cached_property
    def plan_id(self) -> str:
        """SHA-256 of the plan's content (what shards record to prove they belong to it), computed
        once per plan object: the plan is frozen, and every per-shard task asks for it."""
        body = json.dumps(self._content(), sort_keys=True).encode()
        return hashlib.sha256(body).hexdigest()

    def depth_range(self) -> tuple[float, float] | None:
        """(min, max) metres spanning the depth ranges the calibrations declare, or None if none does."""
        ranges = [c.depth_range for c in self.calibrations.values() if c.depth_range is not None]
        if not ranges:
            return None
        return min(r[0] for r in ranges), max(r[1] for r in ranges)

    def _content(self) -> dict[str, object]:
        calibrations = {d: c.to_dict() for d, c in sorted(self.calibrations.items())}
        root: dict[str, object] = {"layout": self.layout, "data_root": self.data_root}
        if self.schema_version == 1:  # exactly what version 1 hashed, so its shards stay valid
            calibrations = {d: {k: v for k, v in c.items() if k != "doffs"} for d, c in calibrations.items()}
            root = {"kitti_root": self.data_root}
        return {
            "schema_version": self.schema_version,
            **root,
            "shard_size": self.shard_size,
            "selection": self.selection,
            "calibrations": calibrations,
            "calibration_errors": dict(sorted(self.calibration_errors.items())),
            "shards": [
                {
                    "index": s.index,
                    "name": s.name,
                    "date": s.date,
                    "drive": s.drive,
                    "image_size": list(s.image_size),
                    "frames": list(s.frame_ids),
                }
                for s in self.shards
            ],
        }

    def to_json(self) -> str:
        return json.dumps({**self._content(), "plan_id": self.plan_id}, indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "plan.json") -> Plan:
        """Parse and check a plan (``check_plan_data``): every problem is one ValueError line naming
        ``source`` and the field."""
        try:
            data = json.loads(text)
        except RecursionError:
            raise ValueError(f"{source}: malformed plan (JSON nested too deeply)") from None
        except ValueError as err:  # not JSON, or an integer of more than 4300 digits
            reason = str(err).splitlines()[0] if str(err) else ""
            raise ValueError(f"{source}: malformed plan ({type(err).__name__}: {reason})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{source}: not a plan (a JSON {type(data).__name__}, expected an object)")
        checked = check_plan_data(data, source)
        shards = tuple(ShardPlan(*shard, checked.layout) for shard in checked.shards)
        return cls(checked.data_root, checked.shard_size, checked.selection, checked.calibrations,
                   checked.calibration_errors, shards, checked.layout, checked.schema_version)  # fmt: skip


def plan_shards(
    data_root: str | Path,
    layout: str | None = None,
    drives: Sequence[str] | None = None,
    split_file: str | Path | None = None,
    shard_size: int = 64,
) -> Plan:
    """Select frames and partition them: consecutive frames of one drive or sequence, ``shard_size``
    at most.

    ``layout`` is "kitti" or "rig" (None: ``detect_layout``; a root that does not exist then gets
    KITTI's error, as before layouts). ``drives`` names KITTI drives (with or without ``_sync``) or
    rig sequences; ``split_file`` lists frames (``edgedepth.labelgen.layout.read_frame_list``). A calibration
    that cannot be read is recorded with its reason, and its frames fail in every stage.
    """
    if shard_size < 1:
        raise ValueError(f"shard size must be at least 1, got {shard_size}")
    root = Path(data_root).resolve()
    if layout is None:
        layout = detect_layout(root) if root.is_dir() else "kitti"
    chosen = get_layout(layout)
    frames = chosen.find_frames(root, drives, split_file)
    calibrations, errors = {}, {}
    for date in sorted({f.date for f in frames}):
        try:
            calibrations[date] = chosen.read_calibration(root, date)
        except (OSError, ValueError) as err:
            errors[date] = str(err)
    shards: list[ShardPlan] = []
    for (date, drive), group in groupby(frames, key=lambda f: (f.date, f.drive)):
        group = list(group)
        size = calibrations[date].image_size if date in calibrations else _image_size(root, group[0])
        ids = [f.frame_id for f in group]
        for start in range(0, len(ids), shard_size):
            batch = tuple(ids[start : start + shard_size])
            shards.append(ShardPlan(len(shards), date, drive, size, batch, layout))
    selection = {
        "drives": sorted(drives) if drives else None,
        "split_file": str(Path(split_file).resolve()) if split_file else None,
    }
    return Plan(str(root), shard_size, selection, calibrations, errors, tuple(shards), layout)


def _image_size(root: Path, frame: AnyFrame) -> tuple[int, int]:
    """Size of a frame's image, for drives whose calibration is missing (0x0 if unreadable or over
    ``MAX_IMAGE_SIDE``: such frames fail in every stage anyway)."""
    image = cv2.imread(str(frame.image_path(root)), cv2.IMREAD_UNCHANGED)
    if image is None or max(image.shape[:2]) > MAX_IMAGE_SIDE:
        return 0, 0
    return int(image.shape[0]), int(image.shape[1])


def write_plan(plan: Plan, labels_dir: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Write ``LABELS/plan.json``; an existing different plan is kept unless ``overwrite``.
    A version-1 file holding this same KITTI plan is left as it is (so are its shards).
    ``labels_dir`` may be a ``LabelFolder``: it sees the new file by its stat and reads it next."""
    path = Path(os.fspath(labels_dir)) / PLAN_FILE
    text = plan.to_json()
    if path.exists() and plan.layout == "kitti" and plan.schema_version != 1:
        as_v1 = dataclasses.replace(plan, schema_version=1).to_json()
        if path.read_text() == as_v1:  # the same plan in the version-1 file: kept, and its shards
            return path
    if path.exists() and not overwrite and path.read_text() != text:
        raise ValueError(
            f"{path}: a different plan exists; pass --overwrite to replace it (its shards go stale)"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)
    return path


def missing_inputs(plan: Plan, limit: int = 3) -> tuple[int, list[str]]:
    """Frames of the plan whose left image, right image or (KITTI) scan file does not exist: the count
    and the first ``limit`` as ``"<frame_id> (<missing file>)"``. Such frames fail in the stages."""
    root, count, first = Path(plan.data_root), 0, []
    layout = get_layout(plan.layout)
    for frame in (f for shard in plan.shards for f in shard.frames):
        absent = [p for p in layout.input_paths(frame, root) if not p.exists()]
        if absent:
            count += 1
            if len(first) < limit:
                first.append(f"{frame.frame_id} ({absent[0].relative_to(root)})")
    return count, first


def load_plan(labels_dir: str | Path) -> Plan:
    """Read ``LABELS/plan.json`` (one-line errors when it is missing or malformed)."""
    path = Path(labels_dir) / PLAN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no plan; run `edgedepth labelgen plan` first")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: malformed plan (not UTF-8 text: byte {err.start})") from None
    return Plan.from_json(text, str(path))


@functools.lru_cache(maxsize=4)
def _plan_at(labels_dir: str, mtime_ns: int) -> Plan:
    return load_plan(labels_dir)


def load_plan_cached(labels_dir: str | Path) -> Plan:
    """``load_plan``, parsed once per process while the file is unchanged (for per-shard tasks)."""
    path = Path(labels_dir) / PLAN_FILE
    if not path.is_file():
        return load_plan(labels_dir)  # raises its one-line error
    return _plan_at(str(labels_dir), path.stat().st_mtime_ns)
