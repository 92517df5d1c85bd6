"""The loss tie-break never overturns what the metric decides."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mpqcore_alps import is_lattice, smallest_gap, tie_break_weight, tie_broken


def test_smallest_gap_by_hand():
    assert smallest_gap(np.array([[0.0, 0.0025], [0.0075, 0.0]])) == pytest.approx(0.0025)
    assert smallest_gap(np.zeros((3, 2))) == 0.0
    assert is_lattice(np.array([0.0, 0.0025, 0.0075]), 0.0025)
    assert not is_lattice(np.array([0.0, 0.02, 0.05]), 0.03)


shape = st.tuples(st.integers(1, 5), st.integers(2, 4))


@st.composite
def tables(draw, lattice: bool):
    L, B = draw(shape)
    if lattice:  # accuracy-like: multiples of 1/N
        n = draw(st.integers(10, 1000))
        drops = draw(arrays(np.int64, (L, B), elements=st.integers(-5, 40))) / n
    else:
        drops = draw(arrays(np.float64, (L, B), elements=st.floats(-1, 1, allow_nan=False)))
    loss = draw(arrays(np.float64, (L, B), elements=st.floats(-10, 10, allow_nan=False)))
    return drops, loss


def _value(table, choice):
    return float(table[np.arange(len(choice)), choice].sum())


@settings(max_examples=150, deadline=None)
@given(t=tables(lattice=True), data=st.data())
def test_on_a_lattice_the_order_is_lexicographic(t, data):
    drops, loss = t
    L, B = drops.shape
    eps = tie_break_weight(drops, loss)
    combined = tie_broken(drops, loss, eps)
    gap = smallest_gap(drops)
    a = np.array(data.draw(st.lists(st.integers(0, B - 1), min_size=L, max_size=L)))
    b = np.array(data.draw(st.lists(st.integers(0, B - 1), min_size=L, max_size=L)))
    da, db = _value(drops, a), _value(drops, b)
    if gap > 0 and da < db - gap / 4:  # a is better on the metric
        assert _value(combined, a) < _value(combined, b)
    if abs(da - db) < gap / 4 and eps > 0:  # tied on the metric: the loss decides
        la, lb = _value(loss, a), _value(loss, b)
        if la < lb - 1e-9:
            assert _value(combined, a) < _value(combined, b)


@settings(max_examples=150, deadline=None)
@given(t=tables(lattice=False), data=st.data())
def test_one_layer_changes_keep_the_metric_order(t, data):
    drops, loss = t
    L, B = drops.shape
    eps = tie_break_weight(drops, loss)
    combined = tie_broken(drops, loss, eps)
    li = data.draw(st.integers(0, L - 1))
    j, k = data.draw(st.integers(0, B - 1)), data.draw(st.integers(0, B - 1))
    if drops[li, j] < drops[li, k] - 1e-9 * max(1.0, abs(drops).max()):
        assert combined[li, j] < combined[li, k]


def test_a_tiny_loss_spread_does_not_swamp_the_metric():
    # Found by hypothesis: row 0's loss is 1.0 everywhere (spread 0), row 1's spread is
    # 3e-61, so eps = 0.5 * 1 / 3e-61. Unshifted, eps * 1.0 = 1.7e60 in both entries of
    # row 0 and the metric drops 0 and 1 vanish next to it; shifted, row 0 adds nothing.
    drops = np.array([[0.0, 1.0], [0.0, 0.0]])
    loss = np.array([[1.0, 1.0], [3e-61, 0.0]])
    eps = tie_break_weight(drops, loss)
    value = tie_broken(drops, loss, eps)
    assert eps == pytest.approx(0.5 / 3e-61)
    np.testing.assert_allclose(value, [[0.0, 1.0], [0.5, 0.0]])
