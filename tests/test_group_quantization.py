"""Per-group scales (``group_size``) of every built-in quantizer: hand-computed codes, the
stored shapes, the transposed-axis round trip and what a grouped layout stores."""

from __future__ import annotations

import pytest
import torch

import mpqcore
from mpqcore.errors import ConfigError, PluginError
from mpqcore.layer_kinds import quantize_along
from mpqcore.layout import Layout
from mpqcore.quantizers import MinMaxPerTensor, MSEPerChannel, QuantizedTensor, SymmetricPerChannel, check_quantized

QUANTIZERS = mpqcore.PluginSet(autoload=False).quantizers


def test_minmax_per_group_is_asymmetric_per_group_by_hand():
    # groups of 2 along K, the last group of each channel shorter (K = 5)
    w = torch.tensor([[-1.0, 0.5, 2.0, -4.0, 3.0], [0.0, 0.0, 1.0, 1.0, -1.0]])
    q = MinMaxPerTensor(group_size=2).quantize(w, 2)
    # group [-1, 0.5]: scale 1.5/3 = 0.5, zero point 2; [2, -4]: scale 2, zero point 2;
    # [3]: widened to [0, 3], scale 1, zero point 0. Row 2: [0, 0] has no range (scale 1);
    # [1, 1]: [0, 1], scale 1/3; [-1]: [-1, 0], scale 1/3, zero point 3.
    assert torch.allclose(q.scale, torch.tensor([[0.5, 2.0, 1.0], [1.0, 1 / 3, 1 / 3]]))
    assert torch.equal(q.zero_point, torch.tensor([[2.0, 2.0, 0.0], [0.0, 0.0, 3.0]]))
    assert torch.equal(q.codes, torch.tensor([[0, 3, 3, 0, 3], [0, 0, 3, 3, 0]], dtype=torch.int32))
    assert q.group_size == 2 and q.codes.shape == (2, 5) and q.scale.shape == (2, 3)
    assert torch.allclose(q.dequantize(), w)  # every value lies on its group's grid


def test_symmetric_per_group_by_hand():
    w = torch.tensor([[0.3, -0.6, 1.0, 0.1]])
    q = SymmetricPerChannel(group_size=2).quantize(w, 3)
    # qmax 3: group [0.3, -0.6] scale 0.2 -> 1.5 rounds to 2, -3; group [1, 0.1] scale 1/3 -> 3, 0.3 -> 0
    assert torch.allclose(q.scale, torch.tensor([[0.2, 1 / 3]]))
    assert torch.equal(q.codes, torch.tensor([[6, 1, 7, 4]], dtype=torch.int32))
    assert torch.allclose(q.dequantize(), torch.tensor([[0.4, -0.6, 1.0, 0.0]]))


@pytest.mark.parametrize("name", ["minmax-per-tensor", "symmetric-per-channel", "mse-per-channel"])
@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_grouped_shapes_and_error_not_worse_than_ungrouped(name, group_size):
    w = torch.randn(24, 300, generator=torch.Generator().manual_seed(1))
    grouped = QUANTIZERS.create(name, group_size=group_size)
    q = grouped.quantize(w, 3)
    check_quantized(q, w, 3, who="test")
    groups = -(-300 // group_size)
    assert q.codes.shape == (24, 300) and q.scale.shape == q.zero_point.shape == (24, groups)
    assert grouped.layout == Layout("group", symmetric=name != "minmax-per-tensor", group_size=group_size)
    assert grouped.layout.groups(w.shape) == 24 * groups
    err = float(((q.dequantize() - w) ** 2).mean())
    flat = float(((QUANTIZERS.create(name).quantize(w, 3).dequantize() - w) ** 2).mean())
    assert err < flat  # finer scales fit better on Gaussian weights
    for c in (0, 23):  # each group of a channel takes at most 2**bits values
        for start in range(0, 300, group_size):
            assert q.dequantize()[c, start : start + group_size].unique().numel() <= 8


def test_a_group_is_quantized_as_its_own_channel():
    """A grouped quantizer on [C, K] equals the per-channel one on the groups as rows (MSE clipping too)."""
    w = torch.randn(5, 64, generator=torch.Generator().manual_seed(2))
    q = MSEPerChannel(group_size=16).quantize(w, 4)
    rows = MSEPerChannel().quantize(w.reshape(20, 16), 4)
    assert torch.equal(q.dequantize(), rows.dequantize().reshape(5, 64))
    assert torch.equal(q.scale, rows.scale.reshape(5, 4))


@pytest.mark.parametrize("name", ["minmax-per-tensor", "symmetric-per-channel", "mse-per-channel"])
def test_a_grouped_conv_transpose_weight_dequantizes_to_its_own_shape(name):
    # ConvTranspose2d keeps output channels on axis 1: [in, out, kh, kw]
    w = torch.randn(6, 4, 3, 3, generator=torch.Generator().manual_seed(3))
    quantizer = QUANTIZERS.create(name, group_size=8)
    q = quantize_along(quantizer, w, 3, axis=1)
    assert q.codes.shape == (4, 54) and q.scale.shape == (4, 7) and q.axis == 1
    moved = quantizer.quantize(w.movedim(1, 0).contiguous(), 3)
    assert torch.equal(q.codes, moved.codes)  # the stored [C, K] view of the moved weight
    assert torch.equal(q.dequantize().reshape(w.shape), moved.dequantize().movedim(0, 1))


def test_apply_with_groups_on_a_conv_transpose_layer():
    model = torch.nn.Sequential(torch.nn.ConvTranspose2d(6, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    model(torch.randn(1, 6, 5, 5))
    quantizer = SymmetricPerChannel(group_size=8)
    out = mpqcore.apply(model, {"0": 4}, quantizer)
    w = model[0].weight.detach()
    want = quantizer.quantize(w.movedim(1, 0).contiguous(), 4).dequantize().movedim(0, 1)
    assert torch.equal(out[0].weight.detach(), want)


def test_group_size_must_be_positive():
    with pytest.raises(ConfigError, match="group_size"):
        QUANTIZERS.create("mse-per-channel", group_size=0)


def test_a_grouped_result_with_wrong_scale_shape_is_named():
    w = torch.randn(4, 10)
    bad = QuantizedTensor(torch.zeros(4, 10, dtype=torch.int32), torch.ones(4, 2), torch.zeros(4, 2), 3, 0, 4)
    with pytest.raises(PluginError, match=r"expected \(4, 3\)"):
        check_quantized(bad, w, 3, who="quantizer 'odd'")
