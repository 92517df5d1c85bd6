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
from mpqcore.types import BITS_RANGE, Objective
from mpqcore_alps.drops import Scorer, drop_table
from mpqcore_alps.tiebreak import is_lattice, smallest_gap, tie_break_weight, tie_broken

__all__ = ["TIE_BREAKS", "AccuracyAwareSelection"]

TIE_BREAKS = ("loss", "none")
_WHERE = "method 'alps' (plugin mpqcore-alps)"


def _bad(option: str, value, valid: str) -> ConfigError:
    return ConfigError(f"{_WHERE}: option {option}={value!r} is not valid; valid: {valid}")


def _check_base(_inst, _attr, value):
    if value is not None and value not in BITS_RANGE:
        raise _bad("base_bits", value, "None (the highest candidate) or an integer 1..16")


def _check_steps(_inst, _attr, value):
    if value < 0:
        raise _bad("finetune_steps", value, "an integer >= 0 (0 = no fine-tuning)")


def _check_lr(_inst, _attr, value):
    if not (value > 0 and np.isfinite(value)):
        raise _bad("lr", value, "a positive finite float")


def _check_use_metric(_inst, _attr, value):
    if value not in (None, True, False):
        raise _bad("use_metric", value, "None (metric when one is given), True or False")


def _check_tie_break(_inst, _attr, value):
    if value not in TIE_BREAKS:
        raise _bad("tie_break", value, ", ".join(map(repr, TIE_BREAKS)))


def _int(value):
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ConfigError(f"{_WHERE}: expected an integer, got {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{_WHERE}: expected an integer, got {value!r}") from None


@attrs.frozen
class AccuracyAwareSelection:
    """ALPS: the score drop of each layer alone moved from the base precision.

    Options
    -------
    base_bits: the base precision (default ``None``: the highest candidate).
    finetune_steps: straight-through fine-tuning steps before each score (0 = none).
    lr: Adam learning rate of that fine-tuning.
    use_metric: score with the user's metric (``True``) or minus the calibration loss
        (``False``); ``None`` uses the metric when one was given.
    tie_break: ``"loss"`` adds the loss increase, scaled so that it only orders what the
        metric leaves tied (see :mod:`mpqcore_alps.tiebreak`); ``"none"`` does not.
        Only used when scoring with the metric.
    """

    base_bits: int | None = attrs.field(default=None, converter=attrs.converters.optional(_int), validator=_check_base)
    finetune_steps: int = attrs.field(default=0, converter=_int, validator=_check_steps)
    lr: float = attrs.field(default=1e-4, converter=float, validator=_check_lr)
    use_metric: bool | None = attrs.field(default=None, validator=_check_use_metric)
    tie_break: str = attrs.field(default="loss", validator=_check_tie_break)

    def measure(self, ctx: MeasureContext) -> Objective:
        ev = ctx.evaluator
        if self.use_metric and not ev.has_metric:
            raise ConfigError("option use_metric=True but no metric was given; pass metric=... or use_metric=False")
        use_metric = ev.has_metric if self.use_metric is None else self.use_metric
        base = max(ctx.bits) if self.base_bits is None else self.base_bits
        score = Scorer(ctx, use_metric=use_metric, steps=self.finetune_steps, lr=self.lr)
        drops, reference = drop_table(ctx, base, score, desc="alps: " + ("metric" if use_metric else "loss") + " drops")
        info = dict(
            method="alps",
            base_bits=base,
            score="metric" if use_metric else "loss",
            finetune_steps=self.finetune_steps,
            lr=self.lr,
            reference_score=reference,
            drop=_as_dict(ctx, drops),
            tie_break="none",
        )
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
