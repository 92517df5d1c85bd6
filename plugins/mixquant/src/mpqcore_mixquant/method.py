"""The ``mixquant`` method: per-layer quantization error as the knapsack objective.

``QE[l, b]`` is the MSE between layer ``l``'s float weights and their fake-quantized
copy at ``b`` bits (the paper's roundoff-error proxy). As an objective it is scaled:

- ``params`` (default): ``n_l * QE`` = the layer's total squared error ``||Q_b(W) - W||^2``,
  which adds up over weights, so a knapsack compares layers on one scale;
- ``per-weight``: ``QE`` itself, the MSE the paper's rule compares.

The ``mixquant-qem`` solver applies the paper's QEM rule to either: the rule compares
each layer's errors only with its own error at the reference bits, so a per-layer
factor does not change its answer.
"""

from __future__ import annotations

import attrs

from mpqcore.context import MeasureContext
from mpqcore.options import option
from mpqcore.types import Objective
from mpqcore_mixquant.error import error_table

__all__ = ["SCALES", "QuantizationErrorMethod"]

SCALES = ("params", "per-weight")


@attrs.frozen
class QuantizationErrorMethod:
    """MixQuant: the weight quantization error (MSE) of each layer at each bit-width.

    Its one option, ``scale``, is ``"params"`` (the default: the layer's total squared
    error ``n_l * MSE``) or ``"per-weight"`` (the MSE itself).
    """

    scale: str = option(str, default="params", choices=SCALES, help="the layer's total squared error, or its MSE")

    def measure(self, ctx: MeasureContext) -> Objective:
        mse = error_table(ctx)
        unary = mse * ctx.params[:, None] if self.scale == "params" else mse
        info = ctx.option_info(
            method="mixquant",
            scale=self.scale,
            mse={f: {int(b): float(mse[i, j]) for j, b in enumerate(ctx.bits)} for i, f in enumerate(ctx.layers)},
        )
        return Objective(layers=ctx.layers, bits=ctx.bits, unary=unary, info=info)
