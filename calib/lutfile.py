"""``lut.json`` checked at the door: every field of a table has its documented type, size and range.

Its SHA-256 can be recomputed after an edit, so the hash alone is no defence: ``read_lut`` refuses a
file unless every field is what ``Lut.to_dict`` writes (docs/lut.md, "Checks at load"), with one
``ValueError`` naming the file and the field. ``lut_from_dict`` holds the checks; the fitter and
``Lut.save`` run them too, so every table written can be read back.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from edgedepth.calib.settings import LUT_VERSION, MAX_BINS, MAX_CORRECTION_M, FitSettings, show
from edgedepth.common import is_finite, is_number

MAX_LUT_BYTES = 32 * 2**20
"""Largest ``lut.json`` read (a 10,000-bin table with held-out figures is about 3 MiB)."""
MAX_PIXELS = 2**53
"""Most pixels a table may count in all (a float64 counts them exactly)."""

BIN_KEYS = ("edges", "centres", "value", "correction", "count", "std", "ci_low", "ci_high", "filled")
SETTING_KEYS = tuple(f.name for f in fields(FitSettings))
_FLOAT_SETTINGS = ("bin_width", "min_depth", "max_depth", "ci_level")
_SOURCE_STRINGS = ("labels_dir", "plan_id", "teacher_stage")
_SOURCE_LISTS = ("teacher", "checkpoint_sha256", "shards", "drives")
_SOURCE_COUNTS = ("frames", "pixels")
_METRICS = ("rmse_before", "rmse_after", "abs_rel_before", "abs_rel_after")
HELDOUT_KEYS = (
    "drives",
    "shards",
    "frames",
    "pixels",
    *_METRICS,
    "residual_mean",
    "residual_std",
    "residual_count",
)


def _fail(field: str, problem: str) -> NoReturn:
    raise ValueError(f"{field} {problem}")


def read_lut_json(path: str | Path) -> Any:
    """The parsed ``lut.json`` (not yet checked: ``edgedepth.calib.lut.load_lut`` does): FileNotFoundError when
    absent, one-line ValueErrors naming the file when too large or not JSON."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such lut file")
    size = path.stat().st_size
    if size > MAX_LUT_BYTES:
        raise ValueError(
            f"{path}: {size / 2**20:.0f} MiB is larger than a table of at most {MAX_BINS} bins can be "
            f"({MAX_LUT_BYTES // 2**20} MiB)"
        )
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError, 4300-digit ints
        raise ValueError(f"{path}: malformed lut file ({type(err).__name__}: {show(str(err), 80)})") from None
    return data


def lut_fields(data: Any) -> tuple[dict[str, Any], Any]:
    """The checked fields of a parsed ``lut.json`` (keyword arguments of ``Lut``) and the sha256 it
    claims; one-line ValueError naming the first bad field. ``Lut.from_dict`` checks the hash and
    the per-bin numbers (``check_bins``) on the built table."""
    if not isinstance(data, dict):
        _fail("the file", f"is not a lut table (a JSON object), got {show(data)}")
    version = data.get("lut_version")
    if isinstance(version, bool) or version != LUT_VERSION:
        _fail("lut_version", f"says version {show(version)}; this edgedepth reads version {LUT_VERSION}")
    bins = _dict(data, "bins")
    _keys(bins, BIN_KEYS, "bins")
    n = _bin_count(bins)
    settings = _settings(_dict(data, "settings"))
    table = {key: _floats(bins[key], f"bins.{key}") for key in BIN_KEYS if key not in ("count", "filled")}
    count = _counts(bins["count"], "bins.count")
    filled = np.array([_bool(x, f"bins.filled[{i}]") for i, x in enumerate(bins["filled"])], dtype=bool)
    edges = table["edges"]
    _check_edges(edges, table["centres"], settings)
    fields = dict(
        edges=edges,
        value=table["value"],
        correction=table["correction"],
        count=count,
        std=table["std"],
        ci_low=table["ci_low"],
        ci_high=table["ci_high"],
        filled=filled,
        settings=data["settings"],
        source=_source(data.get("source")),
        heldout=_heldout(data.get("heldout"), n),
    )
    return fields, data.get("sha256")


