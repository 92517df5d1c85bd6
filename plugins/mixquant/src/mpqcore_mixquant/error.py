"""Quantization error: the mean squared error between a weight and its fake-quantized copy."""

from __future__ import annotations

import numpy as np
import torch

from mpqcore.context import MeasureContext

__all__ = ["error_table", "quantization_error"]


def quantization_error(weight: torch.Tensor, fake: torch.Tensor) -> float:
    """``mean((fake - weight)**2)`` in float64, the paper's QE."""
    diff = fake.detach().double().reshape(-1) - weight.detach().double().reshape(-1)
    return float((diff * diff).mean())


def error_table(ctx: MeasureContext) -> np.ndarray:
    """``QE[l, j]``: the MSE of ``ctx.layers[l]`` at ``ctx.bits[j]`` under the user's quantizer."""
    ev = ctx.evaluator
    out = np.empty((len(ctx.layers), len(ctx.bits)))
    for i, fqn in enumerate(ctx.progress(ctx.layers, desc="mixquant: quantization errors", total=len(ctx.layers))):
        w = ev.weight(fqn)
        for j, b in enumerate(ctx.bits):
            out[i, j] = quantization_error(w, ev.fake_quantized(fqn, b))
    return out
