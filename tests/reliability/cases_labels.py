"""Bad-input cases of plan and shard files read at the door (issue 19, red-team faults 3, 6, 7, 9, 11).

A hand-edited or crafted ``plan.json`` fails in the driver with one line naming the file and the
field, before any dask task (``edgedepth.labelgen.plan_check``); a split file that leaves the data root or is
not text names the file and the line; a shard that breaks the documented schema is ``invalid``
(``edgedepth.labelgen.shard_schema``): ``inspect`` names it, ``calib fit`` refuses it, and no reader takes it
as good. ``LABELS_REDTEAM_CASES`` joins ``cases.CASES``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from edgedepth.labelgen.plan import PLAN_FILE
from edgedepth.labelgen.reader import LabelReader
from edgedepth.labelgen.shards import shard_path
from tests.reliability.cases import (
    DATE,
    DRIVE,
    Case,
    Setup,
    _fit_argv,
    _plan_argv,
    _run_argv,
    _write,
    labelled,
    no_plan,
    nothing_at,
    planned,
    tree,
)

# ---- plan.json edited by hand -------------------------------------------------------------------


def _edited_plan(edit: Callable[[dict], None]) -> Callable[[Path], Setup]:
    """A planned folder of 4 frames in shards of 2 whose plan.json is then edited by ``edit``."""

    def setup(tmp: Path) -> Setup:
        _, labels = planned(tmp, frames=4, shard_size=2)
        path = labels / PLAN_FILE
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))
        return Setup(_run_argv(tmp), str(path), nothing_at("labels/lidar"))

    return setup


def _frame(index: int) -> str:
    return f"{DATE}/{DRIVE}/{index:010d}"


def _set_frame(shard: int, position: int, value: object) -> Callable[[dict], None]:
    return lambda data: data["shards"][shard]["frames"].__setitem__(position, value)


def _set_shard(shard: int, **values: object) -> Callable[[dict], None]:
    return lambda data: data["shards"][shard].update(values)


PLAN_FILE_CASES = [
    ("plan-duplicate-index", "two shards with one index (both would write one file)",
     "shards[1].index: 0, expected 1", _set_shard(1, index=0, name="shard-00000")),
    ("plan-index-string", "a shard index given as a string", "shards[1].index: not an integer (got '1')",
     _set_shard(1, index="1")),
    ("plan-duplicate-frame", "one frame listed in two shards (it would weigh double)",
     "shards[1].frames[0]: '2011_09_26/2011_09_26_drive_0001_sync/0000000000' is listed twice", _set_frame(1, 0, _frame(0))),
    ("plan-frame-escapes", "a frame id `../outside/...` (reads from outside the data root)",
     "shards[0].frames[0]: '../outside", _set_frame(0, 0, f"../outside/{DRIVE}/0000000000")),
    ("plan-frame-absolute", "an absolute path as a frame id", "shards[0].frames[1]: '/etc/passwd' is not a KITTI frame id",
     _set_frame(0, 1, "/etc/passwd")),
    ("plan-frame-malformed", "a frame id that is not `<date>/<drive>_sync/<frame:010d>`",
     "shards[0].frames[0]: '2011_09_26/x' is not a KITTI frame id", _set_frame(0, 0, f"{DATE}/x")),
    ("plan-frames-string", '`"frames": "abc"`', "shards[0].frames: not a JSON array (got 'abc')",
     _set_shard(0, frames="abc")),
    ("plan-size-infinity", "an `Infinity` image size", "shards[0].image_size: not [height, width] in whole pixels",
     _set_shard(0, image_size=[float("inf"), 160])),
    ("plan-size-text", "an image size `['abc', 160]` (once `int('abc')`)", "shards[0].image_size: not [height, width] in whole pixels (got ['abc', 160])",
     _set_shard(0, image_size=["abc", 160])),
    ("plan-size-huge", "a 10^9 x 10^9 image size (every label array is sized by it)",
     "shards[0].image_size: 1000000000x1000000000 is outside 1..16384 pixels a side",
     _set_shard(0, image_size=[10**9, 10**9])),
    ("plan-root-int", "an integer `data_root`", "data_root: not a string (got 7)", lambda d: d.update(data_root=7)),
    ("plan-shard-size", "`shard_size` 0", "shard_size: 0 is less than 1", lambda d: d.update(shard_size=0)),
    ("plan-calibration-shape", "a 2x2 `P_rect_02`", "calibrations[2011_09_26]: P_rect_02: not a 3x4 matrix",
     lambda d: d["calibrations"][DATE].update(P_rect_02=[[1, 0], [0, 1]])),
]  # fmt: skip

RUN_CASES = [
    Case("run", name, f"plan.json: {what}", 2, f"malformed plan: {pattern}", _edited_plan(edit))
    for name, what, pattern, edit in PLAN_FILE_CASES
]


# ---- split files --------------------------------------------------------------------------------


def _split(text: str | bytes) -> Callable[[Path], Setup]:
    def setup(tmp: Path) -> Setup:
        root = tree(tmp)
        path = tmp / "split.txt"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return Setup(_plan_argv(root, tmp, "--split-file", str(path)), str(path), no_plan)

    return setup


def _rig_list(tmp: Path) -> Setup:
    from tests.rig_tree import make_rig_tree

    root = make_rig_tree(tmp / "rig", {"yard": 2})
    path = _write(tmp / "frames.txt", "yard/frame_000\n../yard/frame_001\n")
    argv = [
        "labelgen",
        "plan",
        "--data-root",
        str(root),
        "--out",
        str(tmp / "labels"),
        "--split-file",
        str(path),
    ]
    return Setup(argv, str(path), no_plan)


PLAN_CASES = [
    Case("plan", "split-escapes", "split line `../<drive> 0 l` (a folder outside the KITTI root)", 2,
         ":2: '..' is not a KITTI date folder", _split(f"{DATE}/{DRIVE} 0 l\n../{DRIVE} 0 l\n")),
    Case("plan", "split-other-date", "split line naming a drive under another date's folder", 2,
         ":1: '2011_09_28_drive_0001_sync' is not a drive of 2011_09_26", _split(f"{DATE}/2011_09_28_drive_0001 0 l\n")),
    Case("plan", "split-index-digits", "split line whose frame index has 11 digits", 2, "has more than 10 digits",
         _split(f"{DATE}/{DRIVE} 12345678901 l\n")),
    Case("plan", "split-not-text", "split file that is not UTF-8 text", 2, "not a UTF-8 text file",
         _split(b"\xff\xfe\x00binary")),
    Case("plan", "rig-list-escapes", "rig frame list line `../<sequence>/<frame>`", 2, ":2: expected '<sequence>/<frame>'",
         _rig_list),
]  # fmt: skip


# ---- shards that break the schema ---------------------------------------------------------------


def _broken_shard(tmp: Path, breaks: Callable[[h5py.File, Path], None]) -> Path:
    """The sgbm shard of a labelled folder, broken in place by ``breaks(file, tmp)``."""
    _, labels = labelled(tmp)
    path = shard_path(labels, "sgbm", "shard-00000")
    with h5py.File(path, "a") as f:
        breaks(f, tmp)
    return path


def _external(f: h5py.File, tmp: Path) -> None:
    with h5py.File(tmp / "elsewhere.h5", "w") as other:
        other.create_dataset("depth", data=f["depth"][()], chunks=(1, *f["depth"].shape[1:]),
                             compression="gzip", fletcher32=True)  # fmt: skip
    del f["depth"]
    f["depth"] = h5py.ExternalLink(str(tmp / "elsewhere.h5"), "/depth")


def _virtual(f: h5py.File, tmp: Path) -> None:
    shape, dtype = f["depth"].shape, f["depth"].dtype
    layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
    layout[:] = h5py.VirtualSource(str(tmp / "gone.h5"), "depth", shape=shape)  # reads as zeros
    del f["depth"]
    f.create_virtual_dataset("depth", layout, fillvalue=0)


def _replaced(
    data: Callable[[np.ndarray], np.ndarray], **options: object
) -> Callable[[h5py.File, Path], None]:
    def breaks(f: h5py.File, tmp: Path) -> None:
        values = data(f["depth"][()])
        del f["depth"]
        f.create_dataset("depth", data=values, **options)

    return breaks


def _row_chunks(values: np.ndarray) -> tuple[int, ...]:
    return (1, *values.shape[1:])


SHARD_BREAKS = [
    ("external-link", "depth is an external link to another file", "depth is an external link", _external),
    ("virtual", "depth is a virtual dataset whose source is missing", "depth is a virtual dataset", _virtual),
    ("no-checksum", "depth rewritten without Fletcher-32", "depth has no Fletcher-32 checksum",
     _replaced(lambda v: v, chunks=True, compression="gzip")),
    ("contiguous", "depth rewritten unchunked", "depth is not chunked", _replaced(lambda v: v)),
    ("string-depth", "depth rewritten as strings", "depth holds |S8, not float16",
     _replaced(lambda v: np.full(v.shape[:1], b"24.0 m  "), chunks=True, fletcher32=True, compression="gzip")),
    ("int-depth", "depth rewritten as int64", "depth holds int64, not float16",
     _replaced(lambda v: v.astype(np.int64), chunks=True, fletcher32=True, compression="gzip")),
    ("depth-shape", "depth rows of another image size", "rows are (32, 80), not (64, 160)",
     _replaced(lambda v: np.zeros((v.shape[0], 32, 80), np.float16), chunks=(1, 32, 80), fletcher32=True,
               compression="gzip")),
    ("extra-group", "an extra group in the file", "extras is a group", lambda f, t: f.create_group("extras")),
    ("group-for-depth", "an HDF5 group where the depth dataset belongs", "depth is a group",
     lambda f, t: (f.__delitem__("depth"), f.create_group("depth"))),
]  # fmt: skip


def _refused_by_readers(tmp: Path) -> None:
    """Nothing bad read as good: a reader of the folder refuses the broken shard."""
    try:
        LabelReader(tmp / "labels", ["sgbm"], verify="quick")
    except ValueError as err:
        assert "shard-00000.h5: shard is invalid" in str(err), err
    else:
        raise AssertionError("LabelReader accepted a shard that breaks the schema")


def _inspect_case(name: str, what: str, pattern: str, breaks: Callable) -> Case:
    def setup(tmp: Path) -> Setup:
        path = _broken_shard(tmp, breaks)
        return Setup(["labelgen", "inspect", str(tmp / "labels")], path.name, _refused_by_readers)

    return Case("inspect", f"shard-{name}", f"sgbm shard: {what}", 0, pattern, setup)


def _calib_case(name: str, what: str, pattern: str, breaks: Callable) -> Case:
    def setup(tmp: Path) -> Setup:
        path = _broken_shard(tmp, breaks)
        return Setup(_fit_argv(tmp), path.name, nothing_at("lut.json"))

    return Case("calib", f"teacher-{name}", f"calib fit on an sgbm shard: {what}", 2, pattern, setup)


INSPECT_CASES = [_inspect_case(*entry) for entry in SHARD_BREAKS]
CALIB_CASES = [
    _calib_case(*entry)
    for entry in SHARD_BREAKS
    if entry[0] in ("external-link", "virtual", "string-depth", "extra-group")
]

LABELS_REDTEAM_CASES: list[Case] = PLAN_CASES + RUN_CASES + INSPECT_CASES + CALIB_CASES