def check_bins(lut: Any, min_count: int) -> None:
    """The per-bin numbers of a table (a ``Lut``): null only where docs/lut.md allows it, corrections in
    ``[-edges[-1], MAX_CORRECTION_M]`` and as the fit computes them from ``value``."""
    edges, count, filled = lut.edges, lut.count, lut.filled

    def where(name: str, mask: np.ndarray, problem: str) -> None:
        if mask.any():
            i = int(np.flatnonzero(mask)[0])
            x = getattr(lut, name)[i]
            text = str(bool(x)).lower() if name == "filled" else "null" if np.isnan(x) else f"{x:g}"
            _fail(
                f"bins.{name}[{i}]", f"(teacher depth {edges[i]:g}-{edges[i + 1]:g} m) is {text}: {problem}"
            )

    if not np.array_equal(filled, count < min_count):
        where(
            "filled",
            filled != (count < min_count),
            f"filled is true exactly where count < min_count ({min_count})",
        )
    if filled.all():
        _fail("bins.count", f"has no bin with min_count ({min_count}) pixels: the table corrects nothing")
    lo, hi = -edges[-1], MAX_CORRECTION_M
    span = f"an error lidar - teacher lies in [{lo:g}, {hi:g}] m (docs/lut.md)"
    for name, absent in (("value", count == 0), ("std", count < 2), ("ci_low", filled), ("ci_high", filled)):
        arr = getattr(lut, name)
        where(name, np.isnan(arr) & ~absent, "a number is needed here (a bin with pixels)")
        where(name, ~np.isnan(arr) & absent, "null is needed here (docs/lut.md)")
        where(name, np.isinf(arr), "not a finite number")
    where("value", (lut.value < lo) | (lut.value > hi), span)
    top = edges[1:] * (1 + 1e-9)  # every error of a bin is > -(its top edge): the LiDAR depth is > 0
    where("value", lut.value < -top, "below minus the bin's top edge, which no LiDAR depth (> 0) gives")
    where("correction", ~np.isfinite(lut.correction), "a correction is a finite number in every bin")
    where("correction", (lut.correction < lo) | (lut.correction > hi), span)
    where("std", lut.std < 0, "a standard deviation is >= 0")
    where("ci_high", lut.ci_high < lut.ci_low, "below ci_low")
    expected = lut.value.copy()
    centres = lut.centres
    expected[filled] = np.interp(centres[filled], centres[~filled], lut.value[~filled])
    where(
        "correction",
        ~np.isclose(lut.correction, expected, rtol=1e-9, atol=1e-9),
        "not the bin's value (or, in a filled bin, the value interpolated from its neighbours)",
    )


def _dict(data: dict, key: str) -> dict:
    value = data.get(key)
    if not isinstance(value, dict):
        _fail(key, f"must be a JSON object, got {show(value)}")
    return value


def _keys(obj: dict, keys: tuple[str, ...], where: str) -> None:
    for key in keys:
        if key not in obj:
            _fail(f"{where}.{key}", "is missing")
    for key in obj:
        if key not in keys:
            _fail(f"{where}.{key}", f"is not a field of lut version {LUT_VERSION}")


def _bin_count(bins: dict) -> int:
    """Bins of the table, from the lengths alone (before anything is converted)."""
    for key in BIN_KEYS:
        if not isinstance(bins[key], list):
            _fail(f"bins.{key}", f"must be a list, got {show(bins[key])}")
    n = len(bins["edges"]) - 1
    if not 1 <= n <= MAX_BINS:
        _fail("bins.edges", f"gives {max(n, 0)} bins: a table has 1 to {MAX_BINS} bins")
    for key in BIN_KEYS[1:]:
        if len(bins[key]) != n:
            _fail(f"bins.{key}", f"has {len(bins[key])} entries, but bins.edges gives {n} bins")
    return n


def _settings(settings: dict) -> FitSettings:
    _keys(settings, SETTING_KEYS, "settings")
    for key in SETTING_KEYS:
        value = settings[key]
        if key == "stat":
            ok = isinstance(value, str)
        elif key in _FLOAT_SETTINGS:
            ok = is_number(value) and is_finite(value)
        else:
            ok = isinstance(value, int) and not isinstance(value, bool)
        if not ok:
            kind = (
                "text" if key == "stat" else "a finite number" if key in _FLOAT_SETTINGS else "a whole number"
            )
            _fail(f"settings.{key}", f"must be {kind}, got {show(value)}")
    try:
        return FitSettings(**settings)
    except ValueError as err:
        _fail("settings:", str(err))


def _floats(items: list, field: str) -> np.ndarray:
    """Numbers (null -> NaN) as float64; NaN / Infinity literals, 1e999 and text are refused."""
    out = np.empty(len(items), dtype=np.float64)
    for i, x in enumerate(items):
        if x is None:
            out[i] = np.nan
        elif is_number(x) and is_finite(x):
            out[i] = x
        else:
            _fail(f"{field}[{i}]", f"is {show(x)}, not a finite number (missing numbers are null)")
    return out


def _counts(items: Any, field: str, n: int | None = None) -> np.ndarray:
    """Pixel counts: whole numbers >= 0, at most MAX_PIXELS in all."""
    if not isinstance(items, list) or (n is not None and len(items) != n):
        _fail(field, f"must be a list of {n} counts, got {show(items)}")
    for i, x in enumerate(items):
        if not isinstance(x, int) or isinstance(x, bool) or not 0 <= x <= MAX_PIXELS:
            _fail(f"{field}[{i}]", f"is {show(x)}: a pixel count is a whole number in [0, 2^53]")
    if sum(items) > MAX_PIXELS:
        _fail(field, f"adds up to {sum(items):.3g} pixels, more than 2^53")
    return np.array(items, dtype=np.int64)


