"""ALPS: Accuracy-aware Layer Precision Selection (arXiv 2301.13330), as an mpq method.

Start from the base model (every decision layer at ``base_bits``, pinned layers at their
pins); for each layer alone and each other candidate bit-width, move that layer to the
candidate, optionally fine-tune briefly with a straight-through estimator, and measure
how much the score drops. The drops are the objective; the knapsack assumes they add.
"""

from __future__ import annotations

import attrs
import numpy as np

from mpqcore.context import MeasureContext
from mpqcore.errors import ConfigError
from mpqcore.options import option
from mpqcore.types import BITS_RANGE, Objective
from mpqcore_alps.drops import Scorer, drop_table
from mpqcore_alps.tiebreak import is_lattice, smallest_gap, tie_break_weight, tie_broken

__all__ = ["TIE_BREAKS", "AccuracyAwareSelection"]

TIE_BREAKS = ("loss", "none")


@attrs.frozen
class AccuracyAwareSelection:
    """ALPS: the score drop of each layer alone moved from the base precision.

    Options
    -------
    base_bits: the base precision (default ``None``: the highest candidate).
    finetune_steps: straight-through fine-tuning steps before each score (0 = none).
    lr: Adam learning rate of that fine-tuning.
    use_metric: score with minus the calibration loss (``False``, default) or with the
        user's metric (``True``: the paper's accuracy drop); ``None`` uses the metric when
        one was given. The loss is the default because the metric's single-layer drops
        are coarse: an accuracy on N examples moves in steps of 1/N, and from the base
        most layers at 3 bits and above drop by 0-3 examples, below what ranks them
        (``tie_break`` orders only exact ties); and the metric is the user's held-out
        data, which selecting on would fit. The calibration loss is continuous and comes
        from the calibration batches only. See the README's measured comparison.
    tie_break: ``"loss"`` adds the loss increase, scaled so that it only orders what the
        metric leaves tied (see :mod:`mpqcore_alps.tiebreak`); ``"none"`` does not.
        Only used when scoring with the metric.
    """

    base_bits: int | None = option(
        int, default=None, minimum=BITS_RANGE.start, maximum=BITS_RANGE.stop - 1, optional=True, help="base precision"
    )
    finetune_steps: int = option(int, default=0, minimum=0, help="straight-through fine-tuning steps before each score")
    lr: float = option(float, default=1e-4, greater_than=0.0, help="Adam learning rate of the fine-tuning")
    use_metric: bool | None = option(
        bool, default=False, optional=True, help="score with the metric, not the calibration loss (None: if given)"
    )
    tie_break: str = option(str, default="loss", choices=TIE_BREAKS, help="break the metric's ties by the loss")

    def measure(self, ctx: MeasureContext) -> Objective:
        ev = ctx.evaluator
        if self.use_metric and not ev.has_metric:
            raise ConfigError("option use_metric=True but no metric was given; pass metric=... or use_metric=False")
        use_metric = ev.has_metric if self.use_metric is None else self.use_metric
        base = max(ctx.bits) if self.base_bits is None else self.base_bits
        score = Scorer(ctx, use_metric=use_metric, steps=self.finetune_steps, lr=self.lr)
        drops, reference = drop_table(ctx, base, score, desc="alps: " + ("metric" if use_metric else "loss") + " drops")
        info = {
            "method": "alps",
            "base_bits": base,
            "score": "metric" if use_metric else "loss",
            "finetune_steps": self.finetune_steps,
            "lr": self.lr,
            "reference_score": reference,
            "drop": _as_dict(ctx, drops),
            "tie_break": "none",
        }
        unary = drops
        if use_metric and self.tie_break == "loss":
            loss_score = Scorer(ctx, use_metric=False, steps=self.finetune_steps, lr=self.lr)
            loss_increase, ref_loss = drop_table(ctx, base, loss_score, desc="alps: loss tie-break")
            eps = tie_break_weight(drops, loss_increase)
            gap = smallest_gap(drops)
            unary = tie_broken(drops, loss_increase, eps)
            info.update(
                tie_break="loss",
                tie_break_weight=eps,
                tie_break_lexicographic=gap > 0 and is_lattice(drops, gap),
                reference_loss=-ref_loss,
                loss_increase=_as_dict(ctx, loss_increase),
            )
        return Objective(layers=ctx.layers, bits=ctx.bits, unary=unary, info=ctx.option_info(**info))


def _as_dict(ctx: MeasureContext, table: np.ndarray) -> dict[str, dict[int, float]]:
    return {f: {int(b): float(table[i, j]) for j, b in enumerate(ctx.bits)} for i, f in enumerate(ctx.layers)}
