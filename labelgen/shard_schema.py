"""What a shard file must hold, checked on read: the documented schema as data, and chunk checksums.

``check_shard`` (``edgedepth.labelgen.shards``) runs ``open_members``, ``bookkeeping_problem``,
``stage_problem`` and ``stored_problem`` at both verify levels: metadata reads, about a
millisecond a shard. A shard that breaks the schema is ``invalid`` with the
reason, so the next ``labelgen run`` redoes it and no reader trusts it: a dataset that is a link
(external or soft) or virtual (its data would come from another file, or read as zeros when that
file is gone), a dataset without chunking, gzip or Fletcher-32 as the writer makes them, a dtype or
per-row shape other than the stage's (``STAGE_SCHEMAS``, which ``tests/labelgen/test_shards.py``
keeps equal to ``edgedepth.labelgen.stages``), a group or any other member where only datasets belong.

``verify_chunks`` is the ``full`` level: it reads every stored chunk's raw bytes and checks its
Fletcher-32 checksum, the one HDF5 checks on every read, without decompressing: the checksum is
HDF5's last filter, so it covers the compressed bytes. That costs about a tenth of reading the
data back (docs/shards.md).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from h5py import h5d, h5z

from edgedepth.common import first_line
from edgedepth.labelgen.fields import MAX_IMAGE_SIDE, image_size_field

BOOKKEEPING_DATASETS = ("frame_id", "ok", "failure")  # in every shard, beside the stage's own
MAX_STRING_BYTES = 1 << 16  # a frame id or a one-line failure reason; more is a crafted file
MAX_ROW_BYTES = 1 << 30  # one frame of one dataset (an 8K RGB image is 100 MB)
REDO = "rerun `edgedepth labelgen run` to redo the shard"
_ALLOWED_FILTERS = {
    h5z.FILTER_SHUFFLE: "shuffle",
    h5z.FILTER_DEFLATE: "gzip",
    h5z.FILTER_FLETCHER32: "fletcher32",
}


class ShardReadError(ValueError):
    """A shard that cannot be read: the message names the file, the dataset and the row."""


@dataclass(frozen=True)
class RowRule:
    """One dataset of a stage in the documented schema: dtype, one frame's shape (``(H, W)``, or
    ``(H, W, channels)``), the ``scale`` attribute it carries (None: none), whether it may be absent."""

    dtype: str
    channels: int | None = None
    scale: float | None = None
    required: bool = True

    def row_shape(self, image_size: tuple[int, int]) -> tuple[int, ...]:
        return (*image_size, self.channels) if self.channels else tuple(image_size)


_STEREO = {
    "disparity": RowRule("uint16", scale=1.0 / 256.0),
    "depth": RowRule("float16"),
    "valid": RowRule("bool"),
}
STAGE_SCHEMAS: dict[str, dict[str, RowRule]] = {
    "images": {"image": RowRule("uint8", channels=3)},
    "lidar": {"depth": RowRule("float32"), "depth_03": RowRule("float32", required=False)},
    "sgbm": _STEREO,
    "psmnet": _STEREO,
    "seg": {"seg": RowRule("uint8"), "seg_conf": RowRule("uint8", scale=1.0 / 255.0)},
}
"""docs/shards.md's stage datasets (``edgedepth.labelgen.stages``' ``datasets()``), torch-free."""
CORRECTED_SUFFIX = "_corrected"
CORRECTED_SCHEMA = {"depth": RowRule("float16")}  # <teacher>_corrected, written by `calib apply`


def stage_schema(stage: str) -> Mapping[str, RowRule] | None:
    """The documented datasets of ``stage`` (None for a stage this toolkit does not know)."""
    if stage in STAGE_SCHEMAS:
        return STAGE_SCHEMAS[stage]
    return CORRECTED_SCHEMA if stage.endswith(CORRECTED_SUFFIX) else None


def stage_of(attrs: h5py.AttributeManager, path: Path) -> str:
    """The shard's stage: its folder when that is a known stage, else its ``stage`` attribute."""
    folder = path.parent.name
    if stage_schema(folder) is not None:
        return folder
    stage = attrs.get("stage")
    return stage if isinstance(stage, str) else folder


