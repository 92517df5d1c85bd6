"""EAGL: Entropy Approximation Guided Layer selection (arXiv 2301.13330), as an mpq method.

For each decision layer and candidate bit-width ``b`` the weights are quantized with the
user's quantizer (``ctx.evaluator.quantized``), the integer codes are histogrammed over
the ``2**b`` bins and the entropy ``H_b`` (bits) is taken. A layer whose codes fill
their bins evenly carries more information and is taken to be more sensitive.

The objective (lower is better) is the information lost by storing the layer at ``b``
bits instead of at the highest candidate ``b_max``::

    per-weight:  c[l, b] = H_bmax(l) - H_b(l)              bits per weight
    params:      c[l, b] = n_l * (H_bmax(l) - H_b(l))      bits for the whole layer
    cost:        c[l, b] = k_l * (H_bmax(l) - H_b(l))      k_l: the layer's cost per bit

A constant per layer does not change which bit-width a multiple-choice knapsack picks,
so measuring from ``b_max`` only makes the numbers readable (0 at ``b_max``); the
scaling does change the allocation (see the README). ``cost`` (the default) scales by
the slope ``k_l`` of the layer's row in the table of the cost the budget is on: ``n_l``
for weight size, where it is ``params`` exactly, and ``MACs_l x activation bits`` for
BOPs. The knapsack then trades entropy per weight against bits of the layer's width in
every layer alike, whatever the budget counts; scaling by ``n_l`` under a BOPs budget
instead makes a layer with many weights per MAC (ResNet-18's layer4) both the most
"sensitive" and the cheapest, so it got 8 bits and the early layers 2.
"""

from __future__ import annotations

import attrs
import numpy as np

from mpqcore.context import MeasureContext
from mpqcore.options import option
from mpqcore.types import Objective
from mpqcore_eagl.entropy import code_entropy

__all__ = ["SCALES", "EntropyGuided", "cost_scale", "entropy_table"]

#: How the per-layer entropy loss is scaled: by the layer's cost per bit under the budget, its parameter count, or not.
SCALES = ("cost", "params", "per-weight")


def entropy_table(ctx: MeasureContext) -> np.ndarray:
    """``H[l, j]``: the code entropy (bits) of ``ctx.layers[l]`` at ``ctx.bits[j]``."""
    ev = ctx.evaluator
    out = np.empty((len(ctx.layers), len(ctx.bits)))
    for i, fqn in enumerate(ctx.progress(ctx.layers, desc="eagl: code entropies", total=len(ctx.layers))):
        for j, b in enumerate(ctx.bits):
            out[i, j] = code_entropy(ev.quantized(fqn, b))
    return out


def cost_scale(ctx: MeasureContext) -> np.ndarray:
    """``k_l``: each layer's cost per bit of width under ``ctx.cost`` (its table's slope from the lowest to the highest bits).

    The parameter count when the context has no cost tables (a context built by hand) or
    the cost is weight size. A layer that costs nothing under that model (an embedding
    under BOPs: a lookup multiplies nothing) gets the smallest positive scale of the
    others, so that it still prefers more bits, which it has for free.
    """
    table = ctx.costs.get(ctx.cost)
    if table is None or len(ctx.bits) < 2:
        return ctx.params
    slope = (table[:, -1] - table[:, 0]) / (ctx.bits[-1] - ctx.bits[0])
    positive = slope[slope > 0]
    if positive.size == 0:
        return ctx.params
    return np.where(slope > 0, slope, positive.min())


@attrs.frozen
class EntropyGuided:
    """EAGL: information lost (code entropy) relative to the highest candidate bit-width.

    Options
    -------
    scale: ``"cost"`` (default) multiplies each layer's entropy loss by its cost per bit
        under the budget's cost model (:func:`cost_scale`; the parameter count for weight
        size); ``"params"`` by its parameter count, i.e. the bits of information the whole
        layer loses, whatever the budget; ``"per-weight"`` keeps the loss per weight, as
        the paper's per-layer entropy value.
    """

    scale: str = option(str, default="cost", choices=SCALES, help="scale the entropy loss by cost per bit or params")

    def measure(self, ctx: MeasureContext) -> Objective:
        entropy = entropy_table(ctx)
        lost = entropy[:, [-1]] - entropy  # bits are ascending: the last column is b_max
        scaled_by = {"cost": ctx.cost, "params": "params", "per-weight": "none"}[self.scale]
        if self.scale == "cost":
            unary = lost * cost_scale(ctx)[:, None]
        else:
            unary = lost * ctx.params[:, None] if self.scale == "params" else lost
        info = ctx.option_info(
            method="eagl",
            scale=self.scale,
            scaled_by=scaled_by,
            entropy={
                f: {int(b): float(entropy[i, j]) for j, b in enumerate(ctx.bits)} for i, f in enumerate(ctx.layers)
            },
        )
        return Objective(layers=ctx.layers, bits=ctx.bits, unary=unary, info=info)
