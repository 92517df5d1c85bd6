"""The ``smpq`` sensitivity method: Shapley values of bit-width choices.

See :mod:`mpqcore_smpq.game` for the players and coalition values,
:mod:`mpqcore_smpq.shapley` for the estimators and :mod:`mpqcore_smpq.objective` for
how values become a per-(layer, bits) objective.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import attrs
import numpy as np

from mpqcore import ConfigError, MeasureContext, Objective
from mpqcore.options import option
from mpqcore_smpq.game import bitwidth_score, bitwidth_scores, layer_game, upgrade_game, upgrade_players
from mpqcore_smpq.objective import CONVERSIONS, layer_objective, neighbour_upgrade_pairs, upgrade_objective
from mpqcore_smpq.shapley import (
    EXACT_MAX_PLAYERS,
    EvaluationStore,
    InteractionEstimate,
    ShapleyEstimate,
    describe,
    exact_interactions,
    exact_shapley,
    monte_carlo_shapley,
    sample_interactions,
)

__all__ = ["PLAYER_MODES", "ShapleyBitWidth", "SmpqResult"]

PLAYER_MODES = ("upgrade", "layer")

#: ``ctx.rng`` salts, so permutations and interaction draws are independent streams.
SALT_PERMUTATIONS = 0x5A9
SALT_INTERACTIONS = 0x1A7


@attrs.frozen(eq=False)
class SmpqResult:
    """Everything one measurement found: the objective and the estimates behind it.

    ``shapley`` maps each game to its estimate: ``"upgrade"`` for upgrade players, or
    each ``b > b0`` for layer players; ``interactions`` likewise (empty when off).
    ``values`` maps every evaluated assignment (a sorted tuple of ``(fqn, bits)``,
    pinned layers left out) to its score: the part of the game that was played.
    """

    objective: Objective
    shapley: dict
    interactions: dict
    exact: bool
    values: dict
    evaluations: int
    forward_passes: int
    wall_time: float


@attrs.frozen
class ShapleyBitWidth:
    """SMPQ: the Shapley value of each bit-width upgrade, exact or by Monte Carlo sampling.

    Options (all keyword):

    - ``players``: ``"upgrade"`` (one player per (layer, b > b0); a coalition gives each
      layer its highest upgrade) or ``"layer"`` (one game per b, layers as players).
    - ``use_metric``: score coalitions by the user's metric instead of minus the
      calibration loss (default: loss; a metric on a few hundred held-out examples is
      coarse, and selecting bit-widths on it tunes to that held-out set).
    - ``exact``: ``"auto"`` (enumerate when a game has at most 12 players and the
      enumeration fits ``max_evaluations``), ``True`` or ``False``.
    - ``tolerance``: stop sampling when every standard error is at most this.
    - ``truncation``: stop walking a permutation when ``|v(all) - v(prefix)|`` is below this.
    - ``relative``: ``tolerance`` and ``truncation`` are fractions of ``|v(all) - v(none)|``.
    - ``min_permutations`` / ``max_permutations``: bounds on the permutations per game.
    - ``max_evaluations``: budget of model evaluations (distinct assignments scored;
      each is one pass over the calibration batches, or one metric call); ``None``: none.
    - ``conversion``: (upgrade players) how Shapley values become per-(layer, bits)
      terms: ``"steps"`` (default; undoes the equal split of each bit-width step among
      the upgrades that reach it) or ``"cumulative"`` (``-sum`` of the layer's values
      up to b; biased towards the top bit-width, see the README).
    - ``interactions``: also estimate pairwise Shapley interactions of neighbouring
      layers and return them as pair terms (for the quadratic solver).
    - ``interaction_samples``: antithetic coalition pairs per interaction when sampling.
    """

    players: str = option(str, default="upgrade", choices=PLAYER_MODES, help="who plays: bit-width upgrades or layers")
    use_metric: bool = option(bool, default=False, help="score coalitions by the metric instead of the loss")
    exact: bool | str = option(bool, default="auto", also=("auto",), help="enumerate every coalition")
    tolerance: float = option(float, default=0.01, minimum=0.0, help="stop sampling at this standard error")
    truncation: float = option(float, default=0.001, minimum=0.0, help="stop a permutation this close to v(all)")
    relative: bool = option(bool, default=True, help="tolerance and truncation relative to |v(all) - v(none)|")
    min_permutations: int = option(int, default=20, minimum=4, help="fewest permutations per game")
    max_permutations: int = option(int, default=2000, minimum=4, help="most permutations per game")
    max_evaluations: int | None = option(int, default=2000, minimum=3, optional=True, help="model evaluations at most")
    conversion: str = option(str, default="steps", choices=CONVERSIONS, help="how upgrade values become terms")
    interactions: bool = option(bool, default=False, help="estimate neighbour interactions as pair terms")
    interaction_samples: int = option(int, default=16, minimum=2, help="antithetic coalition pairs per interaction")

    def __attrs_post_init__(self):
        if self.max_permutations < self.min_permutations:
            raise ConfigError(
                f"max_permutations ({self.max_permutations}) must be >= min_permutations ({self.min_permutations})"
            )

    # -- the method ---------------------------------------------------------------------

    def measure(self, ctx: MeasureContext) -> Objective:
        return self.estimate(ctx).objective

    def estimate(self, ctx: MeasureContext) -> SmpqResult:
        """Measure and keep the estimates (sampling history included)."""
        ev = ctx.evaluator
        if self.use_metric and not ev.has_metric:
            raise ConfigError("smpq: use_metric=true needs a metric; pass metric=... or use the default (loss)")
        started, passes = time.perf_counter(), ev.forward_passes
        store = EvaluationStore(limit=self.max_evaluations)
        score = _counted(
            ctx, bitwidth_score(ctx, self.use_metric), bitwidth_scores(ctx, self.use_metric), self.max_evaluations
        )
        layers, bits = tuple(ctx.layers), tuple(ctx.bits)
        if len(bits) == 1:  # one candidate: nothing to decide, no players
            objective = Objective(
                layers=layers, bits=bits, unary=np.zeros((len(layers), 1)), info=ctx.option_info(method="smpq")
            )
            return SmpqResult(objective, {}, {}, True, {}, 0, 0, 0.0)
        if self.players == "upgrade":
            exact = self._use_exact(len(layers) * (len(bits) - 1), len(bits) ** len(layers))
            shapley, inter = self._upgrade(ctx, score, store, exact)
            unary, stderr, pairs, pair_se = upgrade_objective(
                layers, bits, shapley["upgrade"], inter.get("upgrade"), self.conversion
            )
        else:
            exact = self._use_exact(len(layers), 1 + (len(bits) - 1) * (2 ** len(layers) - 1))
            shapley, inter = self._layers(ctx, score, store, exact)
            unary, stderr, pairs, pair_se = layer_objective(layers, bits, shapley, inter)
        for game, est in shapley.items():
            if not est.exact and est.n_pairs < 2:
                raise ConfigError(
                    f"smpq: max_evaluations={self.max_evaluations} is too small to complete two antithetic pairs of "
                    f"permutations in game {game!r} ({len(est.players)} players: about {2 * len(est.players)} "
                    f"evaluations per pair); raise max_evaluations"
                )
        wall = time.perf_counter() - started
        info = self._info(ctx, shapley, inter, exact, store.evaluations, ev.forward_passes - passes, wall, pair_se)
        objective = Objective(layers=layers, bits=bits, unary=unary, stderr=stderr, pairs=pairs, info=info)
        return SmpqResult(
            objective, shapley, inter, exact, dict(store.cache), store.evaluations, ev.forward_passes - passes, wall
        )

    def _use_exact(self, n_players: int, needed: int) -> bool:
        fits = self.max_evaluations is None or needed <= self.max_evaluations
        if self.exact == "auto":
            return n_players <= EXACT_MAX_PLAYERS and fits
        if self.exact and n_players > EXACT_MAX_PLAYERS:
            raise ConfigError(
                f"smpq: exact=true enumerates 2**n coalitions per game; this game has {n_players} players, above the "
                f"limit of {EXACT_MAX_PLAYERS}; use exact=false (Monte Carlo) or exact=auto"
            )
        if self.exact and not fits:
            raise ConfigError(
                f"smpq: exact=true needs {needed} model evaluations, more than max_evaluations={self.max_evaluations}; "
                "raise max_evaluations (or set it to None) or use exact=false"
            )
        return bool(self.exact)

    def _sample(self, players, game, ctx: MeasureContext, salt: int, budget: int | None) -> ShapleyEstimate:
        return monte_carlo_shapley(
            players, game, rng=ctx.rng(salt), tolerance=self.tolerance, truncation=self.truncation,
            relative=self.relative, min_permutations=self.min_permutations, max_permutations=self.max_permutations,
            max_evaluations=budget,
        )  # fmt: skip

    def _shapley_budget(self, store: EvaluationStore, games_left: int, keep_half: bool) -> int | None:
        """This game's share of the evaluation budget: the remaining budget split over
        the games still to run, half of it kept for the interactions when there are any."""
        if store.limit is None:
            return None
        share = store.remaining / games_left
        return int(share / 2) if keep_half else int(share)

    def _upgrade(self, ctx, score, store, exact) -> tuple[dict, dict]:
        players = upgrade_players(ctx.layers, ctx.bits)
        game = upgrade_game(score.one, ctx.layers, ctx.bits, store, scores=score.many)
        pairs = neighbour_upgrade_pairs(ctx.layers, ctx.bits) if self.interactions else []
        if exact:
            est = exact_shapley(players, game)
        else:
            est = self._sample(players, game, ctx, SALT_PERMUTATIONS, self._shapley_budget(store, 1, bool(pairs)))
        inter: dict[str, InteractionEstimate] = {}
        if pairs and exact:
            inter["upgrade"] = exact_interactions(players, game, pairs)
        elif pairs:
            inter["upgrade"] = sample_interactions(
                players, game, pairs, rng=ctx.rng(SALT_INTERACTIONS), samples=self.interaction_samples
            )
        return {"upgrade": est}, inter

    def _layers(self, ctx, score, store, exact) -> tuple[dict, dict]:
        b0, ups = ctx.bits[0], ctx.bits[1:]
        shapley: dict[int, ShapleyEstimate] = {}
        inter: dict[int, InteractionEstimate] = {}
        pairs = list(itertools.pairwise(ctx.layers))
        for k, b in enumerate(ups):
            game = layer_game(score.one, ctx.layers, b0, b, store, scores=score.many)
            if exact:
                shapley[b] = exact_shapley(ctx.layers, game)
                if self.interactions and pairs:
                    inter[b] = exact_interactions(ctx.layers, game, pairs)
                continue
            shapley[b] = self._sample(
                ctx.layers,
                game,
                ctx,
                SALT_PERMUTATIONS + b,
                self._shapley_budget(store, len(ups) - k, self.interactions and bool(pairs)),
            )
            if self.interactions and pairs:
                budget = None if store.limit is None else int(store.remaining / (len(ups) - k))
                inter[b] = sample_interactions(
                    ctx.layers,
                    game,
                    pairs,
                    rng=ctx.rng(SALT_INTERACTIONS + b),
                    samples=self.interaction_samples,
                    max_evaluations=budget,
                )
        return shapley, inter

    # -- diagnostics ----------------------------------------------------------------------

    def _info(self, ctx, shapley, inter, exact, evaluations, passes, wall, pair_se) -> dict[str, Any]:
        values, errors, games = {}, {}, {}
        for game, est in shapley.items():
            for player, v, se in zip(est.players, est.values, est.stderr, strict=True):
                name = f"{player[0]}:{player[1]}" if isinstance(player, tuple) else f"{player}:{game}"
                values[name], errors[name] = float(v), float(se)
            games[str(game)] = describe(est)
        info = ctx.option_info(
            method="smpq",
            players=self.players,
            conversion=self.conversion if self.players == "upgrade" else None,
            value="metric" if self.use_metric else "-loss",
            estimator="exact" if exact else "monte-carlo",
            game_evaluations=evaluations,
            game_forward_passes=passes,
            permutations=sum(est.n_permutations for est in shapley.values()),
            max_stderr=max((g["max_stderr"] for g in games.values()), default=0.0),
            wall_time_s=wall,
            games=games,
            shapley=values,
            shapley_stderr=errors,
        )
        if inter:
            info["interactions"] = {
                str(game): {
                    "pairs": len(est.pairs),
                    "samples_per_pair": int(est.samples.min()) if len(est.samples) else 0,
                    "evaluations": est.evaluations,
                    "stopped": est.stopped,
                    "max_stderr": float(np.nanmax(est.stderr))
                    if len(est.stderr) and np.any(np.isfinite(est.stderr))
                    else 0.0,
                }
                for game, est in inter.items()
            }
            info["pair_stderr"] = {f"{a}:{ba}|{c}:{bc}": float(v) for (a, ba, c, bc), v in pair_se.items()}
        return info


@attrs.frozen
class _CountedScore:
    """The score of one assignment and of a batch, each advancing the progress bar by one tick per evaluation."""

    one: Callable[[Any], float]
    many: Callable[[list[Any]], list[float]]


def _counted(ctx: MeasureContext, score: Any, scores: Any, limit: int | None) -> _CountedScore:
    """``score`` and its batch form ``scores``, advancing ``ctx.progress`` by one tick per model evaluation."""
    ticks = iter(
        ctx.progress(itertools.count() if limit is None else range(limit), desc="smpq: evaluations", total=limit)
    )

    def one(assignment: Any) -> float:
        next(ticks, None)
        return score(assignment)

    def many(assignments: list[Any]) -> list[float]:
        for _ in assignments:
            next(ticks, None)
        return scores(assignments)

    return _CountedScore(one, many)
