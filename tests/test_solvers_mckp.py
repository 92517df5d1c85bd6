"""The ``mckp`` solver (the multiple-choice knapsack by its structure) and ``auto``."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import attrs
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpqcore.constraints import budget_slack
from mpqcore.errors import ConfigError, InfeasibleError, MpqError
from mpqcore.plugins import get_plugins
from mpqcore.problem import allocation_costs, allocation_violations, cheapest_costs, reduce_problem
from mpqcore.solvers import AutoSolver, BruteForceSolver, HighsSolver, MCKPSolver, pareto_sweep, pick_solver
from mpqcore.solvers._common import argmin_choice
from mpqcore.solvers.mckp import dominated, lp_bound
from mpqcore.types import Objective, Problem

# The random-problem strategy and the agreement check live in test_solvers.py; pytest
# may import test files without putting their folder on sys.path.
sys.path.insert(0, str(Path(__file__).parent))
from test_solvers import boundary_problem, check_agree, close, outcome, problems, simple_problem

#: max_states=1 sends every core with two groups or more to HiGHS: both exact paths are tested.
STATES = st.sampled_from([1_000_000, 1])


def check_recomputed(problem: Problem, res) -> None:
    """The Allocation's objective and costs are what the problem says of its bits."""
    if isinstance(res, Exception):
        return
    assert close(res.objective, problem.objective.value(res.bits))
    recomputed = allocation_costs(problem, res.bits)
    assert set(res.costs) == set(recomputed)
    for name, value in recomputed.items():
        assert close(res.costs[name], value), (name, res.costs[name], value)


@st.composite
def binding_problems(draw, *, budgets: int = 1):
    """``problems()`` (up to 8 layers) with ``budgets`` cost tables bounded where they bind:
    each limit drawn between the cheapest allocation (pins and ties respected) and the cost
    of the unconstrained optimum, sometimes just below the cheapest."""
    problem = draw(problems(max_layers=8, max_bits=4).filter(lambda p: len(p.bits) >= 2))
    L, B = len(problem.layers), len(problem.bits)
    costs = {"size": problem.costs["size"]}
    if budgets == 2:
        costs["bops"] = problem.costs.get("bops")
        if costs["bops"] is None:
            drawn = draw(st.lists(st.integers(0, 30), min_size=L * B, max_size=L * B))
            costs["bops"] = np.array(drawn, float).reshape(L, B)
    problem = attrs.evolve(problem, costs=costs, budgets={})
    try:
        reduced = reduce_problem(problem)
    except InfeasibleError:  # pins against ties: every solver says so
        return problem.with_budgets({name: float(table.max(axis=1).sum()) for name, table in costs.items()})
    cheapest = cheapest_costs(reduced)
    free = reduced.costs_of(argmin_choice(reduced))
    limits = {}
    for name in costs:
        frac = draw(st.integers(-100, 1000)) / 1000
        limits[name] = float(cheapest[name] + (free[name] - cheapest[name]) * max(frac, 0.0) + min(frac, 0.0) * 20)
    return problem.with_budgets(limits)


@st.composite
def wide_problems(draw):
    """Up to 11 layers of 2-3 bit-widths (so cores of many groups), one budget that mostly
    binds, objectives with ties and sizes from a small range (many equal efficiencies)."""
    L = draw(st.integers(2, 11))
    B = draw(st.integers(2, 3))
    bits = (2, 4, 8)[:B] if B == 3 else (4, 8)
    unary = np.array(draw(st.lists(st.integers(-50, 200), min_size=L * B, max_size=L * B)), float).reshape(L, B)
    if draw(st.integers(0, 4)) != 4:  # mostly: more bits, less loss (nothing dominated)
        unary = -np.sort(-unary, axis=1)
    size = np.sort(np.array(draw(st.lists(st.integers(1, 12), min_size=L * B, max_size=L * B)), float).reshape(L, B))
    lo, hi = size[:, 0].sum(), size[:, -1].sum()
    limit = float(lo + (hi - lo) * draw(st.integers(0, 100)) / 100)
    objective = Objective(layers=[f"l{i}" for i in range(L)], bits=bits, unary=unary)
    return Problem(objective=objective, costs={"size": size}, budgets={"size": limit})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(), STATES)
