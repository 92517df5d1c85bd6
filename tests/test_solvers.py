"""The built-in solvers: highs, dp and brute-force agree; every error says what to do."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpqcore.constraints import BUDGET_RTOL, within_budget
from mpqcore.errors import ConfigError, InfeasibleError, ProblemTooLargeError
from mpqcore.plugins import get_plugins
from mpqcore.problem import allocation_violations, reduce_problem
from mpqcore.solvers import BruteForceSolver, DPSolver, HighsSolver, pareto_sweep
from mpqcore.types import Allocation, Objective, Problem

SOLVERS = {"highs": HighsSolver, "dp": DPSolver, "brute-force": BruteForceSolver}


def close(a: float, b: float, rtol: float = 1e-6) -> bool:
    return abs(a - b) <= rtol * max(1.0, abs(a), abs(b))


@st.composite
def problems(draw, *, max_layers=7, max_bits=5, pairs=False, max_pair_bits=5):
    """Small random problems: integer costs (so dp applies), negative objectives,
    optional pins, a tie and a second budget; limits around the feasible range."""
    L = draw(st.integers(1, max_layers))
    bits = sorted(draw(st.sets(st.integers(1, 8), min_size=1, max_size=min(max_bits, max_pair_bits))))
    B = len(bits)
    layers = [f"l{i}" for i in range(L)]
    unary = np.array(draw(st.lists(st.integers(-1000, 1000), min_size=L * B, max_size=L * B)), float).reshape(L, B) / 10
    size = np.array(draw(st.lists(st.integers(0, 30), min_size=L * B, max_size=L * B)), float).reshape(L, B)
    costs = {"size": size}
    two = draw(st.booleans())
    if two:
        costs["bops"] = np.array(draw(st.lists(st.integers(0, 30), min_size=L * B, max_size=L * B)), float).reshape(
            L, B
        )
    # Limits from a bit below the cheapest to the dearest total, so some are infeasible.
    budgets = {}
    for name, table in costs.items():
        if name == "size" or draw(st.booleans()):
            lo, hi = table.min(axis=1).sum(), table.max(axis=1).sum()
            # Mostly inside [lo, hi] where the budget binds; hypothesis favours small draws.
            frac = draw(st.integers(0, 20))
            budgets[name] = float(round(lo + (hi - lo) * (1 - frac / 20))) - (frac == 20) * draw(st.integers(0, 2))
    if draw(st.integers(0, 9)) == 7:
        budgets = {}
    pins = {}
    if draw(st.booleans()):
        for name in draw(st.sets(st.sampled_from(layers), max_size=2)):
            pins[name] = draw(st.sampled_from(bits))
    ties = []
    if L >= 2 and draw(st.booleans()):
        ties = [draw(st.lists(st.sampled_from(layers), min_size=2, max_size=3, unique=True))]
    pair_terms = []
    if pairs:
        for _ in range(draw(st.integers(0, 12))):
            a, c = (
                draw(st.lists(st.sampled_from(layers), min_size=2, max_size=2, unique=True)) if L >= 2 else (None, None)
            )
            if a is None:
                break
            pair_terms.append(
                (a, draw(st.sampled_from(bits)), c, draw(st.sampled_from(bits)), draw(st.integers(-500, 500)) / 10)
            )
    objective = Objective(layers=layers, bits=bits, unary=unary, pairs=pair_terms)
    return Problem(objective=objective, costs=costs, budgets=budgets, pins=pins, ties=ties)


def outcome(solver, problem: Problem):
    try:
        return solver.solve(problem)
    except InfeasibleError as exc:
        return exc


def check_agree(problem: Problem, results: dict):
    ref = results["brute-force"]
    for name, res in results.items():
        if isinstance(ref, InfeasibleError):
            assert isinstance(res, InfeasibleError), f"{name} found {res} where brute force proved infeasibility"
            continue
        assert isinstance(res, Allocation), f"{name} raised {res!r} but brute force found {ref.objective}"
        assert allocation_violations(problem, res.bits) == [], name
        assert close(res.objective, ref.objective), (name, res.objective, ref.objective)
        assert close(res.objective, problem.objective.value(res.bits))
        assert res.status == "optimal" and res.solver == name
        assert set(res.costs) == set(problem.costs)
        assert res.bound is not None and res.bound <= res.objective + 1e-6 * max(1.0, abs(res.objective))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_solvers_agree_on_linear_problems(problem):
    results = {"brute-force": outcome(BruteForceSolver(), problem), "highs": outcome(HighsSolver(), problem)}
    if len(problem.budgets) <= 1:
        results["dp"] = outcome(DPSolver(), problem)
    check_agree(problem, results)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(), st.integers(1, 7))
def test_dp_on_a_coarse_grid_stays_within_budget_and_bounds_the_optimum(problem, grid):
    """A grid that does not divide the costs rounds them up: feasible, maybe suboptimal,
    with a proven bound from the rounded-down relaxation."""
    if len(problem.budgets) != 1:
        return
    ref = outcome(BruteForceSolver(), problem)
    res = outcome(DPSolver(grid=grid), problem)
    if isinstance(ref, InfeasibleError):
        assert isinstance(res, InfeasibleError)
        return
    if isinstance(res, InfeasibleError):  # rounding up can lose the last feasible allocations
        assert "grid" in str(res) or res.cheapest
        return
    assert allocation_violations(problem, res.bits) == []
    assert res.objective >= ref.objective - 1e-9
    assert res.bound <= ref.objective + 1e-9
    assert res.status in ("optimal", "heuristic")
    if res.status == "optimal":
        assert close(res.objective, ref.objective)


def simple_problem(L=4, bits=(2, 4, 8), budget=None, pairs=(), costs=None, **kw) -> Problem:
    layers = [f"l{i}" for i in range(L)]
    unary = np.array([[2.0**-b * (i + 1) for b in bits] for i in range(L)])
    size = np.array([[10.0 * b for b in bits] for _ in range(L)]) if costs is None else costs
    objective = Objective(layers=layers, bits=bits, unary=unary, pairs=list(pairs))
    budgets = {} if budget is None else {"size": budget}
    return Problem(objective=objective, costs={"size": size}, budgets=budgets, **kw)


def test_registered_by_name():
    registry = get_plugins().solvers
    for name, cls in SOLVERS.items():
        assert isinstance(registry.create(name), cls)
    assert isinstance(registry.create("highs", time_limit=5, linearization="generic"), HighsSolver)


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_infeasible_names_cheapest_and_asked_budget(name):
    problem = simple_problem(budget=50.0)  # cheapest: 4 layers x 20 = 80
    with pytest.raises(InfeasibleError) as err:
        SOLVERS[name]().solve(problem)
    assert "80" in str(err.value) and "50" in str(err.value)
    assert err.value.cheapest == {"size": 80.0} and err.value.budgets == {"size": 50.0}


@pytest.mark.parametrize("name", ["highs", "brute-force"])
def test_jointly_infeasible_budgets(name):
    # size favours low bits, "power" high bits: each budget alone is reachable, not both.
    problem = simple_problem(L=2, bits=(2, 8), budget=40.0)
    problem = Problem(
        objective=problem.objective,
        costs={"size": problem.costs["size"], "power": np.array([[8.0, 2.0], [8.0, 2.0]])},
        budgets={"size": 40.0, "power": 4.0},
    )
    with pytest.raises(InfeasibleError) as err:
        SOLVERS[name]().solve(problem)
    assert "together" in str(err.value) and err.value.budgets == {"size": 40.0, "power": 4.0}


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_pins_conflicting_with_ties(name):
    problem = simple_problem(budget=1000.0, pins={"l0": 2, "l1": 8}, ties=[["l0", "l1"]])
    with pytest.raises(InfeasibleError, match="tied but pinned"):
        SOLVERS[name]().solve(problem)


def test_budget_on_unknown_cost_table_is_rejected_by_the_problem():
    with pytest.raises(ConfigError, match="names no cost table"):
        simple_problem().with_budgets({"latency": 3.0})


def test_dp_table_too_large_is_refused_before_allocating():
    L = 2000
    rng = np.random.default_rng(0)
    costs = rng.integers(10**5, 10**6, (L, 1)) * np.array([1.0, 2.0, 3.0]) + rng.integers(0, 7, (L, 3))  # gcd 1
    problem = simple_problem(L=L, costs=costs, budget=float(costs[:, 1].sum()))
    with pytest.raises(ProblemTooLargeError) as err:
        DPSolver().solve(problem)
    msg = str(err.value)
    assert "cells" in msg and "grid=" in msg and "highs" in msg
    # The suggested grid really fits.
    grid = float(msg.split("grid=")[1].split(" ")[0])
    DPSolver(grid=grid).solve(problem)


def test_dp_refuses_two_budgets():
    base = simple_problem(budget=100.0)
    problem = Problem(
        objective=base.objective,
        costs={"size": base.costs["size"], "bops": base.costs["size"]},
        budgets={"size": 100.0, "bops": 100.0},
    )
    with pytest.raises(ConfigError, match=r"exactly one budget.*bops.*size"):
        DPSolver().solve(problem)


def test_dp_refuses_pairs():
    problem = simple_problem(budget=100.0, pairs=[("l0", 2, "l1", 4, 1.0)])
    with pytest.raises(ConfigError, match="pair terms"):
        DPSolver().solve(problem)


def test_dp_non_integer_costs_need_a_grid():
    costs = np.array([[0.5, 1.25, 2.0]] * 4)
    problem = simple_problem(costs=costs, budget=5.0)
    with pytest.raises(ConfigError, match="grid="):
        DPSolver().solve(problem)
    exact = DPSolver(grid=0.25).solve(problem)
    assert exact.status == "optimal"
    assert close(exact.objective, BruteForceSolver().solve(problem).objective)


def test_dp_zero_budgets_is_argmin():
    problem = simple_problem()
    assert DPSolver().solve(problem).bits == {f"l{i}": 8 for i in range(4)}


def test_brute_force_too_large():
    problem = simple_problem(L=12, bits=(2, 3, 4, 8), budget=1e9)
    with pytest.raises(ProblemTooLargeError, match=r"16,777,216.*max_combinations=200,000"):
        BruteForceSolver().solve(problem)


def test_brute_force_ties_are_lexicographic():
    problem = Problem(
        objective=Objective(layers=["a", "b"], bits=(2, 4), unary=np.zeros((2, 2))),
        costs={"size": np.zeros((2, 2))},
        budgets={"size": 0.0},
    )
    assert BruteForceSolver().solve(problem).bits == {"a": 2, "b": 2}


@pytest.mark.parametrize(
    "options", [{"time_limit": 0}, {"mip_rel_gap": 1.5}, {"linearization": "mccormick"}, {"threads": 0}]
)
def test_highs_bad_options(options):
    with pytest.raises(ConfigError):
        HighsSolver(**options)


@pytest.mark.parametrize("options", [{"grid": -1}, {"max_cells": 0}])
def test_dp_bad_options(options):
    with pytest.raises(ConfigError):
        DPSolver(**options)


def test_highs_reports_model_size_and_pins_and_ties():
    problem = simple_problem(budget=150.0, pins={"l3": 8}, ties=[["l0", "l1"]])
    res = HighsSolver().solve(problem)
    assert res.bits["l3"] == 8 and res.bits["l0"] == res.bits["l1"]
    assert res.info["columns"] == 3 * 3 and res.info["rows"] == 3 + 1
    assert allocation_violations(problem, res.bits) == []


def test_highs_non_integer_costs_meet_budget_exactly():
    rng = np.random.default_rng(1)
    L, bits = 40, (2, 3, 4, 6, 8)
    params = rng.uniform(1e3, 1e6, L)
    costs = params[:, None] * np.array(bits) * (1 + 1e-7 * rng.standard_normal((L, len(bits))))
    problem = Problem(
        objective=Objective(
            layers=[f"l{i}" for i in range(L)],
            bits=bits,
            unary=params[:, None] * 2.0 ** (-2 * np.array(bits)) * rng.uniform(0.5, 2, (L, len(bits))),
        ),
        costs={"size": costs},
        budgets={"size": 4 * params.sum()},
    )
    res = HighsSolver().solve(problem)
    assert allocation_violations(problem, res.bits) == [] and res.status == "optimal"


def test_empty_and_unconstrained():
    problem = simple_problem(L=3)
    for cls in SOLVERS.values():
        res = cls().solve(problem)
        assert res.bits == {"l0": 8, "l1": 8, "l2": 8} and res.costs == {"size": 240.0}


def test_pareto_sweep_is_monotone_and_matches_independent_solves():
    rng = np.random.default_rng(3)
    L, bits = 12, (2, 3, 4, 8)
    params = rng.integers(100, 1000, L)
    problem = Problem(
        objective=Objective(
            layers=[f"l{i}" for i in range(L)],
            bits=bits,
            unary=params[:, None] * 2.0 ** (-np.array(bits)) * rng.uniform(0.5, 2, (L, 4)),
        ),
        costs={"size": params[:, None] * np.array(bits)},
    )
    limits = [float(a * params.sum()) for a in (1.5, 2.0, 2.5, 3.0, 4.0, 6.0, 8.0)]
    sweep = pareto_sweep(problem, "size", limits, "highs")  # highs declares the re-solving capability
    assert [a.info["limit"] for a in sweep] == limits[1:]  # 1.5 bits average is below the cheapest
    assert all(a.info["reused_model"] for a in sweep[1:])
    values = [a.objective for a in sweep]
    assert all(b <= a + 1e-9 for a, b in itertools.pairwise(values))
    for alloc, limit in zip(sweep, limits[1:], strict=True):
        alone = HighsSolver().solve(problem.with_budgets({"size": limit}))
        assert close(alloc.objective, alone.objective)
        assert allocation_violations(problem.with_budgets({"size": limit}), alloc.bits) == []
    looped = pareto_sweep(problem, "size", limits, solver="dp")
    assert [close(a.objective, b.objective) for a, b in zip(looped, sweep, strict=True)] == [True] * len(sweep)
    with pytest.raises(InfeasibleError):
        pareto_sweep(problem, "size", limits, on_infeasible="raise")
    with pytest.raises(ConfigError, match="names no cost table"):
        pareto_sweep(problem, "latency", limits)
    assert not sweep[0].info["reused_model"]


# ---------------------------------------------------------------------------
# Re-solving under new budgets is a declared capability
# ---------------------------------------------------------------------------


class CountingSolver:
    """Brute force, counting how it was called; with ``resolver`` it declares the capability."""

    def __init__(self, resolver: bool):
        self.inner = BruteForceSolver()
        self.solves = 0
        self.resolvers = 0
        if resolver:
            self.budget_resolver = self._budget_resolver

    def solve(self, problem):
        self.solves += 1
        return self.inner.solve(problem)

    def _budget_resolver(self, problem):
        self.resolvers += 1
        return lambda budgets: self.inner.solve(problem.with_budgets(budgets))


def test_pareto_sweep_uses_a_declared_budget_resolver_whatever_the_solver_is_named():
    # Bug fixed: pareto_sweep special-cased the solver *named* "highs" and wrote into its
    # model; any other solver, however able to re-solve, was called from scratch.
    problem = simple_problem(L=4)
    limits = [100.0, 150.0, 200.0]
    with_cap, without = CountingSolver(resolver=True), CountingSolver(resolver=False)
    a = pareto_sweep(problem, "size", limits, solver=with_cap)
    b = pareto_sweep(problem, "size", limits, solver=without)
    assert (with_cap.resolvers, with_cap.solves) == (1, 0)
    assert (without.resolvers, without.solves) == (0, 3)
    assert [x.bits for x in a] == [x.bits for x in b] and [x.info["limit"] for x in a] == limits
    with pytest.raises(ConfigError, match="already built"):
        pareto_sweep(problem, "size", limits, solver=without, time_limit=3)


def test_highs_budget_resolver_matches_fresh_solves_and_reuses_its_model():
    problem = simple_problem(L=5)
    resolve = HighsSolver().budget_resolver(problem)
    seen = []
    for limit in (120.0, 260.0, 180.0, 400.0):
        alloc = resolve({"size": limit})
        fresh = HighsSolver().solve(problem.with_budgets({"size": limit}))
        assert alloc.bits == fresh.bits and close(alloc.objective, fresh.objective)
        seen.append(alloc.info["reused_model"])
    assert seen == [False, True, True, True]
    with pytest.raises(InfeasibleError):
        resolve({"size": 1.0})
    assert resolve({}).info["linearization"] is None  # no budget: nothing to model


# ---------------------------------------------------------------------------
# One budget tolerance, the same at the boundary everywhere
# ---------------------------------------------------------------------------

#: One layer's size at 8 bits; at 2 bits it costs 1.
BIG = 1_000_000.0


def boundary_problem(limit: float, **kw) -> Problem:
    obj = Objective(layers=["a"], bits=(2, 8), unary=[[1.0, 0.0]])  # 8 bits preferred
    return Problem(objective=obj, costs={"size": [[1.0, BIG]]}, budgets={"size": limit}, **kw)


@pytest.mark.parametrize(
    "factor, accepted",
    [(1 + BUDGET_RTOL / 2, True), (1.0, True), (1 - BUDGET_RTOL, True), (1 + 10 * BUDGET_RTOL, False)],
)
def test_the_budget_tolerance_at_the_boundary(factor, accepted):
    # The cost of 8 bits is exactly limit * factor: within the tolerance the checker and
    # every solver take it, beyond it all of them refuse it.
    from mpqcore.problem import check_budgets_reachable
    from mpqcore.search import _uniform_reference

    limit = BIG / factor
    assert within_budget(BIG, limit) is accepted
    problem = boundary_problem(limit)
    assert (allocation_violations(problem, {"a": 8}) == []) is accepted
    expected = 8 if accepted else 2
    for name, cls in SOLVERS.items():
        assert cls().solve(problem).bits == {"a": expected}, name
    assert [a.bits["a"] for a in pareto_sweep(problem, "size", [limit])] == [expected]
    assert _uniform_reference(problem, problem.bits, {})[0] == expected
    pinned = reduce_problem(boundary_problem(limit, pins={"a": 8}))
    if accepted:
        check_budgets_reachable(pinned)
    else:
        with pytest.raises(InfeasibleError):
            check_budgets_reachable(pinned)
