"""Bit-widths are integers 1..16 everywhere, checked in one place (issue 13).

Before: ``bits=[2.5, 4, 8]`` was truncated to (2, 4, 8), ``bits="248"`` read as (2, 4, 8),
a pin to 4.5 became a pin to 4, a solver's ``Allocation(bits={"a": 2.5})`` held 2, and
``True`` was a 1-bit width. Now each is a ConfigError naming the item and the valid range.
"""

from __future__ import annotations

import numpy as np
import pytest

from mpqcore import Allocation, Budget, ConfigError, Objective, Problem
from mpqcore.constraints import BITS_RANGE, check_width, expand_pins
from mpqcore.types import check_bits

VALID = "bit-widths are integers 1..16"


@pytest.mark.parametrize(
    "value, expected",
    [(4, 4), (np.int64(8), 8), (np.uint8(2), 2), (8.0, 8), (np.float32(4.0), 4), (1, 1), (16, 16)],
)
def test_integers_and_integral_floats_are_widths(value, expected):
    width = check_width(value)
    assert width == expected and type(width) is int


@pytest.mark.parametrize(
    "value, message",
    [
        (2.5, r"bit-width = 2.5 is not an integer; " + VALID),
        (4.5, r"bit-width = 4.5 is not an integer"),
        (True, r"bit-width = True is a boolean, not a bit-width; " + VALID),
        (np.bool_(True), r"is a boolean"),
        ("4", r"bit-width = '4' is a string, not a bit-width"),
        (b"4", r"is a string"),
        (None, r"bit-width = None is not an integer"),
        (0, r"bit-width = 0 is outside the valid range; " + VALID),
        (17, r"bit-width = 17 is outside the valid range"),
        (-4, r"outside the valid range"),
        (float("nan"), r"is not an integer"),
        (float("inf"), r"is not an integer"),
        ([4], r"is not an integer"),
    ],
)
def test_everything_else_is_refused_naming_the_value(value, message):
    with pytest.raises(ConfigError, match=message):
        check_width(value)


def test_the_range_is_the_documented_one():
    assert range(1, 17) == BITS_RANGE
    assert [check_width(b) for b in BITS_RANGE] == list(range(1, 17))


@pytest.mark.parametrize(
    "bits, message",
    [
        ([2.5, 4, 8], r"bits\[0\] = 2.5 is not an integer; " + VALID),
        ((2, 4, 8.5), r"bits\[2\] = 8.5 is not an integer"),
        ("248", r"bits = '248' is a string, not a sequence of bit-widths; write e.g. \(2, 4, 8\)"),
        (b"248", r"is a string"),
        ([True, 4], r"bits\[0\] = True is a boolean"),
        (["2", "4"], r"bits\[0\] = '2' is a string"),
        ([2, 4, 32], r"bits\[2\] = 32 is outside the valid range; " + VALID),
        ([], r"bits is empty; give at least one bit-width \(integers 1..16\)"),
        (4, r"bits must be a sequence of bit-widths \(integers 1..16\), e.g. \(2, 4, 8\); got 4"),
        ({2: "a", 4: "b"}, r"bits must be a sequence of bit-widths"),
        ([4, 2, 4], r"bits = \[4, 2, 4\] repeats \[4\]; give each bit-width once"),
    ],
)
def test_check_bits_names_the_bad_item(bits, message):
    with pytest.raises(ConfigError, match=message):
        check_bits(bits)


def test_check_bits_sorts_and_converts():
    assert check_bits([8, np.int32(2), 4.0]) == (2, 4, 8)
    assert check_bits(b for b in (4, 2)) == (2, 4)  # any iterable that is not text


def test_a_pin_to_a_fraction_is_not_a_pin_to_its_floor():
    layers, bits = ["conv1", "fc"], (2, 4, 8)
    with pytest.raises(ConfigError, match=r"pin 'conv1' = 4.5 is not an integer; " + VALID):
        expand_pins({"conv1": 4.5}, layers, bits)
    with pytest.raises(ConfigError, match=r"pin 'conv1' = True is a boolean"):
        expand_pins({"conv1": True}, layers, bits)
    with pytest.raises(ConfigError, match=r"a pin's key is a layer name or fnmatch pattern"):
        expand_pins({4: 4}, layers, bits)
    assert expand_pins({"conv1": 4.0, "f*": np.int64(8)}, layers, bits) == {"conv1": 4, "fc": 8}


def _objective() -> Objective:
    return Objective(layers=["conv1", "fc"], bits=[2, 4, 8], unary=np.zeros((2, 3)))


def test_a_problem_refuses_a_fractional_pin():
    with pytest.raises(ConfigError, match=r"pin 'conv1' = 4.5 is not an integer"):
        Problem(objective=_objective(), pins={"conv1": 4.5})
    assert dict(Problem(objective=_objective(), pins={"conv1": 4}).pins) == {"conv1": 4}


def test_an_allocation_holds_integer_widths_only():
    with pytest.raises(ConfigError, match=r"Allocation.bits\['conv1'\] = 2.5 is not an integer"):
        Allocation(bits={"conv1": 2.5, "fc": 8}, objective=0.0)
    with pytest.raises(ConfigError, match=r"Allocation.bits must map each layer to its bit-width, got list"):
        Allocation(bits=[("conv1", 2)], objective=0.0)
    assert dict(Allocation(bits={"conv1": np.int64(2)}, objective=0.0).bits) == {"conv1": 2}


def test_a_budget_reference_width_and_value_are_checked():
    with pytest.raises(ConfigError, match=r"reference_bits = 4.5 is not an integer"):
        Budget.relative("bops", 0.5, reference_bits=4.5)
    with pytest.raises(ConfigError, match=r"a budget's value must be a positive number, got True"):
        Budget.average_bits(True)
    with pytest.raises(ConfigError, match=r"a budget's value must be a positive number, got '4'"):
        Budget.average_bits("4")
    with pytest.raises(ConfigError, match=r"a budget needs the name of a cost model"):
        Budget.absolute(" ", 10.0)
    assert Budget.relative("bops", 0.5, reference_bits=4.0).reference_bits == 4
