"""SMPQ's coalitions known in advance go to the evaluator as one batch (issue 17 item 2).

An exact enumeration knows every coalition, and an untruncated antithetic pair of
permutations every prefix of both walks: they are scored by ``Evaluator.losses`` in one
call (prefix reuse and Ray workers apply), with the values and evaluation counts of one
evaluation at a time, also where the budget runs out in the middle of a pair.
"""

from __future__ import annotations

import numpy as np
import pytest

import mpqcore
from mpqcore.context import MeasureContext
from mpqcore.evaluate import Evaluator
from mpqcore.testing.conformance import digits_task
from mpqcore_smpq.game import bitwidth_score, bitwidth_scores, upgrade_game, upgrade_players
from mpqcore_smpq.shapley import EvaluationStore, exact_shapley, monte_carlo_shapley

BITS = (2, 4, 8)


@pytest.fixture(scope="module")
def task():
    return digits_task()


def _context(task, layers=None):
    spec = mpqcore.introspect(task.model, task.calibration[0])
    quantizer = mpqcore.PluginSet().quantizers.create("minmax-per-tensor")
    ev = Evaluator(task.model, task.calibration[:1], spec, quantizer)  # one batch: enough to compare
    return MeasureContext(evaluator=ev, spec=spec, layers=tuple(layers or spec.fqns), bits=BITS)


def _game(ctx, limit, batched):
    scores = bitwidth_scores(ctx, False) if batched else None
    store = EvaluationStore(limit=limit)
    return upgrade_game(bitwidth_score(ctx, False), ctx.layers, BITS, store, scores=scores)


@pytest.mark.parametrize("limit", [None, 25])  # 25: the budget ends inside the second pair
def test_monte_carlo_batches_give_the_sequential_estimate(task, limit):
    estimates, contexts = [], []
    for batched in (False, True):
        ctx = _context(task)
        players = upgrade_players(ctx.layers, BITS)
        game = _game(ctx, limit, batched)
        rng = np.random.default_rng(3)
        options = {"truncation": 0.0, "min_permutations": 4, "max_permutations": 4, "max_evaluations": limit}
        estimates.append(monte_carlo_shapley(players, game, rng=rng, **options))
        contexts.append(ctx)
    one, many = estimates
    assert many.evaluations == one.evaluations and many.stopped == one.stopped
    assert many.n_permutations == one.n_permutations
    np.testing.assert_allclose(many.values, one.values, rtol=1e-6, atol=1e-9)
    assert contexts[0].evaluator.prefix_reuse["skipped_mac_fraction"] == 0.0  # one at a time: no reuse
    assert contexts[1].evaluator.prefix_reuse["skipped_mac_fraction"] > 0.0


def test_exact_enumeration_is_one_batch(task):
    values = []
    for batched in (False, True):
        ctx = _context(task, layers=task_layers(task)[:2])
        game = _game(ctx, None, batched)
        est = exact_shapley(upgrade_players(ctx.layers, BITS), game)
        values.append((est.values, est.evaluations, ctx.evaluator.prefix_reuse["skipped_mac_fraction"]))
    (v1, e1, s1), (v2, e2, s2) = values
    assert e1 == e2 and s1 == 0.0 and s2 > 0.0
    np.testing.assert_allclose(v2, v1, rtol=1e-6, atol=1e-9)


def task_layers(task):
    return mpqcore.introspect(task.model, task.calibration[0]).fqns
