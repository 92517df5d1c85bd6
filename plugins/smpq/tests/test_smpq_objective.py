"""Shapley values of bit-width games turned into objectives, on synthetic games."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mpqcore import Objective
from mpqcore_smpq.game import layer_assignment, layer_game, upgrade_assignment, upgrade_game, upgrade_players
from mpqcore_smpq.objective import layer_objective, neighbour_upgrade_pairs, step_matrix, upgrade_objective
from mpqcore_smpq.shapley import EvaluationStore, exact_interactions, exact_shapley, monte_carlo_shapley

LAYERS = ("a", "b", "c")
#: g[layer][bits]: a score per layer that improves with bits, with diminishing returns.
G = {
    "a": {2: 0.0, 3: 0.5, 4: 0.9, 8: 1.0},
    "b": {2: 0.0, 3: 2.0, 4: 2.2, 8: 2.25},
    "c": {2: 0.0, 3: 0.1, 4: 0.3, 8: 1.2},
}


def additive_score(assignment):
    return sum(G[f][b] for f, b in assignment.items())


def test_upgrade_players_and_the_highest_upgrade_rule():
    assert upgrade_players(["x", "y"], (2, 4, 8)) == (("x", 4), ("x", 8), ("y", 4), ("y", 8))
    assert upgrade_assignment([("x", 8), ("x", 4)], ["x", "y"], 2) == {"x": 8, "y": 2}
    assert layer_assignment(["y"], ["x", "y"], 2, 4) == {"x": 2, "y": 4}


def test_coalitions_that_give_the_same_model_cost_one_evaluation():
    store = EvaluationStore()
    game = upgrade_game(additive_score, LAYERS, (2, 4, 8), store)
    game(frozenset({("a", 8)}))
    game(frozenset({("a", 8), ("a", 4)}))  # same assignment: a at 8
    assert store.evaluations == 1


@pytest.mark.parametrize("bits", [(2, 8), (2, 4, 8), (2, 3, 4, 8)])
def test_steps_conversion_recovers_an_additive_score_exactly(bits):
    game = upgrade_game(additive_score, LAYERS, bits, EvaluationStore())
    phi = exact_shapley(upgrade_players(LAYERS, bits), game)
    unary, stderr, pairs, _ = upgrade_objective(LAYERS, bits, phi)
    expected = -np.array([[G[f][b] - G[f][bits[0]] for b in bits] for f in LAYERS])
    np.testing.assert_allclose(unary, expected, atol=1e-12)
    assert not pairs and np.all(stderr == 0)


def test_cumulative_conversion_is_the_plain_sum_and_overstates_the_top_bits():
    bits = (2, 4, 8)
    game = upgrade_game(additive_score, LAYERS, bits, EvaluationStore())
    phi = exact_shapley(upgrade_players(LAYERS, bits), game)
    unary, *_ = upgrade_objective(LAYERS, bits, phi, conversion="cumulative")
    for li, f in enumerate(LAYERS):
        p4, p8 = phi.values[phi.index((f, 4))], phi.values[phi.index((f, 8))]
        assert unary[li].tolist() == pytest.approx([0.0, -p4, -(p4 + p8)])
        # by hand for one layer (a = g(4) - g(2), d = g(8) - g(4)): phi4 = a/2, phi8 = a/2 + d
        a, d = G[f][4] - G[f][2], G[f][8] - G[f][4]
        assert (p4, p8) == pytest.approx((a / 2, a / 2 + d))
    # the top bit-width's term is right, the middle one is off by half the first step
    assert unary[:, 2] == pytest.approx([-(G[f][8] - G[f][2]) for f in LAYERS])


def test_step_matrix_by_hand():
    np.testing.assert_allclose(step_matrix(2), [[2, 0], [1, 1]])
    np.testing.assert_allclose(step_matrix(3), [[3, 0, 0], [1, 2, 0], [1, 1, 1]])
    np.testing.assert_allclose(step_matrix(3, "cumulative"), np.tril(np.ones((3, 3))))


def pairwise_score(assignment):
    """Additive plus a coupling of neighbouring layers that are both at 8 bits."""
    h = {("a", "b"): 0.7, ("b", "c"): -0.4}
    return additive_score(assignment) + sum(v * (assignment[x] == 8 and assignment[y] == 8) for (x, y), v in h.items())


def test_interactions_reproduce_a_pairwise_game_exactly():
    """With two candidates each layer is one player, and this game is pairwise in the
    players: unary terms plus pair terms give back every assignment's score."""
    bits = (2, 8)
    players = upgrade_players(LAYERS, bits)
    game = upgrade_game(pairwise_score, LAYERS, bits, EvaluationStore())
    phi = exact_shapley(players, game)
    inter = exact_interactions(players, game, neighbour_upgrade_pairs(LAYERS, bits))
    unary, stderr, pairs, _ = upgrade_objective(LAYERS, bits, phi, inter)
    assert set(pairs) == {("a", 8, "b", 8), ("b", 8, "c", 8)}
    objective = Objective(layers=LAYERS, bits=bits, unary=unary, pairs=pairs, stderr=stderr)
    base = pairwise_score(dict.fromkeys(LAYERS, 2))
    for combo in itertools.product(bits, repeat=len(LAYERS)):
        assignment = dict(zip(LAYERS, combo, strict=False))
        assert objective.value(assignment) == pytest.approx(-(pairwise_score(assignment) - base), abs=1e-12)
    # without the pair terms the unary part alone is not exact: the interaction matters
    plain = upgrade_objective(LAYERS, bits, phi)[0]
    assert not np.allclose(plain, unary)


