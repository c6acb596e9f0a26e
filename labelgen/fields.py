"""Typed reads of JSON fields: one-line ValueErrors naming the key, sizes bounded before use.

Shared by the calibration readers (``edgedepth.labelgen.kitti``, ``edgedepth.labelgen.rig``), the plan check
(``edgedepth.labelgen.plan_check``) and the shard schema (``edgedepth.labelgen.shard_schema``), so a crafted
``plan.json`` or shard attribute never reaches an allocation sized by its own numbers.
"""

from __future__ import annotations

import numpy as np

from edgedepth.common import clip

MAX_IMAGE_SIDE = 16384
"""Largest image height or width a plan or a shard may declare (every label array is sized by it)."""


def field_of(data: object, key: str) -> object:
    """``data[key]`` of a JSON object; a missing key or a non-object is a one-line ValueError."""
    if not isinstance(data, dict):
        raise ValueError(f"not a JSON object (got {type(data).__name__})")
    if key not in data:
        raise ValueError(f"{key}: missing")
    return data[key]


def matrix_field(data: dict, key: str, shape: tuple[int, ...]) -> np.ndarray:
    """``data[key]`` as a float64 array of ``shape``: nested lists of JSON numbers only."""
    value = field_of(data, key)
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):  # ragged lists
        array = np.asarray(0)
    if array.dtype.kind not in "iuf" or array.shape != shape:
        form = "x".join(map(str, shape))
        raise ValueError(f"{key}: not a {form} matrix of numbers (got {clip(value)})")
    return array.astype(np.float64)


def image_size_field(value: object, allow_zero: bool = False) -> tuple[int, int]:
    """``[height, width]``: two integers in 1..MAX_IMAGE_SIDE (both 0 too with ``allow_zero``: the
    size of a frame whose image could not be read)."""
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise ValueError(f"image_size: not [height, width] in whole pixels (got {clip(value)})")
    height, width = value
    if allow_zero and height == width == 0:
        return 0, 0
    if not (0 < height <= MAX_IMAGE_SIDE and 0 < width <= MAX_IMAGE_SIDE):
        raise ValueError(
            f"image_size: {clip(height)}x{clip(width)} is outside 1..{MAX_IMAGE_SIDE} pixels a side"
        )
    return height, width


def plain_number(data: dict, key: str) -> float:
    """``data[key]`` as a float: a JSON number (finiteness is checked by ``check_rig_calibration``)."""
    value = field_of(data, key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key}: not a number (got {clip(value)})")
    try:
        return float(value)
    except OverflowError:  # an integer beyond float range
        raise ValueError(f"{key}: {clip(value)} is out of range") from None
