"""The Shapley estimators on synthetic games whose values are known by hand."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpqcore_smpq.shapley import (
    EXACT_MAX_PLAYERS,
    CachedGame,
    EvaluationStore,
    exact_interactions,
    exact_shapley,
    monte_carlo_shapley,
    sample_interactions,
)

# -- games ---------------------------------------------------------------------------


def additive(weights: dict):
    return lambda s: sum(weights[p] for p in s)


def product_12(s) -> float:
    """v = x1 * x2 over players 1, 2, 3 (player 3 is a dummy)."""
    return float(1 in s and 2 in s)


GLOVE = ("L", "R1", "R2")


def glove(s) -> float:
    """One left glove, two right gloves: a coalition is worth the pairs it can form."""
    return float(min(int("L" in s), int("R1" in s) + int("R2" in s)))


def mixed(s) -> float:
    """Six players: weights, two pairwise terms and a three-way term (not symmetric)."""
    w = {0: 0.3, 1: -0.2, 2: 1.0, 3: 0.05, 4: 0.5, 5: 0.0}
    v = sum(w[p] for p in s)
    v += 0.8 * (0 in s and 1 in s) - 0.6 * (2 in s and 4 in s)
    v += 1.5 * (1 in s and 3 in s and 5 in s)
    return v


def mc(players, game, seed, **kw):
    kw.setdefault("min_permutations", 40)
    kw.setdefault("max_permutations", 40)
    return monte_carlo_shapley(players, game, rng=np.random.default_rng(seed), **kw)


# -- exact values against hand-derived ones -----------------------------------------------


def test_exact_additive_game_gives_the_weights():
    w = {"a": 1.5, "b": -2.0, "c": 0.25, "d": 0.0}
    est = exact_shapley(list(w), additive(w))
    np.testing.assert_allclose(est.values, [1.5, -2.0, 0.25, 0.0], atol=1e-12)


def test_exact_product_game_splits_the_surplus_and_ignores_the_dummy():
    est = exact_shapley([1, 2, 3], product_12)
    np.testing.assert_allclose(est.values, [0.5, 0.5, 0.0], atol=1e-12)


def test_exact_glove_game():
    est = exact_shapley(GLOVE, glove)
    np.testing.assert_allclose(est.values, [2 / 3, 1 / 6, 1 / 6], atol=1e-12)


@pytest.mark.parametrize("players, game", [([1, 2, 3], product_12), (GLOVE, glove), (list(range(6)), mixed)])
def test_exact_values_are_efficient(players, game):
    est = exact_shapley(players, game)
    assert est.efficiency_gap == pytest.approx(0.0, abs=1e-12)
    assert est.stderr.tolist() == [0.0] * len(players)
    assert est.stopped == "exact"


def test_exact_matches_the_permutation_definition():
    """Average marginal contribution over all 720 orders of the six-player game."""
    players = list(range(6))
    total = np.zeros(6)
    orders = list(itertools.permutations(players))
    for order in orders:
        prefix: set = set()
        for p in order:
            before = mixed(prefix)
            prefix.add(p)
            total[p] += mixed(prefix) - before
    np.testing.assert_allclose(exact_shapley(players, mixed).values, total / len(orders), atol=1e-12)


def test_exact_refuses_above_the_player_limit():
    players = list(range(EXACT_MAX_PLAYERS + 1))
    with pytest.raises(ValueError, match=str(EXACT_MAX_PLAYERS)):
        exact_shapley(players, additive(dict.fromkeys(players, 1.0)))


def test_exact_interactions_by_hand():
    # v = x1 x2: the pair's interaction is the whole surplus; the dummy interacts with nobody.
    est = exact_interactions([1, 2, 3], product_12, [(1, 2), (1, 3)])
    np.testing.assert_allclose(est.values, [1.0, 0.0], atol=1e-12)
    # glove: I(L, R1) = 1/2 (delta 1 alone, 0 with R2), I(R1, R2) = -1/2 (substitutes).
    est = exact_interactions(GLOVE, glove, [("L", "R1"), ("R1", "R2")])
    np.testing.assert_allclose(est.values, [0.5, -0.5], atol=1e-12)


# -- Monte Carlo --------------------------------------------------------------------------


@pytest.mark.parametrize("players, game", [(GLOVE, glove), (list(range(6)), mixed), ([1, 2, 3], product_12)])
def test_monte_carlo_covers_the_exact_values_over_many_seeds(players, game):
    """|estimate - exact| <= 3 standard errors in >= 90% of the (seed, player) checks.

    20 antithetic pairs per run, so the nominal coverage of a 3-SE interval is about
    99% (t with 19 degrees of freedom); 90% leaves room for the discreteness of small
    games without letting a biased estimator or a too-small stderr through.
    """
    exact = exact_shapley(players, game).values
    hits = checks = 0
    for seed in range(100):
        est = mc(players, game, seed)
        for value, se, truth in zip(est.values, est.stderr, exact, strict=False):
            checks += 1
            hits += abs(value - truth) <= 3 * se + 1e-12
    assert checks >= 300
    assert hits / checks >= 0.90, f"coverage {hits}/{checks}"


def test_monte_carlo_converges_to_the_exact_values():
    players = list(range(6))
    exact = exact_shapley(players, mixed).values
    est = mc(players, mixed, 0, min_permutations=2000, max_permutations=2000)
    np.testing.assert_allclose(est.values, exact, atol=0.03)
    assert np.all(est.stderr < 0.02)


@pytest.mark.parametrize("seed", range(10))
def test_full_permutations_are_exactly_efficient(seed):
    """Without truncation every permutation's marginals telescope to v(all) - v(none)."""
    players = list(range(6))
    est = mc(players, mixed, seed, truncation=0.0)
    total = mixed(set(players)) - mixed(set())
    np.testing.assert_allclose(est.pair_means.sum(axis=1), total, atol=1e-12)
    assert est.efficiency_gap == pytest.approx(0.0, abs=1e-12)