def _json_attr(attrs: h5py.AttributeManager, key: str) -> object:
    value = attrs.get(key)
    try:
        return json.loads(value) if isinstance(value, str) else None
    except (ValueError, RecursionError):
        return None


def expected_size(
    attrs: h5py.AttributeManager, stage: str, image_size: tuple[int, int] | None
) -> tuple[int, int] | None:
    """(height, width) of the stage's rows: ``image_size`` (the plan's) or the shard's calibration
    attribute; for ``images``, the ``resize`` of its settings. None when nothing says."""
    calibration = _json_attr(attrs, "calibration")
    sources = [image_size, calibration.get("image_size") if isinstance(calibration, dict) else None]
    if stage == "images":
        settings = _json_attr(attrs, "settings")
        sources.insert(0, settings.get("resize") if isinstance(settings, dict) else None)
    for value in sources:
        if value is not None:
            try:
                return image_size_field(list(value))
            except (TypeError, ValueError):
                continue
    return None


def _storage_problem(dset: h5py.Dataset, name: str, compressed: bool) -> str | None:
    """Chunked, compressed (stage datasets) and checksummed as ``ShardWriter`` writes; not virtual."""
    plist = dset.id.get_create_plist()
    layout = plist.get_layout()
    if layout == h5d.VIRTUAL:
        return f"dataset {name} is a virtual dataset (its data would come from other files)"
    if layout != h5d.CHUNKED:
        return f"dataset {name} is not chunked (every dataset is written in checksummed chunks)"
    filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    unknown = [code for code in filters if code not in _ALLOWED_FILTERS]
    if unknown:
        return f"dataset {name} uses HDF5 filter {unknown[0]} (the writer uses only shuffle, gzip and fletcher32)"
    if not filters or filters[-1] != h5z.FILTER_FLETCHER32:
        return f"dataset {name} has no Fletcher-32 checksum as its last filter"
    if compressed and h5z.FILTER_DEFLATE not in filters:
        return f"dataset {name} is not gzip-compressed"
    return None


def _scale_problem(dset: h5py.Dataset, name: str, rule: RowRule | None) -> str | None:
    scale = dset.attrs.get("scale")
    if rule is not None and rule.scale is None:
        return None if scale is None else f"dataset {name} has a scale attribute its stage does not write"
    if scale is None:
        return None if rule is None else f"dataset {name} lacks its scale attribute {rule.scale:g}"
    if not is_scale(scale) or (rule is not None and float(scale) != rule.scale):
        wanted = "a positive finite number" if rule is None else f"{rule.scale:g}"
        return f"dataset {name}: scale attribute {_shown(scale)} is not {wanted}"
    return None


def _shown(value: object) -> str:
    """A short one-line rendering of an attribute value (numpy scalars as plain numbers)."""
    return first_line(str(value) if isinstance(value, np.generic) else repr(value))[:40]


