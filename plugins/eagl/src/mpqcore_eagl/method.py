"""EAGL: Entropy Approximation Guided Layer selection (arXiv 2301.13330), as an mpq method.

For each decision layer and candidate bit-width ``b`` the weights are quantized with the
user's quantizer (``ctx.evaluator.quantized``), the integer codes are histogrammed over
the ``2**b`` bins and the entropy ``H_b`` (bits) is taken. A layer whose codes fill
their bins evenly carries more information and is taken to be more sensitive.

The objective (lower is better) is the information lost by storing the layer at ``b``
bits instead of at the highest candidate ``b_max``::

    per-weight:  c[l, b] = H_bmax(l) - H_b(l)              bits per weight
    params:      c[l, b] = n_l * (H_bmax(l) - H_b(l))      bits for the whole layer

A constant per layer does not change which bit-width a multiple-choice knapsack picks,
so measuring from ``b_max`` only makes the numbers readable (0 at ``b_max``); the
scaling by the parameter count ``n_l`` does change the allocation (see the README).
"""

from __future__ import annotations

import attrs
import numpy as np

from mpqcore.context import MeasureContext
from mpqcore.options import option
from mpqcore.types import Objective
from mpqcore_eagl.entropy import code_entropy

__all__ = ["SCALES", "EntropyGuided", "entropy_table"]

#: How the per-layer entropy loss is scaled: by the parameter count, or not at all.
SCALES = ("params", "per-weight")


def entropy_table(ctx: MeasureContext) -> np.ndarray:
    """``H[l, j]``: the code entropy (bits) of ``ctx.layers[l]`` at ``ctx.bits[j]``."""
    ev = ctx.evaluator
    out = np.empty((len(ctx.layers), len(ctx.bits)))
    for i, fqn in enumerate(ctx.progress(ctx.layers, desc="eagl: code entropies", total=len(ctx.layers))):
        for j, b in enumerate(ctx.bits):
            out[i, j] = code_entropy(ev.quantized(fqn, b))
    return out


@attrs.frozen
class EntropyGuided:
    """EAGL: information lost (code entropy) relative to the highest candidate bit-width.

    Options
    -------
    scale: ``"params"`` (default) multiplies each layer's entropy loss by its parameter
        count, i.e. the bits of information the whole layer loses; ``"per-weight"``
        keeps the loss per weight, as the paper's per-layer entropy value.
    """

    scale: str = option(str, default="params", choices=SCALES, help="scale the entropy loss by the parameter count")

    def measure(self, ctx: MeasureContext) -> Objective:
        entropy = entropy_table(ctx)
        lost = entropy[:, [-1]] - entropy  # bits are ascending: the last column is b_max
        unary = lost * ctx.params[:, None] if self.scale == "params" else lost
        info = ctx.option_info(
            method="eagl",
            scale=self.scale,
            entropy={
                f: {int(b): float(entropy[i, j]) for j, b in enumerate(ctx.bits)} for i, f in enumerate(ctx.layers)
            },
        )
        return Objective(layers=ctx.layers, bits=ctx.bits, unary=unary, info=info)