def test_truncation_keeps_efficiency_within_the_tolerance_and_saves_evaluations():
    # Player 0 carries almost everything: once it is in, the rest is within 0.05 of v(all).
    w = {0: 10.0, 1: 0.01, 2: 0.01, 3: 0.01, 4: 0.005}
    game = additive(w)
    full = mc(list(w), CachedGame(game), 3, truncation=0.0)
    cut = mc(list(w), CachedGame(game), 3, truncation=0.05)
    assert cut.truncated_permutations > 0
    assert abs(cut.efficiency_gap) < 0.05
    assert cut.evaluations <= full.evaluations
    assert cut.values[0] == pytest.approx(10.0, abs=1e-12)


def test_relative_tolerance_and_truncation_scale_with_the_total():
    w = {0: 1000.0, 1: 2000.0, 2: 500.0}
    est = monte_carlo_shapley(
        list(w), additive(w), rng=np.random.default_rng(0), tolerance=0.01, relative=True, min_permutations=4
    )
    assert est.stopped == "tolerance"  # additive: every pair gives the exact values, stderr 0
    np.testing.assert_allclose(est.values, [1000.0, 2000.0, 500.0])


def test_stops_at_the_tolerance_after_the_minimum():
    players = list(range(6))
    est = monte_carlo_shapley(
        players, mixed, rng=np.random.default_rng(1), tolerance=0.05, min_permutations=10, max_permutations=5000
    )
    assert est.stopped == "tolerance"
    assert np.all(est.stderr <= 0.05)
    assert est.n_permutations >= 10
    assert est.n_permutations % 2 == 0


def test_the_budget_is_never_exceeded():
    players = list(range(8))
    game = CachedGame(lambda s: float(len(s)) ** 1.5)
    est = monte_carlo_shapley(
        players, game, rng=np.random.default_rng(0), max_evaluations=60, min_permutations=1000, max_permutations=1000
    )
    assert est.stopped == "budget"
    assert est.evaluations <= 60
    assert game.evaluations == est.evaluations
    assert est.n_permutations >= 4
    assert est.evaluation_trace[-1] <= 60


def test_a_budget_too_small_for_one_pair_returns_nan():
    est = monte_carlo_shapley(list(range(5)), mixed, rng=np.random.default_rng(0), max_evaluations=1)
    assert est.n_permutations == 0 and est.stopped == "budget"
    assert np.all(np.isnan(est.values))


def test_same_seed_same_estimate_and_different_seed_differs():
    players = list(range(6))
    a, b, c = mc(players, mixed, 7), mc(players, mixed, 7), mc(players, mixed, 8)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.stderr, b.stderr)
    assert not np.array_equal(a.values, c.values)


def test_stderr_is_taken_over_antithetic_pairs():
    players = list(range(6))
    est = mc(players, mixed, 2)
    assert est.pair_means.shape == (20, 6)
    expected = est.pair_means.std(axis=0, ddof=1) / math.sqrt(20)
    np.testing.assert_allclose(est.stderr, expected)
    mean, se = est.history()
    np.testing.assert_allclose(mean[-1], est.values)
    np.testing.assert_allclose(se[-1], est.stderr, atol=1e-12)