def is_scale(value: object) -> bool:
    """A ``scale`` attribute a reader may multiply by: one real, finite, positive number."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.integer | np.floating):
        return False
    return math.isfinite(float(value)) and float(value) > 0


def open_members(f: h5py.File) -> tuple[str | None, dict[str, h5py.Dataset]]:
    """(problem, {name: dataset}): every member of the file must be a dataset stored in it (hard
    links only), the bookkeeping datasets among them. Link types are checked before any member is
    opened: opening an external link would read another file."""
    for name in f.keys():
        link = f.get(name, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            return f"{name} is an external link to {link.filename} (a shard holds its own data)", {}
        if not isinstance(link, h5py.HardLink):
            return f"{name} is a soft link (a shard holds its own data)", {}
    members = {}
    for name in f.keys():
        member = f[name]
        if not isinstance(member, h5py.Dataset):
            what = "a group" if isinstance(member, h5py.Group) else "not a dataset"
            return f"{name} is {what} (a shard holds datasets only)", {}
        members[name] = member
    missing = [name for name in BOOKKEEPING_DATASETS if name not in members]
    return (f"dataset {missing[0]} is missing" if missing else None), members


def bookkeeping_problem(members: Mapping[str, h5py.Dataset]) -> str | None:
    """The ``frame_id``, ``ok`` and ``failure`` datasets' types and shapes (one row a frame)."""
    shape = members["frame_id"].shape
    if len(shape) != 1:
        return f"dataset frame_id has shape {shape}, not one row a frame"
    for name in BOOKKEEPING_DATASETS:
        dset = members[name]
        dtype = dset.dtype
        if dset.shape != shape:
            return f"dataset {name} has shape {dset.shape}, not {shape}"
        if name == "ok" and dtype != np.bool_:
            return f"dataset ok holds {dtype}, not bool"
        if name != "ok" and dtype.kind != "S":
            return f"dataset {name} holds {dtype}, not fixed-length UTF-8 strings"
        if dtype.itemsize > MAX_STRING_BYTES:
            return f"dataset {name} holds strings of {dtype.itemsize} bytes (at most {MAX_STRING_BYTES})"
        problem = _storage_problem(dset, name, compressed=False)
        if problem:
            return problem
    return None


def stage_problem(
    members: Mapping[str, h5py.Dataset],
    stage: str,
    attrs: h5py.AttributeManager,
    rows: int,
    image_size: tuple[int, int] | None,
) -> str | None:
    """The stage datasets against the documented schema (any stage: numeric, one chunk a row,
    bounded rows, gzip and Fletcher-32; a known stage: exactly its datasets, dtypes and shapes)."""
    schema = stage_schema(stage)
    written_as = attrs.get("stage")
    if schema is not None and isinstance(written_as, str) and written_as != stage:
        return f"written as stage {first_line(written_as)[:40]}, not {stage}"
    names = [name for name in members if name not in BOOKKEEPING_DATASETS]
    if schema is not None:
        missing = [n for n, rule in schema.items() if rule.required and n not in names]
        extra = [n for n in names if n not in schema]
        if missing or extra:
            what = f"lacks dataset {missing[0]}" if missing else f"has dataset {extra[0]}"
            return f"stage {stage} {what} (expected {', '.join(schema)})"
    size = expected_size(attrs, stage, image_size) if schema is not None else None
    sizes = set()
    for name in names:
        dset, rule = members[name], schema[name] if schema is not None else None
        shape, dtype = dset.shape, dset.dtype
        if not shape or shape[0] != rows:
            return f"dataset {name} has {shape[0] if shape else 0} rows, not {rows}"
        if dtype.kind not in "biuf" or (rule is not None and dtype != np.dtype(rule.dtype)):
            return f"dataset {name} holds {dtype}, not {'numbers' if rule is None else rule.dtype}"
        row = tuple(shape[1:])
        if rule is not None:
            if len(row) != 2 + bool(rule.channels) or (rule.channels and row[2] != rule.channels):
                return f"dataset {name} rows are {row}, not {rule.row_shape(('H', 'W'))}"
            if size is not None and row != rule.row_shape(size):
                return f"dataset {name} rows are {row}, not {rule.row_shape(size)} (the shard's image size)"
            if not 0 < row[0] <= MAX_IMAGE_SIDE or not 0 < row[1] <= MAX_IMAGE_SIDE:
                return f"dataset {name} rows are {row}: outside 1..{MAX_IMAGE_SIDE} pixels a side"
            sizes.add(row[:2])
        if math.prod(row) * dtype.itemsize > MAX_ROW_BYTES:
            return f"dataset {name} rows are {row}: over {MAX_ROW_BYTES >> 20} MiB a frame"
        problem = _storage_problem(dset, name, compressed=True)
        if problem:
            return problem
        if tuple(dset.chunks) != (1, *row):
            return f"dataset {name} is chunked as {dset.chunks}, not one frame a chunk {(1, *row)}"
        problem = _scale_problem(dset, name, rule)
        if problem:
            return problem
    if len(sizes) > 1:
        return f"stage {stage} datasets differ in image size: {sorted(sizes)}"
    return None