def test_layer_players_value_the_whole_move_from_b0():
    bits = (2, 4, 8)
    store = EvaluationStore()
    phis = {b: exact_shapley(LAYERS, layer_game(additive_score, LAYERS, 2, b, store)) for b in bits[1:]}
    unary, _stderr, _pairs, _ = layer_objective(LAYERS, bits, phis)
    expected = -np.array([[G[f][b] - G[f][2] for b in bits] for f in LAYERS])
    np.testing.assert_allclose(unary, expected, atol=1e-12)
    # v(empty) is shared by the games: 1 + 2 * (2**3 - 1) distinct assignments
    assert store.evaluations == 1 + 2 * 7


def test_layer_players_with_interactions_reproduce_their_game():
    bits = (2, 8)
    store = EvaluationStore()
    game = layer_game(pairwise_score, LAYERS, 2, 8, store)
    phis = {8: exact_shapley(LAYERS, game)}
    inter = {8: exact_interactions(LAYERS, game, list(itertools.pairwise(LAYERS)))}
    unary, _stderr, pairs, _ = layer_objective(LAYERS, bits, phis, inter)
    objective = Objective(layers=LAYERS, bits=bits, unary=unary, pairs=pairs)
    base = pairwise_score(dict.fromkeys(LAYERS, 2))
    for combo in itertools.product(bits, repeat=3):
        assignment = dict(zip(LAYERS, combo, strict=False))
        assert objective.value(assignment) == pytest.approx(-(pairwise_score(assignment) - base), abs=1e-12)


def test_monte_carlo_stderr_of_each_term_uses_the_pair_samples():
    bits = (2, 4, 8)
    players = upgrade_players(LAYERS, bits)
    game = upgrade_game(pairwise_score, LAYERS, bits, EvaluationStore())
    phi = monte_carlo_shapley(players, game, rng=np.random.default_rng(0), min_permutations=30, max_permutations=30)
    unary, stderr, _, _ = upgrade_objective(LAYERS, bits, phi)
    T = step_matrix(2)
    for li, f in enumerate(LAYERS):
        cols = [phi.index((f, b)) for b in bits[1:]]
        for j in range(2):
            combo = phi.pair_means[:, cols] @ T[j]
            assert unary[li, j + 1] == pytest.approx(-combo.mean())
            assert stderr[li, j + 1] == pytest.approx(combo.std(ddof=1) / np.sqrt(phi.n_pairs))
    assert np.all(stderr[:, 0] == 0)


def test_monte_carlo_objective_is_within_three_stderr_of_the_exact_one():
    bits = (2, 4, 8)
    players = upgrade_players(LAYERS, bits)
    game = upgrade_game(pairwise_score, LAYERS, bits, EvaluationStore())
    exact = upgrade_objective(LAYERS, bits, exact_shapley(players, game))[0]
    hits = checks = 0
    for seed in range(40):
        phi = monte_carlo_shapley(
            players, game, rng=np.random.default_rng(seed), min_permutations=40, max_permutations=40
        )
        unary, stderr, _, _ = upgrade_objective(LAYERS, bits, phi)
        inside = np.abs(unary - exact)[:, 1:] <= 3 * stderr[:, 1:] + 1e-12
        hits += int(inside.sum())
        checks += inside.size
    assert hits / checks >= 0.9, f"coverage {hits}/{checks}"
