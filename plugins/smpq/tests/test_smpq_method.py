"""The ``smpq`` method: options, its use of the evaluator, and the real digits-cnn model."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pytest

import mpqcore
from mpqcore import Budget, ConfigError, LayerInfo, MeasureContext, ModelSpec
from mpqcore.testing import MethodConformance, digits_task
from mpqcore_smpq import ShapleyBitWidth, monte_carlo_shapley
from mpqcore_smpq.game import upgrade_assignment, upgrade_players

# -- a fake evaluator: an additive loss table, recording what it was asked ---------------------

LOSS = {
    "conv": {2: 0.50, 4: 0.05, 8: 0.01},
    "mid": {2: 0.30, 4: 0.20, 8: 0.00},
    "head": {2: 0.05, 4: 0.01, 8: 0.00},
    "stem": {2: 9.00, 4: 1.00, 8: 0.00},
}


class TableEvaluator:
    """Loss = sum of the assigned layers' table entries (float layers cost 0)."""

    def __init__(self, metric: bool = False):
        self.calls: list[dict] = []
        self.evaluations = 0
        self.forward_passes = 0
        self.has_metric = metric

    def loss(self, assignment={}):  # noqa: B006
        self.calls.append(dict(assignment))
        self.evaluations += 1
        self.forward_passes += 4
        return sum(LOSS[f].get(b, LOSS[f][2] * 2.0 ** (2 - b)) for f, b in assignment.items())

    def metric(self, assignment={}):  # noqa: B006
        return 1.0 - self.loss(assignment)

    def metric_score(self, assignment={}):  # noqa: B006  # higher-is-better metric: the score is the metric
        return self.metric(assignment)

    def losses(self, assignments):  # the batch forms the real evaluator has
        return [self.loss(a) for a in assignments]

    def metric_scores(self, assignments):
        return [self.metric_score(a) for a in assignments]


def fake_context(layers=("conv", "mid", "head"), bits=(2, 4, 8), fixed=None, seed=0, metric=False):
    spec = ModelSpec([LayerInfo(f, "Linear", 10) for f in LOSS])
    fixed = dict(fixed or {})
    return MeasureContext(
        evaluator=TableEvaluator(metric), spec=spec, layers=tuple(layers), bits=bits, fixed=fixed, seed=seed
    )


def expected_unary(layers, bits):
    return -np.array([[LOSS[f][bits[0]] - LOSS[f][b] for b in bits] for f in layers])


# -- options ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, option",
    [
        ({"players": "bits"}, "players"),
        ({"use_metric": "maybe"}, "use_metric"),
        ({"exact": "sometimes"}, "exact"),
        ({"tolerance": -1}, "tolerance"),
        ({"tolerance": "x"}, "tolerance"),
        ({"truncation": float("nan")}, "truncation"),
        ({"min_permutations": 2}, "min_permutations"),
        ({"max_permutations": 1.5}, "max_permutations"),
        ({"max_evaluations": 0}, "max_evaluations"),
        ({"conversion": "sum"}, "conversion"),
        ({"interactions": 3}, "interactions"),
        ({"interaction_samples": 1}, "interaction_samples"),
        ({"min_permutations": 50, "max_permutations": 10}, "max_permutations"),
    ],
)
def test_bad_options_name_the_option(options, option):
    # The option's own message; the registry adds which method of which plugin.
    with pytest.raises(ConfigError, match=rf"^{option}\b.* must be .*"):
        ShapleyBitWidth(**options)


def test_command_line_strings_are_accepted():
    m = ShapleyBitWidth(exact="false", use_metric="true", max_evaluations="500", tolerance="0.02", interactions="yes")
    assert (m.exact, m.use_metric, m.max_evaluations, m.tolerance, m.interactions) == (False, True, 500, 0.02, True)
    assert ShapleyBitWidth(max_evaluations=None).max_evaluations is None
    assert ShapleyBitWidth(exact="auto").exact == "auto"


def test_registered_as_smpq():
    assert mpqcore.get_plugins().methods.get("smpq").factory is ShapleyBitWidth