def stored_problem(members: Mapping[str, h5py.Dataset], ok: np.ndarray) -> str | None:
    """Each stage dataset stores at least as many chunks (frames) as ``ok`` marks done: one
    metadata call a dataset (``verify_chunks`` names the row)."""
    done = int(ok.sum())
    for name, dset in members.items():
        if name not in BOOKKEEPING_DATASETS and dset.id.get_num_chunks() < done:
            return f"dataset {name} stores {dset.id.get_num_chunks()} frames, but {done} are marked ok"
    return None


# ---- one-line readers ------------------------------------------------------------------------


def error_line(err: BaseException) -> str:
    """The first line of an error (its type name when it has no message)."""
    return first_line(err) or type(err).__name__


def open_shard(path: str | Path) -> h5py.File:
    """``h5py.File(path, "r")``; a file that cannot be opened (truncated, not HDF5) raises
    :class:`ShardReadError` naming it."""
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise ShardReadError(f"{path}: cannot open the shard ({error_line(err)})") from None


def read_rows(dataset: h5py.Dataset, rows: object = (), as_str: bool = False) -> np.ndarray:
    """``dataset[rows]`` (default: all of it; ``as_str``: decoded to ``str``); a damaged chunk
    (checksum or decompression failure) raises :class:`ShardReadError` naming the file, the
    dataset and the rows, and so does a member that is no dataset, or text that is no UTF-8."""
    name = dataset.name.lstrip("/") if dataset.name else "?"
    where = "" if isinstance(rows, tuple) and not rows else f" row {rows}"
    if not isinstance(dataset, h5py.Dataset):
        raise ShardReadError(f"{dataset.file.filename}: {name} is a group, not a dataset; {REDO}")
    try:
        return dataset.asstr()[rows] if as_str else dataset[rows]
    except OSError as err:
        raise ShardReadError(
            f"{dataset.file.filename}: dataset {name}{where} is damaged ({error_line(err)}); {REDO}"
        ) from None
    except (TypeError, ValueError) as err:  # numbers read as text, bytes that are not UTF-8
        what = "UTF-8 text" if as_str else "an array"
        raise ShardReadError(
            f"{dataset.file.filename}: dataset {name}{where} cannot be read as {what} "
            f"({error_line(err)}); {REDO}"
        ) from None


def decode(dataset: h5py.Dataset, raw: np.ndarray) -> np.ndarray:
    """Stored values -> user values: depth and disparity as float32 (``scale`` applied). Values
    that are not numbers, or a ``scale`` that is not a positive finite number, raise
    :class:`ShardReadError` naming the file and the dataset."""
    name = dataset.name.lstrip("/")
    if raw.dtype.kind not in "biuf":
        raise ShardReadError(
            f"{dataset.file.filename}: dataset {name} holds {raw.dtype}, not numbers; {REDO}"
        )
    scale = dataset.attrs.get("scale")
    if scale is not None:
        if not is_scale(scale):
            raise ShardReadError(
                f"{dataset.file.filename}: dataset {name}: scale attribute {_shown(scale)} "
                f"is not a positive finite number; {REDO}"
            )
        return raw.astype(np.float32) * np.float32(scale)
    return raw.astype(np.float32) if raw.dtype == np.float16 else raw


# ---- full verification: every chunk's checksum -----------------------------------------------

_M = 65535
_BLOCK = 1 << 16  # words per block: block sums stay exact in float64 (< 2**48)
_PIECE = 1 << 20  # words per piece: 8 MiB of float64 at a time
_J = np.arange(_BLOCK, dtype=np.float64)


