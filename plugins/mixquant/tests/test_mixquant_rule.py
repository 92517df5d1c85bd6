"""The QEM rule: hand-worked picks, monotonicity in QEM, exact thresholds, ties and pins."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mpqcore_mixquant import group_choice, rule_choice, thresholds

# bits (2, 3, 4, 8), reference 8 = column 3.
QE = np.array(
    [
        [16.0, 4.0, 1.0, 0.5],  # ratios to ref: 32, 8, 2, 1
        [0.0, 3.0, 2.0, 1.0],  # exact at 2 bits (e.g. [0, 1/3, 1]): 2 bits at any QEM
        [9.0, 9.0, 9.0, 0.0],  # exact at 8 only: nothing else ever qualifies
    ]
)


def test_rule_by_hand():
    ref = QE[:, 3]
    np.testing.assert_array_equal(rule_choice(QE, ref, 1.0), [3, 0, 3])
    np.testing.assert_array_equal(rule_choice(QE, ref, 2.0), [2, 0, 3])
    np.testing.assert_array_equal(rule_choice(QE, ref, 7.99), [2, 0, 3])
    np.testing.assert_array_equal(rule_choice(QE, ref, 8.0), [1, 0, 3])
    np.testing.assert_array_equal(rule_choice(QE, ref, 1e9), [0, 0, 3])


def test_fallback_is_the_largest_bit_width():
    # a reference that is not among the columns: nothing may qualify
    np.testing.assert_array_equal(rule_choice(np.array([[4.0, 2.0]]), np.array([1.0]), 1.5), [1])


def test_thresholds_by_hand():
    t = thresholds(QE, QE[:, 3])
    np.testing.assert_allclose(t[0], [32.0, 8.0, 2.0, 1.0])
    np.testing.assert_allclose(t[1], [1.0, 3.0, 2.0, 1.0])
    assert math.isinf(t[2, 0]) and t[2, 3] == 1.0


def test_a_tied_group_takes_its_largest_pick_and_pins_win():
    per_layer = np.array([0, 2, 1, 0])
    allowed = np.ones((3, 4), dtype=bool)
    allowed[2] = [False, False, False, True]  # group 2 pinned to column 3
    groups = [[0, 1], [2], [3]]
    np.testing.assert_array_equal(group_choice(per_layer, groups, allowed), [2, 1, 3])


qe_tables = st.tuples(st.integers(1, 6), st.integers(2, 6)).flatmap(
    lambda s: arrays(np.float64, s, elements=st.one_of(st.just(0.0), st.floats(1e-12, 1e3)))
)


@settings(max_examples=300, deadline=None)
@given(qe=qe_tables, ref_col=st.integers(0, 5), q1=st.floats(1, 1e6), q2=st.floats(1, 1e6))
def test_more_qem_never_means_more_bits(qe, ref_col, q1, q2):
    # Holds for any table, also when QE is not monotone in b.
    ref = qe[:, min(ref_col, qe.shape[1] - 1)]
    lo, hi = min(q1, q2), max(q1, q2)
    assert np.all(rule_choice(qe, ref, hi) <= rule_choice(qe, ref, lo))


@settings(max_examples=200, deadline=None)
@given(qe=qe_tables, ref_col=st.integers(0, 5), q1=st.floats(1, 1e6), q2=st.floats(1, 1e6), data=st.data())
def test_group_picks_are_monotone_too(qe, ref_col, q1, q2, data):
    L, B = qe.shape
    ref = qe[:, min(ref_col, B - 1)]
    labels = data.draw(st.lists(st.integers(0, L - 1), min_size=L, max_size=L))
    groups = [[i for i in range(L) if labels[i] == g] for g in sorted(set(labels))]
    allowed = np.ones((len(groups), B), dtype=bool)
    lo, hi = min(q1, q2), max(q1, q2)
    a = group_choice(rule_choice(qe, ref, hi), groups, allowed)
    b = group_choice(rule_choice(qe, ref, lo), groups, allowed)
    assert np.all(a <= b)


@settings(max_examples=200, deadline=None)
@given(qe=qe_tables, ref_col=st.integers(0, 5))
def test_thresholds_are_exactly_where_a_column_becomes_admissible(qe, ref_col):
    ref = qe[:, min(ref_col, qe.shape[1] - 1)]
    t = thresholds(qe, ref)
    for li in range(qe.shape[0]):
        for j in range(qe.shape[1]):
            if math.isinf(t[li, j]):
                assert ref[li] == 0 and qe[li, j] > 0
                continue
            assert t[li, j] >= 1.0
            assert qe[li, j] <= t[li, j] * ref[li]
            below = math.nextafter(t[li, j], 0.0)
            if below >= 1.0:
                assert not qe[li, j] <= below * ref[li]
