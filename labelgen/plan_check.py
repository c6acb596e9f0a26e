"""``plan.json`` checked at the door: types, ranges, uniqueness, and every frame inside the data root.

``load_plan`` runs this in the driver, so a hand-edited or crafted plan fails with one line naming
the file and the field (``LABELS/plan.json: malformed plan: shards[3].frames[7]: ...``) before any
dask task starts, instead of inside every worker. Frame ids are checked by their syntax per layout
(``edgedepth.labelgen.kitti.frame_id_problem``, ``edgedepth.labelgen.rig.frame_id_problem``), which keeps every input
path of every frame inside ``data_root`` without a file-system call: about 1.5 microseconds a frame.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import NoReturn

from edgedepth.labelgen.fields import clip, image_size_field
from edgedepth.labelgen.layout import LAYOUTS, AnyCalibration, Layout, get_layout

PLAN_VERSIONS = (1, 2)  # version 1: KITTI only, the root under "kitti_root"


class PlanError(ValueError):
    """A ``plan.json`` that is not a plan this toolkit wrote: the message names the file and field."""


class _Fields:
    """One-line failures naming ``source`` and the field."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, field: str, problem: str) -> NoReturn:
        raise PlanError(f"{self.source}: malformed plan: {field}: {problem}")

    def get(self, data: dict, key: str, where: str = "") -> object:
        if key not in data:
            self.fail(f"{where}{key}", "missing")
        return data[key]

    def obj(self, value: object, field: str) -> dict:
        if not isinstance(value, dict):
            self.fail(field, f"not a JSON object (got {clip(value)})")
        return value

    def array(self, value: object, field: str) -> list:
        if not isinstance(value, list):
            self.fail(field, f"not a JSON array (got {clip(value)})")
        return value

    def text(self, value: object, field: str) -> str:
        if not isinstance(value, str):
            self.fail(field, f"not a string (got {clip(value)})")
        return value

    def integer(self, value: object, field: str, minimum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(field, f"not an integer (got {clip(value)})")
        if value < minimum:
            self.fail(field, f"{clip(value)} is less than {minimum}")
        return value


@dataclass(frozen=True)
class CheckedPlan:
    """The fields of a checked ``plan.json`` (``edgedepth.labelgen.plan.Plan`` is built from them; this module
    does not import it, so the two stand in one direction). ``shards`` holds each shard's
    (index, date, drive, (height, width), frame ids)."""

    data_root: str
    shard_size: int
    selection: dict[str, object]
    calibrations: dict[str, AnyCalibration]
    calibration_errors: dict[str, str]
    shards: tuple[tuple[int, str, str, tuple[int, int], tuple[str, ...]], ...]
    layout: str
    schema_version: int


def check_plan_data(data: dict, source: str) -> CheckedPlan:
    """The fields a decoded ``plan.json`` object describes, once every field is checked:

    - ``schema_version`` 1 or 2; ``layout`` known; ``data_root`` (``kitti_root``) an absolute path;
    - ``shard_size`` a positive integer; ``selection`` an object; every calibration of the layout's
      types and shapes, keyed by its own date or sequence, finite and plausible;
    - ``shards[i].index == i`` (so no two shards write one file) and its ``name``; its ``date`` has a
      calibration or a recorded calibration error; ``image_size`` whole pixels in range (the
      calibration's); 1..``shard_size`` frames, each a frame id of the layout, of the shard's drive,
      and listed once in the whole plan.
    """
    fields = _Fields(source)
    version = data.get("schema_version")
    if isinstance(version, bool) or version not in PLAN_VERSIONS:
        raise PlanError(f"{source}: plan schema version {clip(version)} is not one of {PLAN_VERSIONS}")
    if version == 1:
        layout_name, root_key = "kitti", "kitti_root"
    else:
        layout_name, root_key = fields.get(data, "layout"), "data_root"
        if not isinstance(layout_name, str) or layout_name not in LAYOUTS:
            raise PlanError(
                f"{source}: unknown layout {clip(layout_name)}; expected one of {', '.join(LAYOUTS)}"
            )
    layout = get_layout(layout_name)
    data_root = fields.text(fields.get(data, root_key), root_key)
    if not os.path.isabs(data_root) or not data_root.isprintable():
        fields.fail(root_key, f"{clip(data_root)} is not an absolute path")
    shard_size = fields.integer(fields.get(data, "shard_size"), "shard_size", 1)
    selection = _selection(fields, fields.get(data, "selection"))
    calibrations = _calibrations(fields, layout, fields.get(data, "calibrations"))
    errors = fields.obj(fields.get(data, "calibration_errors"), "calibration_errors")
    for date, reason in errors.items():
        fields.text(reason, f"calibration_errors[{date}]")
    shards = _shards(fields, layout, data, shard_size, calibrations, errors)
    for date, calib in calibrations.items():
        layout.check_calibration(calib, f"{source} ({date})")  # finite and plausible
    return CheckedPlan(
        data_root, shard_size, selection, calibrations, dict(errors), shards, layout_name, version
    )


def _selection(fields: _Fields, value: object) -> dict[str, object]:
    selection = fields.obj(value, "selection")
    drives = selection.get("drives")
    if drives is not None:
        for i, drive in enumerate(fields.array(drives, "selection.drives")):
            fields.text(drive, f"selection.drives[{i}]")
    if selection.get("split_file") is not None:
        fields.text(selection["split_file"], "selection.split_file")
    return selection


def _calibrations(fields: _Fields, layout: Layout, value: object) -> dict[str, AnyCalibration]:
    calibrations = {}
    for key, entry in fields.obj(value, "calibrations").items():
        try:
            calib = layout.calibration_from_dict(fields.obj(entry, f"calibrations[{key}]"))
        except PlanError:
            raise
        except ValueError as err:
            fields.fail(f"calibrations[{key}]", str(err))
        if calib.date != key:
            fields.fail(f"calibrations[{key}]", f"holds the calibration of {clip(calib.date)}")
        calibrations[key] = calib
    return calibrations


def _shards(
    fields: _Fields,
    layout: Layout,
    data: dict,
    shard_size: int,
    calibrations: dict[str, AnyCalibration],
    errors: dict,
) -> tuple[tuple[int, str, str, tuple[int, int], tuple[str, ...]], ...]:
    entries = fields.array(fields.get(data, "shards"), "shards")
    if not entries:
        fields.fail("shards", "empty (a plan holds at least one frame)")
    seen: dict[str, tuple[int, int]] = {}  # frame id -> (shard, position) where it was listed first
    shards = []
    for i, entry in enumerate(entries):
        where = f"shards[{i}]"
        entry = fields.obj(entry, where)
        index = fields.integer(fields.get(entry, "index", f"{where}."), f"{where}.index", 0)
        if index != i:
            fields.fail(f"{where}.index", f"{clip(index)}, expected {i} (its position: one index, one file)")
        name = fields.get(entry, "name", f"{where}.")
        if name != f"shard-{index:05d}":
            fields.fail(f"{where}.name", f"{clip(name)}, expected 'shard-{index:05d}'")
        date = fields.text(fields.get(entry, "date", f"{where}."), f"{where}.date")
        drive = fields.text(fields.get(entry, "drive", f"{where}."), f"{where}.drive")
        if date not in calibrations and date not in errors:
            fields.fail(f"{where}.date", f"{clip(date)} has neither a calibration nor a calibration error")
        try:
            size = image_size_field(fields.get(entry, "image_size", f"{where}."), date not in calibrations)
        except ValueError as err:
            fields.fail(f"{where}.image_size", str(err).removeprefix("image_size: "))
        if date in calibrations and size != tuple(calibrations[date].image_size):
            fields.fail(f"{where}.image_size", f"{size} differs from calibrations[{date}]'s")
        prefix = layout.frame_prefix(date, drive)
        if prefix is None:
            fields.fail(
                where, f"date {clip(date)} and drive {clip(drive)} differ (a rig shard's are its sequence)"
            )
        frames = fields.array(fields.get(entry, "frames", f"{where}."), f"{where}.frames")
        if not 0 < len(frames) <= shard_size:
            fields.fail(f"{where}.frames", f"{len(frames)} frames, expected 1 to shard_size {shard_size}")
        for j, frame_id in enumerate(frames):
            problem = layout.frame_id_problem(frame_id)
            if problem:
                fields.fail(f"{where}.frames[{j}]", problem)
            if not frame_id.startswith(prefix):
                fields.fail(f"{where}.frames[{j}]", f"{clip(frame_id)} is not a frame of {clip(prefix[:-1])}")
            if frame_id in seen:
                first = "shards[{}].frames[{}]".format(*seen[frame_id])
                fields.fail(f"{where}.frames[{j}]", f"{clip(frame_id)} is listed twice (first as {first})")
            seen[frame_id] = (i, j)
        shards.append((index, date, drive, size, tuple(frames)))
    return tuple(shards)