def test_mckp_matches_brute_force(problem, max_states):
    """Pins, ties, zero, one or two budgets, negative objectives, infeasible limits."""
    results = {
        "brute-force": outcome(BruteForceSolver(), problem),
        "mckp": outcome(MCKPSolver(max_states=max_states), problem),
    }
    check_agree(problem, results)
    check_recomputed(problem, results["mckp"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(binding_problems(budgets=1), STATES)
def test_mckp_matches_brute_force_under_a_binding_budget(problem, max_states):
    """The budget binds in most examples: the LP is fractional and the core is solved."""
    results = {
        "brute-force": outcome(BruteForceSolver(), problem),
        "mckp": outcome(MCKPSolver(max_states=max_states), problem),
    }
    check_agree(problem, results)
    check_recomputed(problem, results["mckp"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(wide_problems(), STATES)
def test_mckp_matches_brute_force_with_cores_of_many_groups(problem, max_states):
    results = {
        "brute-force": outcome(BruteForceSolver(), problem),
        "mckp": outcome(MCKPSolver(max_states=max_states), problem),
    }
    check_agree(problem, results)
    check_recomputed(problem, results["mckp"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(binding_problems(budgets=2), STATES)
def test_mckp_matches_brute_force_on_two_budgets(problem, max_states):
    assert len(problem.budgets) == 2
    results = {
        "brute-force": outcome(BruteForceSolver(), problem),
        "mckp": outcome(MCKPSolver(max_states=max_states), problem),
    }
    check_agree(problem, results)
    check_recomputed(problem, results["mckp"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(max_layers=6, pairs=True))
def test_mckp_refuses_pairs_or_solves_what_pins_and_ties_make_linear(problem):
    """Pair terms inside a tie or against a pinned layer are unary terms: solved exactly;
    any other pair term is refused with a ConfigError naming highs."""
    try:
        res = MCKPSolver().solve(problem)
    except ConfigError as exc:
        assert problem.objective.pairs and "pair terms" in str(exc) and "'highs'" in str(exc)
        return
    except InfeasibleError:
        res = None
    ref = outcome(BruteForceSolver(), problem)
    check_agree(problem, {"brute-force": ref, **({"mckp": res} if res is not None else {})})
    if res is None:
        assert isinstance(ref, InfeasibleError)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(max_layers=7, pairs=True))
def test_auto_matches_brute_force_and_names_the_solver_that_ran(problem):
    res = outcome(AutoSolver(), problem)
    expected = pick_solver(problem)
    check_agree(problem, {"brute-force": outcome(BruteForceSolver(), problem), expected: res})
    check_recomputed(problem, res)


def knapsack(L: int, seed: int = 0, bits=(2, 3, 4, 5, 6, 8), avg: float = 4.0, budgets: int = 1) -> Problem:
    """Shaped like the benchmark's problems: real-valued noise on the objective, integer sizes."""
    rng = np.random.default_rng(seed)
    params = np.round(np.exp(rng.uniform(math.log(1e3), math.log(1e6), L)))
    b = np.array(bits, dtype=float)
    unary = params[:, None] * 2.0 ** (-2 * b) * rng.lognormal(0, 0.3, (L, len(b)))
    costs = {"size": params[:, None] * b}
    limits = {"size": float(avg * params.sum())}
    if budgets == 2:  # a latency-like table, binding too: 2% below what 4 bits everywhere takes
        costs["latency"] = params[:, None] * (1 + b**2 / 8) * rng.uniform(0.8, 1.2, (L, len(b)))
        limits["latency"] = float(0.98 * (params * 3).sum())
    return Problem(
        objective=Objective(layers=[f"layer{i}" for i in range(L)], bits=bits, unary=unary),
        costs=costs,
        budgets=limits,
    )


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(20, 400), st.integers(0, 10_000), st.floats(2.2, 7.5), st.sampled_from([1, 2]), STATES)
def test_mckp_matches_highs_on_larger_real_valued_problems(L, seed, avg, budgets, max_states):
    """Sizes brute force cannot reach, non-integer objectives and weights: the same optimum as HiGHS."""
    problem = knapsack(L, seed, avg=avg, budgets=budgets)
    ref = outcome(HighsSolver(), problem)
    res = outcome(MCKPSolver(max_states=max_states), problem)
    if isinstance(ref, InfeasibleError):
        assert isinstance(res, InfeasibleError)
        return
    assert ref.status == "optimal"
    assert res.status == "optimal" and res.gap == 0 and res.bound == res.objective
    assert allocation_violations(problem, res.bits) == []
    assert close(res.objective, ref.objective, 1e-9), (res.objective, ref.objective)
    check_recomputed(problem, res)


def test_thousands_of_layers_proven_in_well_under_a_second():
    problem = knapsack(5000)
    res = MCKPSolver().solve(problem)
    assert res.status == "optimal" and res.gap == 0
    assert allocation_violations(problem, res.bits) == []
    assert res.solve_time < 5.0  # 0.1 s measured; generous for a loaded machine
    assert res.info["lp_bound"] <= res.objective
    assert res.info["core_groups"] < 5000 / 4  # fixing leaves a small core


def test_the_lp_bound_is_below_every_allocation_and_tight_when_nothing_is_fractional():
    problem = knapsack(300, seed=4)
    alloc = MCKPSolver().solve(problem)
    unary, size = problem.objective.unary, problem.costs["size"]
    allowed = np.ones_like(unary, dtype=bool)
    limit = problem.budgets["size"]
    bound, lam = lp_bound(unary, size, allowed, limit + budget_slack(limit))
    assert bound <= alloc.objective and lam > 0
    assert close(bound, alloc.info["lp_bound"], 1e-12)
    assert (alloc.objective - bound) / alloc.objective < 1e-3  # 1.3e-4: nearly tight on these problems
    loose, lam0 = lp_bound(unary, size, allowed, float(size.max(axis=1).sum()))
    assert lam0 == 0.0 and close(loose, unary.min(axis=1).sum())


def test_dominance_keeps_one_of_equals_and_drops_worse_and_heavier():
    unary = np.array([[3.0, 1.0, 1.0, 2.0]])
    size = np.array([[1.0, 2.0, 2.0, 3.0]])
    assert dominated(unary, [size], np.ones((1, 4), dtype=bool)).tolist() == [[False, False, True, True]]
    # With a second weight that favours the last choice, it is no longer dominated.
    other = np.array([[5.0, 5.0, 5.0, 1.0]])
    assert dominated(unary, [size, other], np.ones((1, 4), dtype=bool)).tolist() == [[False, False, True, False]]
    # A disallowed (pinned-out) choice dominates nothing.
    allowed = np.array([[True, False, True, True]])
    assert dominated(unary, [size], allowed).tolist() == [[False, False, False, True]]


def test_infeasible_names_cheapest_and_asked_budget():
    problem = simple_problem(budget=50.0)  # cheapest: 4 layers x 20 = 80
    with pytest.raises(InfeasibleError) as err:
        MCKPSolver().solve(problem)
    assert "80" in str(err.value) and "50" in str(err.value)
    assert err.value.cheapest == {"size": 80.0} and err.value.budgets == {"size": 50.0}


@pytest.mark.parametrize("max_states", [1_000_000, 1])
def test_jointly_infeasible_budgets(max_states):
    base = simple_problem(L=2, bits=(2, 8), budget=40.0)
    problem = Problem(
        objective=base.objective,
        costs={"size": base.costs["size"], "power": np.array([[8.0, 2.0], [8.0, 2.0]])},
        budgets={"size": 40.0, "power": 4.0},
    )
    with pytest.raises(InfeasibleError) as err:
        MCKPSolver(max_states=max_states).solve(problem)
    assert "together" in str(err.value) and err.value.budgets == {"size": 40.0, "power": 4.0}
    assert err.value.cheapest == {"size": 40.0, "power": 4.0}


def test_pins_and_ties_are_kept():
    problem = attrs.evolve(knapsack(200, seed=2), pins={"layer3": 8, "layer1*": 2}, ties=[["layer5", "layer6"]])
    res = MCKPSolver().solve(problem)
    assert res.bits["layer3"] == 8 and res.bits["layer10"] == 2 and res.bits["layer5"] == res.bits["layer6"]
    assert allocation_violations(problem, res.bits) == []
    assert close(res.objective, HighsSolver().solve(problem).objective, 1e-9)


def test_pins_conflicting_with_ties():
    problem = simple_problem(budget=1000.0, pins={"l0": 2, "l1": 8}, ties=[["l0", "l1"]])
    with pytest.raises(InfeasibleError, match="tied but pinned"):
        MCKPSolver().solve(problem)


def test_pair_objective_refused_with_what_to_use():
    problem = simple_problem(budget=100.0, pairs=[("l0", 2, "l1", 4, 1.0)])
    with pytest.raises(ConfigError, match=r"separable objectives only.*1 pair terms.*'highs'.*'auto'"):
        MCKPSolver().solve(problem)


@pytest.mark.parametrize("max_states", [1_000_000, 1])
def test_time_limit_returns_the_incumbent_with_a_proven_bound(max_states):
    problem = knapsack(3000, seed=1)
    full = MCKPSolver().solve(problem)
    res = MCKPSolver(time_limit=1e-6, max_states=max_states).solve(problem)
    assert res.status == "time_limit"
    assert allocation_violations(problem, res.bits) == []
    assert res.bound is not None and res.bound <= full.objective + 1e-9 * full.objective
    assert res.bound <= res.objective and res.objective >= full.objective - 1e-9 * full.objective
    assert 0 < res.gap < 1e-3 and close(res.gap, (res.objective - res.bound) / abs(res.objective))
    check_recomputed(problem, res)


def test_time_limit_with_two_budgets():
    problem = knapsack(3000, seed=1, budgets=2)
    try:
        res = MCKPSolver(time_limit=0.05).solve(problem)
    except MpqError as exc:  # the LP itself ran out of time: the error says so
        assert "time limit" in str(exc)
        return
    assert res.status in ("time_limit", "optimal") and allocation_violations(problem, res.bits) == []
    assert res.bound is not None and res.bound <= res.objective


@pytest.mark.parametrize("factor, accepted", [(1 + 5e-10, True), (1.0, True), (1 - 1e-9, True), (1 + 1e-8, False)])
def test_the_budget_tolerance_at_the_boundary(factor, accepted):
    """The same slack as every other solver and the checker: 8 bits costs exactly limit * factor."""
    problem = boundary_problem(1_000_000.0 / factor)
    assert MCKPSolver().solve(problem).bits == {"a": 8 if accepted else 2}
    assert (allocation_violations(problem, {"a": 8}) == []) is accepted


def test_unconstrained_and_trivial():
    problem = simple_problem(L=3)
    res = MCKPSolver().solve(problem)
    assert res.bits == {"l0": 8, "l1": 8, "l2": 8} and res.costs == {"size": 240.0} and res.status == "optimal"
    everything_fits = simple_problem(budget=1e9)
    assert MCKPSolver().solve(everything_fits).bits == res.bits | {"l3": 8}


def test_registered_by_name_with_checked_options():
    registry = get_plugins().solvers
    assert isinstance(registry.create("mckp"), MCKPSolver)
    assert isinstance(registry.create("mckp", time_limit=5, max_states=10), MCKPSolver)
    assert isinstance(registry.create("auto", time_limit=5, linearization="generic"), AutoSolver)
    for bad in ({"time_limit": 0}, {"max_states": 0}):
        with pytest.raises(ConfigError):
            MCKPSolver(**bad)
    with pytest.raises(ConfigError):
        registry.create("mckp", linearization="onehot")  # a highs option, not mckp's


def test_auto_picks_mckp_for_one_budget_without_pairs_and_highs_otherwise():
    one = knapsack(50)
    assert pick_solver(one) == "mckp" and AutoSolver().solve(one).solver == "mckp"
    assert pick_solver(simple_problem()) == "mckp"  # no budget at all
    two = knapsack(50, budgets=2)
    assert pick_solver(two) == "highs" and AutoSolver().solve(two).solver == "highs"
    pairs = simple_problem(budget=100.0, pairs=[("l0", 2, "l1", 4, 1.0)])
    assert pick_solver(pairs) == "highs" and AutoSolver().solve(pairs).solver == "highs"
    chosen = AutoSolver(time_limit=7, linearization="generic").choose(pairs)
    assert isinstance(chosen, HighsSolver) and chosen.time_limit == 7 and chosen.linearization == "generic"


def test_auto_in_a_pareto_sweep_matches_independent_solves():
    problem = knapsack(60, seed=5)
    total = problem.costs["size"][:, 0].sum() / 2  # params
    limits = [float(a * total) for a in (2.5, 3.0, 4.0, 6.0)]
    sweep = pareto_sweep(problem, "size", limits, "auto")
    assert [a.solver for a in sweep] == ["mckp"] * 4
    for alloc, limit in zip(sweep, limits, strict=True):
        fresh = HighsSolver().solve(problem.with_budgets({"size": limit}))
        assert close(alloc.objective, fresh.objective, 1e-9)
    objectives = [a.objective for a in sweep]
    assert objectives == sorted(objectives, reverse=True)