def test_stderr_of_a_sum_uses_the_covariance():
    """Glove R1 and R2 are substitutes: their sum varies less than sqrt(se1^2 + se2^2) says."""
    est = mc(GLOVE, glove, 4)
    joint = est.stderr_of_sum([1, 2])
    independent = math.hypot(est.stderr[1], est.stderr[2])
    sums = est.pair_means[:, 1] + est.pair_means[:, 2]
    assert joint == pytest.approx(np.std(sums, ddof=1) / math.sqrt(est.n_pairs))
    assert joint < independent


def test_cache_evaluates_each_coalition_once():
    calls = []

    def game(s):
        calls.append(s)
        return mixed(s)

    cached = CachedGame(game)
    exact_shapley(list(range(6)), cached)
    assert cached.evaluations == len(calls) == 2**6
    exact_shapley(list(range(6)), cached)  # all cached now
    assert len(calls) == 2**6


def test_a_shared_store_keys_by_what_the_coalition_means():
    store = EvaluationStore()
    parity = CachedGame(lambda s: len(s) % 2, key=lambda s: len(s) % 2, store=store)
    for s in ({1}, {2}, {1, 2}, {3, 4}, set()):
        parity(frozenset(s))
    assert store.evaluations == 2


def test_sampled_interactions_cover_the_exact_values():
    players = list(range(6))
    pairs = [(0, 1), (2, 4), (1, 3), (3, 5), (0, 5)]
    exact = exact_interactions(players, mixed, pairs).values
    hits = checks = 0
    for seed in range(40):
        est = sample_interactions(players, mixed, pairs, rng=np.random.default_rng(seed), samples=16)
        assert est.samples.tolist() == [16] * len(pairs)
        for value, se, truth in zip(est.values, est.stderr, exact, strict=False):
            checks += 1
            hits += abs(value - truth) <= 3 * se + 1e-12
    assert hits / checks >= 0.90, f"coverage {hits}/{checks}"


def test_sampled_interactions_respect_the_budget():
    game = CachedGame(mixed)
    est = sample_interactions(
        list(range(6)), game, [(0, 1), (2, 4)], rng=np.random.default_rng(0), samples=100, max_evaluations=20
    )
    assert est.stopped == "budget"
    assert est.evaluations <= 20


# -- properties of the exact values on random games -------------------------------------------

games = st.integers(min_value=1, max_value=5).flatmap(
    lambda n: st.tuples(st.just(n), st.lists(st.floats(-10, 10, allow_nan=False), min_size=2**n, max_size=2**n))
)


def table_game(n, table):
    return lambda s: table[sum(1 << p for p in s)]


@given(games)
@settings(max_examples=60, deadline=None)
def test_property_efficiency(game):
    n, table = game
    est = exact_shapley(list(range(n)), table_game(n, table))
    assert est.efficiency_gap == pytest.approx(0.0, abs=1e-9)


@given(games, games)
@settings(max_examples=40, deadline=None)
def test_property_linearity(g1, g2):
    n = min(g1[0], g2[0])
    t1, t2 = g1[1][: 2**n], g2[1][: 2**n]
    players = list(range(n))
    a = exact_shapley(players, table_game(n, t1)).values
    b = exact_shapley(players, table_game(n, t2)).values
    both = exact_shapley(players, table_game(n, [x + y for x, y in zip(t1, t2, strict=False)])).values
    np.testing.assert_allclose(both, a + b, atol=1e-9)


@given(st.integers(2, 5), st.lists(st.floats(-5, 5, allow_nan=False), min_size=6, max_size=6))
@settings(max_examples=40, deadline=None)
def test_property_symmetric_players_get_equal_values_and_dummies_zero(n, by_size):
    """A game that depends only on how many of players 0..n-1 are in, plus a dummy n."""
    players = list(range(n + 1))
    est = exact_shapley(players, lambda s: by_size[len(s - {n})])
    np.testing.assert_allclose(est.values[:n], est.values[0], atol=1e-9)
    assert est.values[n] == pytest.approx(0.0, abs=1e-9)


@given(games, st.integers(0, 2**32 - 1))
@settings(max_examples=40, deadline=None)
def test_property_untruncated_monte_carlo_is_efficient(game, seed):
    n, table = game
    est = monte_carlo_shapley(
        list(range(n)), table_game(n, table), rng=np.random.default_rng(seed), min_permutations=6, max_permutations=6
    )
    assert est.efficiency_gap == pytest.approx(0.0, abs=1e-9)
