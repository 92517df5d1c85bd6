"""Score drops: how much worse the model gets when one layer leaves the base precision.

The base model has every decision layer at ``base_bits`` and every pinned layer at its
pin. For one layer ``l`` and one bit-width ``b`` the drop is::

    drop[l, b] = score(base) - score(base with l at b)

where ``score`` is the user's metric as a score (higher is better: minus a
lower-is-better metric such as perplexity) or minus the calibration loss,
each optionally taken after ``steps`` of straight-through fine-tuning of the quantized
layers (``Evaluator.finetuned_score``; only clones are trained). ``drop[l, base] = 0``.

Without fine-tuning the whole table is one batch of the evaluator's
(``Evaluator.losses`` / ``Evaluator.metrics``): prefix reuse and Ray workers apply.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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

    def many(self, assignments: Sequence[Mapping[str, int]]) -> list[float]:
        """``[self(a) for a in assignments]``, as one batch of the evaluator's when nothing is fine-tuned."""
        ev = self.ctx.evaluator
        if self.steps > 0:
            return [self(a) for a in assignments]
        return ev.metric_scores(assignments) if self.use_metric else [-v for v in ev.losses(assignments)]


def drop_table(ctx: MeasureContext, base_bits: int, score: Scorer, *, desc: str = "alps") -> tuple[np.ndarray, float]:
    """``(drop[l, j], score(base))`` for every decision layer and candidate bits."""
    base = ctx.with_fixed(dict.fromkeys(ctx.layers, base_bits))
    cells = [(i, j) for i in range(len(ctx.layers)) for j, b in enumerate(ctx.bits) if b != base_bits]
    assignments = [base] + [{**base, ctx.layers[i]: ctx.bits[j]} for i, j in cells]
    step = len(assignments) if score.steps == 0 else 1  # fine-tuning runs one at a time anyway
    values: list[float] = []
    chunks = range(0, len(assignments), step)
    for start in ctx.progress(chunks, desc=desc, total=len(chunks)):
        values.extend(score.many(assignments[start : start + step]))
    reference = values[0]
    out = np.zeros((len(ctx.layers), len(ctx.bits)))
    for (i, j), value in zip(cells, values[1:], strict=True):
        out[i, j] = reference - value
    return out, reference