def _bool(x: Any, field: str) -> bool:
    if not isinstance(x, bool):
        _fail(field, f"is {show(x)}, not true or false")
    return x


def _strings(x: Any, field: str) -> None:
    if not isinstance(x, list) or not all(isinstance(s, str) for s in x):
        _fail(field, f"must be a list of text, got {show(x)}")


def _count(x: Any, field: str) -> None:
    if not isinstance(x, int) or isinstance(x, bool) or not 0 <= x <= MAX_PIXELS:
        _fail(field, f"is {show(x)}: a count is a whole number in [0, 2^53]")


def _check_edges(edges: np.ndarray, centres: np.ndarray, settings: FitSettings) -> None:
    """Strictly ascending, and the bins the settings describe (min depth + k x bin width)."""
    for name, arr in (("edges", edges), ("centres", centres)):
        if np.isnan(arr).any():
            _fail(
                f"bins.{name}[{int(np.flatnonzero(np.isnan(arr))[0])}]",
                "is null: a bin edge or centre is a number",
            )
    steps = np.diff(edges)
    if (steps <= 0).any():
        i = int(np.flatnonzero(steps <= 0)[0]) + 1
        _fail(
            f"bins.edges[{i}]",
            f"= {edges[i]:g} is not above bins.edges[{i - 1}] = {edges[i - 1]:g}: bin edges must ascend",
        )
    expected = settings.edges
    if len(expected) != len(edges):
        _fail("bins.edges", f"gives {len(edges) - 1} bins, but the settings give {settings.n_bins}")
    off = ~np.isclose(edges, expected, rtol=1e-9, atol=1e-9)
    if off.any():
        i = int(np.flatnonzero(off)[0])
        _fail(
            f"bins.edges[{i}]",
            f"= {edges[i]:g}, but the settings give {expected[i]:g} (min_depth + k x bin_width)",
        )
    off = ~np.isclose(centres, (edges[:-1] + edges[1:]) / 2, rtol=1e-9, atol=1e-9)
    if off.any():
        i = int(np.flatnonzero(off)[0])
        _fail(f"bins.centres[{i}]", f"= {centres[i]:g} is not the middle of its bin's edges")


def _source(source: Any) -> dict[str, Any]:
    """Where the fit came from; ``{}`` for a table fitted from arrays. Keys read elsewhere are typed."""
    if source is None:
        return {}
    if not isinstance(source, dict):
        _fail("source", f"must be a JSON object, got {show(source)}")
    for key in _SOURCE_STRINGS:
        if key in source and not isinstance(source[key], str):
            _fail(f"source.{key}", f"must be text, got {show(source[key])}")
    for key in _SOURCE_LISTS:
        if key in source:
            _strings(source[key], f"source.{key}")
    for key in _SOURCE_COUNTS:
        if key in source:
            _count(source[key], f"source.{key}")
    holdout = source.get("holdout", 0)
    if not is_number(holdout) or not 0 <= holdout < 1:
        _fail("source.holdout", f"is {show(holdout)}: a share in [0, 1)")
    if "frame_list" in source:
        _bool(source["frame_list"], "source.frame_list")
    return source


def _heldout(heldout: Any, n: int) -> dict[str, Any] | None:
    """The held-out figures: per-bin residuals of the table's ``n`` bins, metrics null without pixels."""
    if heldout is None:
        return None
    if not isinstance(heldout, dict):
        _fail("heldout", f"must be a JSON object or null, got {show(heldout)}")
    _keys(heldout, HELDOUT_KEYS, "heldout")
    _strings(heldout["drives"], "heldout.drives")
    _strings(heldout["shards"], "heldout.shards")
    _count(heldout["frames"], "heldout.frames")
    _count(heldout["pixels"], "heldout.pixels")
    count = _counts(heldout["residual_count"], "heldout.residual_count", n)
    if int(count.sum()) != heldout["pixels"]:
        _fail(
            "heldout.pixels",
            f"is {heldout['pixels']}, but heldout.residual_count adds up to {int(count.sum())}",
        )
    for key in _METRICS:
        x = heldout[key]
        if (x is None) != (heldout["pixels"] == 0) or not (
            x is None or (is_number(x) and is_finite(x) and x >= 0)
        ):
            _fail(f"heldout.{key}", f"is {show(x)}: a number >= 0, or null when no pixel was held out")
    for key, absent in (("residual_mean", count == 0), ("residual_std", count < 2)):
        if not isinstance(heldout[key], list) or len(heldout[key]) != n:
            _fail(f"heldout.{key}", f"must be a list of {n} numbers, got {show(heldout[key])}")
        arr = _floats(heldout[key], f"heldout.{key}")
        if (np.isnan(arr) != absent).any():
            i = int(np.flatnonzero(np.isnan(arr) != absent)[0])
            _fail(
                f"heldout.{key}[{i}]",
                f"is {show(heldout[key][i])}, but heldout.residual_count[{i}] is {count[i]}",
            )
    return heldout
