"""Whatever a quantizer plugin returns is checked before it is used (issue 13)."""

from __future__ import annotations

import pytest
import torch

from mpqcore import PluginError, QuantizedTensor
from mpqcore.quantizers import MinMaxPerTensor, MSEPerChannel, SymmetricPerChannel, check_quantized

W = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("quantizer", [MinMaxPerTensor(), SymmetricPerChannel(), MSEPerChannel()])
@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_the_built_in_quantizers_pass(quantizer, bits):
    check_quantized(quantizer.quantize(W, bits), W, bits, who="quantizer")


def good(bits=4):
    return MinMaxPerTensor().quantize(W, bits)


@pytest.mark.parametrize(
    ("result", "message"),
    [
        (W, "returned Tensor, expected mpqcore.QuantizedTensor"),
        (good(8), "was asked for 4 bits and returned 8-bit codes"),
        (QuantizedTensor(good().codes + 20, good().scale, good().zero_point, 4), r"outside \[0, 15\]"),
        (QuantizedTensor(good().codes.float() + 0.5, good().scale, good().zero_point, 4), "not integers"),
        (QuantizedTensor(good().codes[:3], good().scale, good().zero_point, 4), r"dequantizes to shape \(3, 5\)"),
        (QuantizedTensor(good().codes, torch.tensor(float("nan")), good().zero_point, 4), "non-finite"),
    ],
)
def test_a_faulty_result_is_named(result, message):
    with pytest.raises(PluginError, match=f"quantizer 'odd' .*{message}"):
        check_quantized(result, W, 4, who="quantizer 'odd'", plugin="odd")
