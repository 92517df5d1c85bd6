"""Splitting a batch of evaluations between workers: contiguous parts of about equal work."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mpqcore.workers import split_by_cost


@settings(max_examples=300, deadline=None)
@given(
    costs=st.lists(st.floats(0.0, 10.0, allow_nan=False), min_size=1, max_size=60),
    parts=st.integers(1, 8),
    weighted=st.booleans(),
)
def test_parts_cover_the_batch_in_order_with_about_equal_work(costs, parts, weighted):
    n = len(costs)
    slices = split_by_cost(n, parts, costs if weighted else None)
    assert 1 <= len(slices) <= parts
    assert [i for s in slices for i in range(s.start, s.stop)] == list(range(n))  # contiguous, in order
    assert all(s.stop > s.start for s in slices)
    if weighted and sum(costs) > 0:
        share = sum(costs) / parts
        for s in slices:
            part = costs[s]
            assert sum(part) <= share + max(part) + 1e-9
    elif not weighted:
        sizes = [s.stop - s.start for s in slices]
        assert max(sizes) - min(sizes) <= max(1, -(-n // parts))


def test_a_front_heavy_batch_is_not_cut_in_half():
    # CLADO's pairs in prefix order: the first runs cost a whole pass, later ones a small suffix
    costs = [1.0] * 10 + [0.1] * 90
    first, second = split_by_cost(100, 2, costs)
    assert sum(costs[first]) <= 9.5 + 1.0 and sum(costs[second]) <= 9.5 + 1.0  # a share plus one run
    assert first.stop < 50
