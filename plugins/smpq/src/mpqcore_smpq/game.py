"""The bit-width game: players, coalitions as bit-width assignments, and their values.

Two ways to define the players over decision layers ``layers`` and ascending candidate
bits ``bits`` (lowest ``b0 = bits[0]``):

- ``upgrade`` players (the default): one player ``(layer, b)`` per layer and per
  ``b > b0``. A coalition gives each layer the *highest* ``b`` among its players in
  the coalition, and ``b0`` when it has none. So ``(layer, 8)`` makes ``(layer, 4)``
  irrelevant; every assignment over ``bits`` is the value of some coalition, and a
  layer at ``b`` is the same model as the "downward closed" coalition holding all its
  upgrades up to ``b``.
- ``layer`` players: one game per ``b > b0`` whose players are the layers; in game
  ``b`` the layers in the coalition are at ``b`` and the others at ``b0``.

A coalition's value is the score of that assignment (pinned layers at their pinned
bits): minus the evaluator's calibration loss, or the user's metric. Values are cached
by the assignment, so two coalitions that give the same model cost one evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from mpqcore_smpq.shapley import CachedGame, EvaluationStore

__all__ = [
    "assignment_key",
    "bitwidth_score",
    "bitwidth_scores",
    "layer_assignment",
    "layer_game",
    "upgrade_assignment",
    "upgrade_game",
    "upgrade_players",
]

Score = Callable[[Mapping[str, int]], float]
Scores = Callable[[list[Mapping[str, int]]], list[float]]


def upgrade_players(layers: Sequence[str], bits: Sequence[int]) -> tuple[tuple[str, int], ...]:
    """``(layer, b)`` for every layer (forward order) and every ``b`` above the lowest."""
    return tuple((fqn, int(b)) for fqn in layers for b in sorted(bits)[1:])


def upgrade_assignment(coalition: Iterable[tuple[str, int]], layers: Sequence[str], b0: int) -> dict[str, int]:
    """Each layer at the highest bits among its upgrades in ``coalition``, else ``b0``."""
    out = {fqn: int(b0) for fqn in layers}
    for fqn, b in coalition:
        if b > out[fqn]:
            out[fqn] = int(b)
    return out


def layer_assignment(coalition: Iterable[str], layers: Sequence[str], b0: int, b: int) -> dict[str, int]:
    """The layers in ``coalition`` at ``b``, the others at ``b0``."""
    chosen = set(coalition)
    return {fqn: int(b) if fqn in chosen else int(b0) for fqn in layers}


def assignment_key(assignment: Mapping[str, int]) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(assignment.items()))


def bitwidth_score(ctx, use_metric: bool) -> Score:
    """Score of a decision-layer assignment, pinned layers added, higher is better: the metric as a score or minus the loss."""
    evaluator = ctx.evaluator
    if use_metric:
        return lambda assignment: evaluator.metric_score(ctx.with_fixed(dict(assignment)))
    return lambda assignment: -evaluator.loss(ctx.with_fixed(dict(assignment)))


def bitwidth_scores(ctx, use_metric: bool) -> Scores:
    """:func:`bitwidth_score` of several assignments, as one batch of the evaluator's (same values)."""
    evaluator = ctx.evaluator
    if use_metric:
        return lambda assignments: evaluator.metric_scores([ctx.with_fixed(dict(a)) for a in assignments])
    return lambda assignments: [-v for v in evaluator.losses([ctx.with_fixed(dict(a)) for a in assignments])]


def _game(
    score: Score, scores: Scores | None, assign: Callable[[frozenset], dict[str, int]], store: EvaluationStore
) -> CachedGame:
    batch = None if scores is None else (lambda cs: scores([assign(c) for c in cs]))
    return CachedGame(lambda c: score(assign(c)), key=lambda c: assignment_key(assign(c)), store=store, batch=batch)


def upgrade_game(
    score: Score, layers: Sequence[str], bits: Sequence[int], store: EvaluationStore, scores: Scores | None = None
) -> CachedGame:
    """The upgrade-player game, cached by the assignment it produces (``scores``: the batch form of ``score``)."""
    b0 = min(bits)
    return _game(score, scores, lambda c: upgrade_assignment(c, layers, b0), store)


def layer_game(
    score: Score, layers: Sequence[str], b0: int, b: int, store: EvaluationStore, scores: Scores | None = None
) -> CachedGame:
    """Game ``b`` of the layer-player mode, sharing ``store`` with the other games."""
    return _game(score, scores, lambda c: layer_assignment(c, layers, b0, b), store)