# -- measuring through a fake evaluator -------------------------------------------------------------


@pytest.mark.parametrize("players", ["upgrade", "layer"])
def test_exact_objective_of_an_additive_loss(players):
    ctx = fake_context()
    obj = ShapleyBitWidth(players=players).measure(ctx)
    np.testing.assert_allclose(obj.unary, expected_unary(ctx.layers, ctx.bits), atol=1e-12)
    assert obj.info["estimator"] == "exact"
    assert obj.info["game_evaluations"] == (27 if players == "upgrade" else 1 + 2 * 7)
    assert obj.info["game_forward_passes"] == 4 * obj.info["game_evaluations"]
    np.testing.assert_array_equal(obj.stderr, 0.0)


def test_pinned_layers_stay_at_their_bits_in_every_evaluation():
    ctx = fake_context(fixed={"stem": 8})
    ShapleyBitWidth().measure(ctx)
    assert ctx.evaluator.calls
    assert all(call["stem"] == 8 and set(call) == {"stem", "conv", "mid", "head"} for call in ctx.evaluator.calls)


def test_use_metric_scores_by_the_metric_and_needs_one():
    obj = ShapleyBitWidth(use_metric=True).measure(fake_context(metric=True))
    np.testing.assert_allclose(obj.unary, expected_unary(("conv", "mid", "head"), (2, 4, 8)), atol=1e-12)
    assert obj.info["value"] == "metric"
    with pytest.raises(ConfigError, match="use_metric"):
        ShapleyBitWidth(use_metric=True).measure(fake_context(metric=False))


def test_monte_carlo_is_seeded_and_within_its_budget():
    method = ShapleyBitWidth(exact=False, max_evaluations=20, tolerance=0.0)
    a, b = method.measure(fake_context(seed=3)), method.measure(fake_context(seed=3))
    np.testing.assert_array_equal(a.unary, b.unary)
    np.testing.assert_array_equal(a.stderr, b.stderr)
    assert a.info["game_evaluations"] <= 20
    assert a.info["estimator"] == "monte-carlo"
    assert a.info["games"]["upgrade"]["stopped"] == "budget"
    c = method.measure(fake_context(seed=4))
    assert not np.array_equal(a.unary, c.unary) or not np.array_equal(a.stderr, c.stderr)


def test_monte_carlo_stops_at_the_tolerance_on_an_additive_game():
    obj = ShapleyBitWidth(exact=False, conversion="steps", truncation=0.0).measure(fake_context())
    game = obj.info["games"]["upgrade"]
    assert game["stopped"] == "tolerance" and game["permutations"] == 20
    assert obj.info["max_stderr"] <= 0.01 * abs(game["v_full"] - game["v_empty"])


def test_auto_switches_to_monte_carlo_when_the_enumeration_does_not_fit_the_budget():
    assert ShapleyBitWidth(max_evaluations=26).measure(fake_context()).info["estimator"] == "monte-carlo"
    assert ShapleyBitWidth(max_evaluations=27).measure(fake_context()).info["estimator"] == "exact"


def test_exact_refuses_above_the_player_limit():
    ctx = fake_context(layers=("conv", "mid", "head", "stem"), bits=(2, 3, 4, 5, 8))  # 16 players
    with pytest.raises(ConfigError, match=r"limit of 12"):
        ShapleyBitWidth(exact=True).measure(ctx)
    assert (
        ShapleyBitWidth()
        .measure(fake_context(layers=("conv", "mid", "head", "stem"), bits=(2, 3, 4, 5, 8)))
        .info["estimator"]
        == "monte-carlo"
    )


def test_exact_refuses_a_budget_below_the_enumeration():
    with pytest.raises(ConfigError, match="max_evaluations=10"):
        ShapleyBitWidth(exact=True, max_evaluations=10).measure(fake_context())


def test_a_budget_too_small_for_two_pairs_is_a_config_error():
    with pytest.raises(ConfigError, match="too small"):
        ShapleyBitWidth(exact=False, max_evaluations=5).measure(fake_context())


