"""The shared validators: the same one-line message for the same fault, whatever wing asks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgedepth.common import (
    check_choice,
    check_choices,
    check_integer,
    check_numbers,
    clip,
    is_finite,
    is_number,
)


def test_a_choice_is_returned_or_named_with_the_known_ones():
    assert check_choice("fast", ("paper", "fast"), "decoder architecture") == "fast"
    assert check_choice("xs", ("L", "M", "S", "XS"), "variant", upper=True) == "XS"
    with pytest.raises(ValueError, match=r"^unknown variant 'q'; choose one of L, M, S, XS$"):
        check_choice("q", ("L", "M", "S", "XS"), "variant", upper=True)
    with pytest.raises(ValueError, match=r"^unknown crop 3; choose one of garg, none$"):
        check_choice(3, ("garg", "none"), "crop")  # not a string: named, never upper-cased
    with pytest.raises(ValueError, match=r"^unknown precision 'int4'; choose one of fp32, int8$"):
        check_choices(["fp32", "int4", "int2"], ("fp32", "int8"), "precision")  # the first unknown one


def test_an_integer_in_range_and_nothing_else():
    assert check_integer(np.int64(7), 1, 255, "num_classes") == 7
    for bad in (0, 256, 7.0, True, "7", None):
        with pytest.raises(ValueError, match=r"^num_classes must be a whole number in 1\.\.255, got "):
            check_integer(bad, 1, 255, "num_classes")


def test_numbers_of_a_fixed_count():
    assert check_numbers([320, 1056], 2, "input_size", integer=True) == (320, 1056)
    assert check_numbers((0.5, 1, np.float32(2)), 3, "mean") == (0.5, 1.0, 2.0)
    for bad in ([1, 2, 3], "12", [1, math.nan], [1, 10**400], [1.5, 2], [True, 2]):
        with pytest.raises(ValueError, match=r"^input_size must be 2 whole numbers, got "):
            check_numbers(bad, 2, "input_size", integer=True)


def test_numbers_and_finiteness_of_json_values():
    assert is_number(3) and is_number(2.5) and is_number(np.float32(1)) and not is_number(True)
    assert is_number(3, integer=True) and not is_number(3.0, integer=True) and not is_number("3")
    assert is_finite(1e308) and not is_finite(math.inf) and not is_finite(10**400)  # no OverflowError


def test_a_huge_value_is_cut_in_messages():
    assert clip("x" * 10) == repr("x" * 10)
    text = clip(list(range(10**6)), 40)
    assert len(text) == 40 and text.endswith("...")
    with pytest.raises(ValueError) as err:
        check_choice("y" * 10**6, ("a",), "stage")
    assert len(str(err.value)) < 200
