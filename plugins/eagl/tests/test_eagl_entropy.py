"""EAGL's code entropy: hand-worked tensors and properties that always hold."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mpqcore.quantizers import MinMaxPerTensor, SymmetricPerChannel
from mpqcore_eagl import code_entropy, code_histogram, entropy_bits

minmax = MinMaxPerTensor()


def _h(values, bits, quantizer=minmax):
    return code_entropy(quantizer.quantize(torch.tensor(values, dtype=torch.float32), bits))


# -- hand-worked ------------------------------------------------------------------


def test_four_evenly_spaced_weights():
    # w = [0, 1, 2, 3]: lo = 0, hi = 3, zero point 0.
    # 2 bits: scale 1, codes [0, 1, 2, 3]          -> 4 equal bins, H = 2
    # 1 bit:  scale 3, w/3 = [0, .33, .67, 1]      -> codes [0, 0, 1, 1], H = 1
    # 3 bits: scale 3/7, w*7/3 = [0, 2.33, 4.67, 7] -> codes [0, 2, 5, 7], H = 2
    w = [0.0, 1.0, 2.0, 3.0]
    assert _h(w, 2) == pytest.approx(2.0)
    assert _h(w, 1) == pytest.approx(1.0)
    assert _h(w, 3) == pytest.approx(2.0)
    np.testing.assert_array_equal(
        code_histogram(minmax.quantize(torch.tensor(w), 3).codes, 3), [1, 0, 1, 0, 0, 1, 0, 1]
    )


def test_one_outlier():
    # [0, 0, 0, 1]: three weights in code 0, one in the top code at every bit-width.
    expected = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))  # 0.8113
    for b in (1, 2, 4, 8):
        assert _h([0.0, 0.0, 0.0, 1.0], b) == pytest.approx(expected)


def test_symmetric_pair_with_round_half_to_even():
    # [-1, 1] at 2 bits: scale 2/3, zero point round(1.5) = 2; codes round(-1.5)+2 = 0
    # and clamp(round(1.5)+2, 0, 3) = 3: two bins, H = 1.
    assert _h([-1.0, 1.0], 2) == pytest.approx(1.0)


def test_all_zero_weights_have_zero_entropy():
    assert _h([0.0] * 10, 4) == 0.0


def test_entropy_of_counts():
    assert entropy_bits([5, 5, 5, 5]) == pytest.approx(2.0)
    assert entropy_bits([7, 0, 0]) == 0.0
    assert entropy_bits([0, 0]) == 0.0
    assert entropy_bits([1, 3]) == pytest.approx(0.8112781244591328)


def test_codes_outside_the_bins_are_rejected():
    with pytest.raises(ValueError, match="outside"):
        code_histogram(torch.tensor([0, 4]), 2)


# -- properties --------------------------------------------------------------------

weights = arrays(
    np.float32,
    st.integers(1, 300),
    elements=st.floats(-10, 10, width=32, allow_nan=False, allow_infinity=False),
)


@settings(max_examples=200, deadline=None)
@given(w=weights, bits=st.integers(1, 10))
def test_entropy_between_zero_and_bits(w, bits):
    h = _h(w, bits)
    assert 0.0 <= h <= bits + 1e-12
    assert h <= math.log2(w.size) + 1e-9  # n weights fill at most n bins


@settings(max_examples=100, deadline=None)
@given(w=weights, bits=st.integers(1, 8), seed=st.integers(0, 2**32 - 1))
def test_entropy_ignores_the_order_of_the_weights(w, bits, seed):
    perm = np.random.default_rng(seed).permutation(w.size)
    assert _h(w, bits) == pytest.approx(_h(w[perm], bits), abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(
    w=arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(1, 20)), elements=st.floats(-3, 3, width=32)),
    bits=st.integers(2, 8),
)
def test_entropy_bounds_hold_for_per_channel_codes(w, bits):
    h = _h(w, bits, SymmetricPerChannel())
    assert 0.0 <= h <= bits + 1e-12
