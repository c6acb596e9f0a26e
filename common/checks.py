"""Shared validators: each bad value is one ``ValueError`` line that reads the same in every wing.

``check_choice`` (a name among known ones), ``check_choices`` (several), ``check_integer`` (a whole
number in a range), ``check_numbers`` (a fixed-length tuple of finite numbers), ``is_number`` /
``is_finite`` (JSON numbers that are not bools, ints beyond float64 included) and ``clip`` (a
value's repr cut short: a crafted value may be megabytes). Wing-specific checks (shapes of a
network input, a shard's schema, ``lut.json``) live with their wing and word errors like these.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection, Iterable, Sequence
from typing import Any


def clip(value: object, limit: int = 120) -> str:
    """``repr(value)``, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def is_number(value: Any, integer: bool = False) -> bool:
    """A real number (a whole one with ``integer``), not a bool."""
    kind = numbers.Integral if integer else numbers.Real
    return isinstance(value, kind) and not isinstance(value, bool)


def is_finite(value: Any) -> bool:
    """``math.isfinite`` that answers False, not OverflowError, for an int beyond float64."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def check_choice(value: Any, choices: Collection[str], what: str, *, upper: bool = False) -> str:
    """``value`` if it is one of ``choices`` (upper-cased first with ``upper``), else
    ``unknown <what> <value>; choose one of <choices>``."""
    if isinstance(value, str) and (value.upper() if upper else value) in choices:
        return value.upper() if upper else value
    raise ValueError(f"unknown {what} {clip(value)}; choose one of {', '.join(choices)}")


def check_choices(values: Iterable[Any], choices: Collection[str], what: str) -> list[str]:
    """Every one of ``values`` among ``choices`` (the first unknown one is named)."""
    values = list(values)
    for value in values:
        check_choice(value, choices, what)
    return values


def check_integer(value: Any, low: int, high: int, what: str) -> int:
    """``value`` as an int if it is a whole number in ``low..high``."""
    if not is_number(value, integer=True) or not low <= value <= high:
        raise ValueError(f"{what} must be a whole number in {low}..{high}, got {clip(value)}")
    return int(value)


def check_numbers(value: Any, count: int, what: str, integer: bool = False) -> tuple:
    """``count`` finite numbers (whole numbers with ``integer``) as a tuple of int or float."""
    kind = "whole numbers" if integer else "finite numbers"
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or len(value) != count:
        raise ValueError(f"{what} must be {count} {kind}, got {clip(value)}")
    if not all(is_number(v, integer) and is_finite(v) for v in value):
        raise ValueError(f"{what} must be {count} {kind}, got {clip(list(value))}")
    return tuple(int(v) if integer else float(v) for v in value)


__all__ = [
    "check_choice",
    "check_choices",
    "check_integer",
    "check_numbers",
    "clip",
    "is_finite",
    "is_number",
]
