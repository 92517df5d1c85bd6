"""Score drops: how much worse the model gets when one layer leaves the base precision.

The base model has every decision layer at ``base_bits`` and every pinned layer at its
pin. For one layer ``l`` and one bit-width ``b`` the drop is::

    drop[l, b] = score(base) - score(base with l at b)

where ``score`` is the user's metric as a score (higher is better: minus a
lower-is-better metric such as perplexity) or minus the calibration loss,
each optionally taken after ``steps`` of straight-through fine-tuning of the quantized
layers (``Evaluator.finetuned_score``; only clones are trained). ``drop[l, base] = 0``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import attrs
import numpy as np

from mpqcore.context import MeasureContext

__all__ = ["Scorer", "drop_table"]


@attrs.frozen
class Scorer:
    """``score(assignment)``, higher is better: the metric as a score or minus the loss, optionally after fine-tuning."""

    ctx: MeasureContext
    use_metric: bool
    steps: int = 0
    lr: float = 1e-4

    def __call__(self, assignment: Mapping[str, int]) -> float:
        ev = self.ctx.evaluator
        if self.steps > 0:
            return ev.finetuned_score(
                dict(assignment), steps=self.steps, lr=self.lr, use_metric=self.use_metric, seed=self.ctx.seed
            )
        return ev.metric_score(assignment) if self.use_metric else -ev.loss(assignment)


def drop_table(
    ctx: MeasureContext, base_bits: int, score: Callable[[Mapping[str, int]], float], *, desc: str = "alps"
) -> tuple[np.ndarray, float]:
    """``(drop[l, j], score(base))`` for every decision layer and candidate bits."""
    base = ctx.with_fixed(dict.fromkeys(ctx.layers, base_bits))
    reference = score(base)
    out = np.zeros((len(ctx.layers), len(ctx.bits)))
    for i, fqn in enumerate(ctx.progress(ctx.layers, desc=desc, total=len(ctx.layers))):
        for j, b in enumerate(ctx.bits):
            if b != base_bits:
                out[i, j] = reference - score({**base, fqn: b})
    return out, reference
