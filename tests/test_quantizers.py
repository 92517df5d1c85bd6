"""Built-in quantizers: code ranges, level counts, error vs bits, edge cases, errors."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mpqcore
from mpqcore import ConfigError
from mpqcore.quantizers import (
    MinMaxPerTensor,
    MSEPerChannel,
    SymmetricPerChannel,
    _clipping_error,
    fake_quantize_activation,
)

QUANTIZERS = mpqcore.PluginSet(autoload=False).quantizers
NAMES = QUANTIZERS.names()
PER_CHANNEL = {"symmetric-per-channel", "mse-per-channel"}
SHAPES = [(64, 64), (16, 3, 3, 3), (8, 5), (4, 2, 7), (1, 9)]


def test_the_builtins_are_registered():
    assert set(NAMES) >= {"minmax-per-tensor", "symmetric-per-channel", "mse-per-channel"}


def weight(seed: int, shape, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale


def mse(q, w) -> float:
    return float(((q.dequantize().reshape(w.shape) - w) ** 2).mean())


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    shape=st.sampled_from(SHAPES),
    scale=st.sampled_from([1e-3, 1.0, 50.0]),
    bits=st.integers(1, 8),
)
def test_codes_in_range_and_at_most_2_to_the_bits_levels(name, seed, shape, scale, bits):
    w = weight(seed, shape, scale)
    original = w.clone()
    q = QUANTIZERS.create(name).quantize(w, bits)
    assert torch.equal(w, original)  # the input is not modified
    assert q.bits == bits and q.levels == 2**bits
    assert not torch.is_floating_point(q.codes)
    assert int(q.codes.min()) >= 0 and int(q.codes.max()) < 2**bits
    deq = q.dequantize()
    assert deq.shape == w.shape and torch.isfinite(deq).all()
    if name in PER_CHANNEL:
        assert q.axis == 0
        for c in range(w.shape[0]):
            assert deq[c].unique().numel() <= 2**bits
    else:
        assert q.axis is None
        assert deq.unique().numel() <= 2**bits
    # The rounding error is at most half a step inside the clipping range, so the error
    # is bounded by the scale: a loose sanity check that the codes mean something.
    if name == "minmax-per-tensor":
        assert float((deq - w).abs().max()) <= float(q.scale) / 2 * (1 + 1e-5) + 1e-12


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), shape=st.sampled_from([(64, 64), (32, 8, 3, 3), (128, 32)]))
def test_error_shrinks_with_bits(name, seed, shape):
    w = weight(seed, shape)
    q = QUANTIZERS.create(name)
    errors = [mse(q.quantize(w, b), w) for b in range(2, 9)]
    for b, (lo, hi) in enumerate(itertools.pairwise(errors), start=2):
        assert hi < lo, f"{name}: {b + 1} bits no better than {b} bits: {errors}"
    assert errors[-1] < errors[0] / 100  # 8 bits is far better than 2


@pytest.mark.parametrize(
    "name",
    [
        "minmax-per-tensor",
        "mse-per-channel",
        pytest.param(
            "symmetric-per-channel",
            marks=pytest.mark.xfail(
                strict=True,
                reason="known quirk: 2-bit narrow range has 3 levels at +-absmax, worse on normal weights than "
                "1-bit sign x mean|w| (MSE ~0.53 vs ~0.36); methods then see 1 bit as less sensitive than 2",
            ),
        ),
    ],
)
def test_two_bits_beat_one_bit(name):
    w = weight(0, (64, 64))
    q = QUANTIZERS.create(name)
    assert mse(q.quantize(w, 2), w) < mse(q.quantize(w, 1), w)


@pytest.mark.parametrize("shift", [0.0, 3.0, -3.0])
@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_minmax_per_tensor_represents_zero_exactly(bits, shift):
    w = weight(1, (32, 32)) + shift  # straddling zero, all positive, all negative
    w[0, :5] = 0.0
    q = MinMaxPerTensor().quantize(w, bits)
    assert float(q.zero_point) == round(float(q.zero_point))  # an integer zero point
    assert torch.all(q.dequantize()[0, :5] == 0.0)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("value", [0.0, 5.0, -3.0])
@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_constant_tensors_give_no_nan_and_are_reproduced(name, value, bits):
    w = torch.full((4, 6), value)
    deq = QUANTIZERS.create(name).quantize(w, bits).dequantize()
    assert torch.isfinite(deq).all()
    torch.testing.assert_close(deq, w, rtol=1e-5, atol=1e-7)


def test_per_channel_constant_and_zero_rows():
    # Bug fixed: at 1 bit an all-zero channel (a pruned filter) dequantized to +1.
    w = weight(2, (4, 10))
    w[1] = 0.0
    w[2] = 7.0
    for q in (SymmetricPerChannel(), MSEPerChannel()):
        for bits in (1, 3, 8):
            deq = q.quantize(w, bits).dequantize()
            assert torch.isfinite(deq).all()
            assert torch.all(deq[1] == 0)
            torch.testing.assert_close(deq[2], w[2])


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), shape=st.sampled_from([(16, 32), (8, 4, 3, 3)]), bits=st.integers(1, 8))
def test_mse_per_channel_is_never_worse_than_symmetric_per_channel(seed, shape, bits):
    w = weight(seed, shape)
    w = w * torch.linspace(0.1, 3.0, shape[0]).reshape((-1,) + (1,) * (len(shape) - 1))
    for quantizer in (MSEPerChannel(), MSEPerChannel(narrow_range=True), MSEPerChannel(mean_penalty=0.0)):
        # by the measure it minimizes: the squared error plus mean_penalty x the squared summed error
        per_a = _clipping_error(
            (quantizer.quantize(w, bits).dequantize() - w).reshape(shape[0], -1), quantizer.mean_penalty
        )
        per_b = _clipping_error(
            (SymmetricPerChannel().quantize(w, bits).dequantize() - w).reshape(shape[0], -1), quantizer.mean_penalty
        )
        assert torch.all(per_a <= per_b + 1e-12), (quantizer, per_a, per_b)


def test_mse_per_channel_clips_heavy_tails():
    # One outlier per channel: clipping it lowers the error of the other weights enough.
    w = weight(3, (8, 256))
    w[:, 0] = 5.0
    a = mse(MSEPerChannel().quantize(w, 3), w)
    b = mse(SymmetricPerChannel().quantize(w, 3), w)
    assert a < 0.5 * b


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    shape=st.sampled_from([(16, 32), (8, 4, 3, 3), (4, 200)]),
    bits=st.integers(2, 8),
    group=st.sampled_from([None, 8]),
)
def test_full_range_is_never_worse_than_narrow_with_the_same_ratios(seed, shape, bits, group):
    # The full range adds the level -2**(b-1) to every candidate scale, so each channel's best error can only drop.
    w = weight(seed, shape) * torch.linspace(0.2, 2.0, shape[0]).reshape((-1,) + (1,) * (len(shape) - 1))
    w[0].neg_()  # a channel whose largest magnitude is positive and one whose is negative, either way
    # (MSE alone, mean_penalty=0: each weight's error can only shrink, but its sign may change, so the
    # squared summed error the default also counts carries no such guarantee)
    per_group = []
    for narrow in (True, False):
        q = MSEPerChannel(narrow_range=narrow, group_size=group, mean_penalty=0.0).quantize(w, bits)
        rows = (q.dequantize().reshape(shape) - w).reshape(shape[0], -1)
        groups = [rows] if group is None else [rows[:, i : i + group] for i in range(0, rows.shape[1], group)]
        per_group.append(torch.cat([(g**2).mean(1) for g in groups]))
    assert torch.all(per_group[1] <= per_group[0] + 1e-12), per_group


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_full_range_uses_every_code(bits):
    # Narrow range never writes code 0 (the value -2**(b-1)); the full range does, on weights with a heavy negative tail.
    w = weight(6, (8, 512))
    for narrow, quantizer in ((True, MSEPerChannel(narrow_range=True)), (False, MSEPerChannel())):
        q = quantizer.quantize(w, bits)
        assert torch.all(q.zero_point == 2 ** (bits - 1))
        assert int(q.codes.max()) == 2**bits - 1
        if narrow:
            assert int(q.codes.min()) == 1
        elif bits <= 4:  # at 8 bits the search keeps ratio 1 on normal weights: nothing reaches -2**(b-1)
            assert int(q.codes.min()) == 0
    q = SymmetricPerChannel(narrow_range=False).quantize(w, bits)
    assert int(q.codes.min()) == 0 and int(q.codes.max()) == 2**bits - 1
    # torchao's symmetric scale: absmax / (2**(b-1) - 0.5), so the largest magnitude sits half a step past the ends
    absmax = w.abs().amax(1, keepdim=True)
    torch.testing.assert_close(q.scale.reshape(-1, 1), absmax / (2 ** (bits - 1) - 0.5))


def test_the_mean_penalty_keeps_a_channel_sum_that_mse_alone_shifts():
    # Full range, MSE alone: the extra negative level and the clipping move each channel's sum of
    # weights; with inputs of nonzero mean (after a ReLU) that shift is a bias in every output.
    w = weight(8, (64, 1024))
    x = torch.relu(torch.randn(1024, 256, generator=torch.Generator().manual_seed(9)))
    out = {}
    for penalty in (0.0, 1.0):
        q = MSEPerChannel(mean_penalty=penalty).quantize(w, 3).dequantize()
        out[penalty] = (float((q - w).sum(1).abs().mean()), float((((q - w) @ x) ** 2).mean()))
    (shift_mse, output_mse), (shift_pen, output_pen) = out[0.0], out[1.0]
    assert shift_pen < 0.5 * shift_mse, out
    assert output_pen < output_mse, out


def test_full_range_lowers_two_bit_error_on_normal_weights():
    # Measured on the tasks: about -20% relative squared error at 2 bits; on normal weights the gain is as large.
    w = weight(7, (64, 256))
    narrow = mse(MSEPerChannel(narrow_range=True, min_ratio=0.3, mean_penalty=0.0).quantize(w, 2), w)
    full = mse(MSEPerChannel(mean_penalty=0.0).quantize(w, 2), w)
    assert full < 0.85 * narrow, (full, narrow)


def test_symmetric_per_channel_codes_are_symmetric():
    w = weight(4, (6, 40))
    q = SymmetricPerChannel().quantize(w, 4)
    assert torch.all(q.zero_point == 8) and int(q.codes.min()) >= 1  # narrow range [-7, 7] + 8
    torch.testing.assert_close(SymmetricPerChannel().quantize(-w, 4).dequantize(), -q.dequantize())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bits", [0, 17, -1])
def test_bits_outside_1_to_16(name, bits):
    with pytest.raises(ConfigError, match=f"quantizer '{name}': bits {bits} outside 1..16"):
        QUANTIZERS.create(name).quantize(torch.randn(4, 4), bits)


@pytest.mark.parametrize("name", NAMES)
def test_sixteen_bits_is_valid(name):
    w = weight(5, (8, 8))
    q = QUANTIZERS.create(name).quantize(w, 16)
    assert int(q.codes.max()) < 2**16
    torch.testing.assert_close(q.dequantize(), w, atol=1e-3, rtol=0)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.int32, torch.int8, torch.bool])
def test_integer_tensors_are_rejected(name, dtype):
    with pytest.raises(ConfigError, match=f"quantizer '{name}': weight must be a float tensor"):
        QUANTIZERS.create(name).quantize(torch.ones(4, 4, dtype=dtype), 4)


def test_mse_grid_option():
    with pytest.raises(ConfigError, match="grid must be an integer >= 1, got 0"):
        QUANTIZERS.create("mse-per-channel", grid=0)
    assert QUANTIZERS.create("mse-per-channel", grid=5).grid == 5


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_fake_quantize_activation(bits):
    x = torch.randn(8, 30, generator=torch.Generator().manual_seed(6))
    x[0, 0] = 0.0
    y = fake_quantize_activation(x, bits)
    assert y.shape == x.shape and y.unique().numel() <= 2**bits
    assert y[0, 0] == 0.0
    assert float((y - x).abs().max()) <= float(x.max() - x.min()) / (2**bits - 1)
    ints = torch.arange(5)
    assert fake_quantize_activation(ints, 2) is ints