@pytest.mark.parametrize("exact", [True, False])
def test_interactions_give_pair_terms_of_neighbouring_layers_only(exact):
    ctx = fake_context()
    obj = ShapleyBitWidth(interactions=True, exact=exact, interaction_samples=4).measure(ctx)
    neighbours = {frozenset({"conv", "mid"}), frozenset({"mid", "head"})}
    assert obj.pairs and all(frozenset({a, c}) in neighbours for a, _, c, _ in obj.pairs)
    # the loss is additive: every interaction is zero and the unary terms stay exact
    np.testing.assert_allclose(list(obj.pairs.values()), 0.0, atol=1e-12)
    np.testing.assert_allclose(obj.unary, expected_unary(ctx.layers, ctx.bits), atol=1e-12)
    assert "interactions" in obj.info


def test_one_candidate_bit_width_has_no_players():
    obj = ShapleyBitWidth().measure(fake_context(bits=(4,)))
    assert obj.unary.shape == (3, 1) and np.all(obj.unary == 0)


# -- the real model ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_exact():
    """Exact upgrade-player Shapley values on digits-cnn with bits (2, 4, 8), and the table of
    all 3**5 assignments' scores behind them (the game itself)."""
    task = digits_task()
    quantizer = mpqcore.get_plugins().quantizers.create("minmax-per-tensor")
    evaluator = mpqcore.Evaluator(task.model, task.calibration, None, quantizer)
    layers = evaluator.spec.fqns
    ctx = MeasureContext(evaluator=evaluator, spec=evaluator.spec, layers=layers, bits=(2, 4, 8))
    result = ShapleyBitWidth().estimate(ctx)
    table = {tuple(dict(key)[f] for f in layers): value for key, value in result.values.items()}
    assert len(table) == 3 ** len(layers)
    return result, layers, table


def test_digits_exact_values_are_efficient_and_cost_one_evaluation_per_model(digits_exact):
    result, layers, table = digits_exact
    est = result.shapley["upgrade"]
    assert result.exact and result.evaluations == 3 ** len(layers)
    assert est.efficiency_gap == pytest.approx(0.0, abs=1e-12)
    assert est.v_full - est.v_empty == pytest.approx(table[(8,) * 5] - table[(2,) * 5])
    # every layer gains from its bits: the 8-bit term is the best of each row
    assert np.all(result.objective.unary[:, 2] < 0)


def test_digits_monte_carlo_covers_the_exact_values(digits_exact):
    """The sampler on the real game (its table replayed): 3-SE coverage over seeds."""
    result, layers, table = digits_exact
    exact = result.shapley["upgrade"].values
    players = upgrade_players(layers, (2, 4, 8))

    def game(coalition):
        a = upgrade_assignment(coalition, layers, 2)
        return table[tuple(a[f] for f in layers)]

    hits = checks = 0
    for seed in range(25):
        est = monte_carlo_shapley(
            players, game, rng=np.random.default_rng(seed), min_permutations=40, max_permutations=40
        )
        hits += int(np.sum(np.abs(est.values - exact) <= 3 * est.stderr + 1e-12))
        checks += len(players)
    assert hits / checks >= 0.9, f"coverage {hits}/{checks}"


def test_digits_search_with_an_evaluation_budget():
    task = digits_task()
    report = mpqcore.search(
        task.model, task.calibration, method="smpq", bits=(2, 4, 8), budget=Budget.average_bits(4.0), metric=task.metric,
        method_options={"max_evaluations": 60},
    )  # fmt: skip
    info = report.objective_info
    assert info["estimator"] == "monte-carlo" and info["game_evaluations"] <= 60
    assert report.average_bits <= 4.0 + 1e-9
    assert report.results["metric"] >= report.results["uniform_metric"] - 0.05


class TestSmpqConformance(MethodConformance):
    """The core's conformance suite, on the sampled (random) path with a small budget."""

    method = "smpq"
    method_options: ClassVar[dict[str, Any]] = {"exact": False, "max_evaluations": 60}
