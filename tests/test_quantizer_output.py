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


class Halves:
    """A faulty quantizer plugin: half of the codes it returns are out of range."""

    name = "halves"

    def quantize(self, weight, bits):
        from mpqcore.quantizers import MinMaxPerTensor

        q = MinMaxPerTensor().quantize(weight, bits)
        return QuantizedTensor(q.codes * 2, q.scale, q.zero_point, bits)


def test_a_faulty_quantizer_is_named_in_a_search():
    import mpqcore

    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    with pytest.raises(PluginError, match=r"^quantizer .halves. returned codes in \[0, \d+\], outside \[0, 3\]"):
        mpqcore.search(model, [torch.randn(3, 5)], method="hawq", bits=(2,), budget=None, quantizer=Halves(),
                       plugins=mpqcore.PluginSet(autoload=False))  # fmt: skip