def fletcher32_matches(chunk: bytes) -> bool:
    """Whether a raw chunk's last 4 bytes are HDF5's Fletcher-32 of the bytes before them.

    HDF5 sums the bytes as big-endian 16-bit words (a last odd byte as a word's high byte):
    ``sum1 = sum(w) mod 65535``, ``sum2 = sum over k of (w_0 + ... + w_k) mod 65535``, stored as
    ``sum2 << 16 | sum1``, little-endian. Here in blocks of 65536 words, whose sums are exact in
    float64: ``sum2 = sum_i (n - i) w_i`` = ``sum_b (n - o_b) S_b - T_b`` with ``S_b`` a block's sum and
    ``T_b`` its position-weighted sum. Compared modulo 65535 (HDF5 may store 65535 for 0).
    """
    if len(chunk) < 4:
        return False
    body, stored = memoryview(chunk)[:-4], int.from_bytes(chunk[-4:], "little")
    words = np.frombuffer(body[: len(body) // 2 * 2], dtype=">u2")
    n = words.size + len(body) % 2
    sum1 = sum2 = 0
    for start in range(0, words.size, _PIECE):
        piece = words[start : start + _PIECE]
        blocks = -(-piece.size // _BLOCK)
        padded = np.zeros(blocks * _BLOCK, np.float64)
        padded[: piece.size] = piece
        padded = padded.reshape(blocks, _BLOCK)
        s = padded.sum(axis=1).astype(np.int64) % _M
        t = (padded @ _J).astype(np.int64) % _M
        offsets = start + np.arange(blocks, dtype=np.int64) * _BLOCK
        sum1 += int(s.sum())
        sum2 += int((((n - offsets) % _M) * s - t).sum())
    if len(body) % 2:  # the last byte as the high byte of a last word, weight 1
        last = body[-1] << 8
        sum1, sum2 = sum1 + last, sum2 + last
    return (stored & 0xFFFF) % _M == sum1 % _M and (stored >> 16) % _M == sum2 % _M


def _chunks(dset: h5py.Dataset) -> list:
    """Every stored chunk's (offset, filter mask, address, size)."""
    infos: list = []
    if hasattr(dset.id, "chunk_iter"):
        dset.id.chunk_iter(infos.append)
    else:  # HDF5 before 1.14
        infos = [dset.id.get_chunk_info(i) for i in range(dset.id.get_num_chunks())]
    return infos


def verify_chunks(dset: h5py.Dataset, ok: np.ndarray) -> None:
    """Check every stored chunk of a stage dataset (one frame a chunk, as ``stage_problem`` made
    sure) against its checksum, and that every ``ok`` row has a stored chunk. A failure raises
    :class:`ShardReadError` naming the file, the dataset and the row."""
    name = dset.name.lstrip("/")
    row_bytes = math.prod(dset.shape[1:]) * dset.dtype.itemsize
    limit = row_bytes + row_bytes // 1000 + 1024  # gzip's worst case and the checksum
    stored = np.zeros(len(ok), dtype=bool)
    for info in _chunks(dset):
        row = int(info.chunk_offset[0])
        why = "stored without its filters" if info.filter_mask else ""
        if not why and not 4 <= info.size <= limit:
            why = f"a chunk of {info.size} bytes"
        if not why and not fletcher32_matches(dset.id.read_direct_chunk(info.chunk_offset)[1]):
            why = "Fletcher-32 checksum mismatch"
        if why:
            raise ShardReadError(f"{dset.file.filename}: dataset {name} row {row} is damaged ({why}); {REDO}")
        if row < len(ok):
            stored[row] = True
    absent = np.flatnonzero(ok & ~stored)
    if absent.size:
        raise ShardReadError(
            f"{dset.file.filename}: dataset {name} row {absent[0]} is damaged (marked ok, but no data "
            f"is stored); {REDO}"
        )
