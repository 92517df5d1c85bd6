"""What a solver returns is checked by the core before it is used (issue 13), and the
numbers a solver cannot take are rescaled or refused.

Fake solver plugins, registered the way any plugin is (``PluginSet(autoload=False,
plugins=[module])``), return each kind of wrong answer; ``mpqcore.solve`` and ``mpq solve``
must turn each into a PluginError that names the plugin, never use it. Before, a missing
layer surfaced later as ``KeyError``, a non-candidate width as ``KeyError: 3``, and an
over-budget answer was reported as the solution.
"""

from __future__ import annotations

import json
import math
import types
from pathlib import Path

import attrs
import numpy as np
import pytest

import mpqcore
from mpqcore import Allocation, ConfigError, Objective, PluginError, PluginSet, Problem
from mpqcore.cli import main
from mpqcore.options import option
from mpqcore.problem import allocation_costs, allocation_violations, check_allocation, load_problem, run_solver

SMALL = Path(mpqcore.__file__).parent / "examples" / "small.json"


def small() -> Problem:
    return load_problem(SMALL)


def honest(problem: Problem, bits: dict, **kw) -> Allocation:
    """An allocation whose objective and costs are the problem's own sums at ``bits``."""
    fields = {"objective": problem.objective.value(bits), "costs": allocation_costs(problem, bits), "solver": "fake"}
    return Allocation(bits=bits, **{**fields, **kw})


#: The example's optimum (conv1 pinned to 8, fc1 and fc2 tied), within its budget.
GOOD = {"conv1": 8, "conv2": 4, "fc1": 4, "fc2": 4}

#: name -> what the fake solver returns for the example problem, and the message expected.
WRONG: dict[str, tuple] = {
    "not-an-allocation": (lambda p: dict(GOOD), r"returned a dict \(\{'conv1': 8, .*\), not an mpqcore.Allocation"),
    "none": (lambda p: None, r"returned a NoneType \(None\), not an mpqcore.Allocation"),
    "missing-layer": (
        lambda p: Allocation(bits={k: v for k, v in GOOD.items() if k != "fc2"}, objective=0.0),
        r"gives no bit-width to 1 of the 4 layers, e.g. \['fc2'\]",
    ),
    "unknown-layer": (
        lambda p: Allocation(bits={**GOOD, "head": 8}, objective=0.0),
        r"names layers that are not in the problem: \['head'\]",
    ),
    "not-a-candidate": (
        lambda p: Allocation(bits={**GOOD, "conv2": 3}, objective=0.0),
        r"uses bit-widths that are not candidates: \{'conv2': 3\}; candidates: \[2, 4, 8\]",
    ),
    "over-budget": (
        lambda p: honest(p, {"conv1": 8, "conv2": 8, "fc1": 8, "fc2": 8}),
        r"breaks the problem's constraints: budget 'size': cost 305280 > limit 160000",
    ),
    "pin-broken": (
        lambda p: honest(p, {**GOOD, "conv1": 2}),
        r"breaks the problem's constraints: pin conv1=8 broken: got 2",
    ),
    "tie-broken": (
        lambda p: honest(p, {**GOOD, "fc2": 2}),
        r"breaks the problem's constraints: tie \['fc1', 'fc2'\] broken: \[4, 2\]",
    ),
    "wrong-objective": (
        lambda p: honest(p, GOOD, objective=-1.0),
        r"reports objective -1.0, but the problem's objective at its bits is 0.25",
    ),
    "wrong-costs": (
        lambda p: honest(p, GOOD, costs={"size": 1.0}),
        r"reports costs that are not the tables' sums at its bits \(size: reported 1.0, actual 153216.0\)",
    ),
    "unknown-cost": (
        lambda p: honest(p, GOOD, costs={"size": 153216.0, "bops": 3.0}),
        r"reports costs \['bops'\] that the problem has no table for",
    ),
    "bad-status": (
        lambda p: honest(p, GOOD, status="done"),
        r"has status 'done'; valid: optimal, time_limit, heuristic",
    ),
    "nan-gap": (lambda p: honest(p, GOOD, gap=math.nan), r"has gap nan; a gap is >= 0"),
}


def plugin_with(name: str, answer) -> types.ModuleType:
    """A solver plugin module registering ``name``, whose solve returns ``answer(problem)``."""

    @attrs.frozen
    class Fake:
        def solve(self, problem: Problem):
            return answer(problem)

    module = types.ModuleType(f"fake_{name.replace('-', '_')}")

    @mpqcore.hookimpl
    def mpq_register_solvers(registry):
        registry.add(name, Fake)

    module.mpq_register_solvers = mpq_register_solvers  # type: ignore[attr-defined]
    return module


def plugins_with(name: str, answer) -> PluginSet:
    return PluginSet(autoload=False, plugins=[plugin_with(name, answer)])


@pytest.mark.parametrize("name", sorted(WRONG))
def test_a_wrong_answer_is_a_plugin_error_naming_the_plugin(name):
    answer, message = WRONG[name]
    plugins = plugins_with(name, answer)
    where = plugins.solvers.get(name).where
    assert "fake_" in where  # the registry names the plugin module
    with pytest.raises(PluginError, match=message) as info:
        mpqcore.solve(small(), name, plugins=plugins)
    assert str(info.value).startswith(f"solver {name!r} ({where}) returned ")
    assert info.value.plugin == plugins.solvers.get(name).plugin


def test_an_honest_answer_comes_back_with_its_missing_costs_filled():
    plugins = plugins_with("honest", lambda p: Allocation(bits=GOOD, objective=p.objective.value(GOOD)))
    alloc = mpqcore.solve(small(), "honest", plugins=plugins)
    assert dict(alloc.bits) == GOOD and dict(alloc.costs) == {"size": 153216.0}
    assert alloc.solver == "honest" and alloc.solve_time > 0


def test_a_solver_that_raises_is_named():
    def crash(problem):
        raise KeyError(3)

    plugins = plugins_with("crash", crash)
    with pytest.raises(PluginError, match=r"solver 'crash' \(plugin 'fake_crash'\) raised KeyError: 3") as info:
        mpqcore.solve(small(), "crash", plugins=plugins)
    assert isinstance(info.value.__cause__, KeyError)


def test_a_malformed_allocation_built_inside_a_solver_names_the_solver():
    plugins = plugins_with("fractional", lambda p: Allocation(bits={**GOOD, "conv2": 2.5}, objective=0.0))
    with pytest.raises(
        ConfigError,
        match=r"solver 'fractional' \(plugin 'fake_fractional'\): Allocation.bits\['conv2'\] = 2.5 is not an integer",
    ):
        mpqcore.solve(small(), "fractional", plugins=plugins)


def test_a_solver_instance_that_is_not_registered_is_named_by_its_class():
    @attrs.frozen
    class Stray:
        def solve(self, problem):
            return {"conv1": 8}

    with pytest.raises(
        PluginError, match=r"solver 'Stray' \(the tests\.test_solvers_checked\..*Stray given\) returned a dict"
    ):
        mpqcore.solve(small(), Stray())


def test_solve_refuses_what_is_not_a_problem():
    with pytest.raises(ConfigError, match=r"solve\(\) takes an mpqcore.Problem, got dict"):
        mpqcore.solve(json.loads(SMALL.read_text()))


@pytest.mark.parametrize("solver", ["highs", "dp", "brute-force", "mckp", "auto"])
def test_every_builtin_answer_passes_the_check(solver):
    problem = small()
    if solver in ("dp", "mckp"):  # separable objectives only: the example without its pair term
        problem = attrs.evolve(problem, objective=problem.objective.without_pairs())
    alloc = mpqcore.solve(problem, solver)  # checked inside
    assert check_allocation(problem, alloc, solver=solver, where="built-in") == alloc


def test_run_solver_is_the_one_call_search_can_make():
    problem = small()
    plugins = plugins_with("tie-broken", WRONG["tie-broken"][0])
    impl = plugins.solvers.create("tie-broken")
    with pytest.raises(PluginError, match=r"solver 'tie-broken' \(somewhere\) returned an allocation that breaks"):
        run_solver(problem, impl, solver="tie-broken", where="somewhere")


def test_a_pareto_sweep_checks_every_answer():
    from mpqcore.solvers.pareto import pareto_sweep

    @attrs.frozen
    class Greedy:  # ignores the budget: 8 bits everywhere
        def solve(self, problem):
            return honest(problem, {"conv1": 8, "conv2": 8, "fc1": 8, "fc2": 8})

    with pytest.raises(
        PluginError, match=r"solver 'Greedy' \(the .*Greedy given\) returned an allocation that breaks .*budget 'size'"
    ):
        pareto_sweep(small(), "size", [400000.0, 160000.0], Greedy())
    kept = pareto_sweep(small(), "size", [400000.0, 160000.0, 100.0], "highs")  # the infeasible one skipped
    assert [a.info["limit"] for a in kept] == [400000.0, 160000.0]


# -- the CLI: the same checks, exit status 4 -----------------------------------------------


def test_mpq_solve_with_a_bad_solver_plugin_exits_4(capsys, monkeypatch):
    import mpqcore.plugins

    plugins = plugins_with("not-a-candidate", WRONG["not-a-candidate"][0])
    monkeypatch.setattr(mpqcore.plugins, "_DEFAULT", plugins)
    rc = main(["solve", str(SMALL), "--solver", "not-a-candidate"])
    out, err = capsys.readouterr()
    assert rc == 4 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("mpq solve: error: solver 'not-a-candidate' (plugin 'fake_not_a_candidate') returned")


def test_mpq_solve_time_limit_covers_reading_the_file(capsys, monkeypatch, tmp_path):
    import mpqcore.plugins

    seen = []

    @attrs.frozen
    class Timed:
        time_limit: float = option(float, default=60.0, greater_than=0.0, help="seconds")

        def solve(self, problem):
            seen.append(self.time_limit)
            return honest(problem, GOOD)

    module = types.ModuleType("fake_timed")

    @mpqcore.hookimpl
    def mpq_register_solvers(registry):
        registry.add("timed", Timed)

    module.mpq_register_solvers = mpq_register_solvers  # type: ignore[attr-defined]
    monkeypatch.setattr(mpqcore.plugins, "_DEFAULT", PluginSet(autoload=False, plugins=[module]))
    rc = main(["solve", str(SMALL), "--solver", "timed", "--time-limit", "5"])
    assert rc == 0, capsys.readouterr().err
    assert 0 < seen[0] < 5  # what reading took is taken off the solver's share


# -- numbers beyond what HiGHS takes: scaled, the same answers as brute force ---------------


def scaled(problem: Problem, objective: float = 1.0, cost: float = 1.0) -> Problem:
    return attrs.evolve(
        problem,
        objective=attrs.evolve(
            problem.objective,
            unary=problem.objective.unary * objective,
            pairs={k: v * objective for k, v in problem.objective.pairs.items()},
        ),
        costs={k: v * cost for k, v in problem.costs.items()},
        budgets={k: v * cost for k, v in problem.budgets.items()},
    )


@pytest.mark.parametrize(
    "objective, cost",
    [(1.0, 1.0), (1e300, 1.0), (1e21, 1.0), (1e-200, 1.0), (1.0, 1e16), (1.0, 1e300), (1e300, 1e300), (1.0, 1e-10)],
)
def test_highs_takes_any_finite_magnitude(objective, cost):
    # Before: HiGHS took objective entries from 1e20 on as infinite (status 'Unknown'),
    # refused cost entries above 1e15 (status 'Empty'), and dropped those below 1e-9.
    base = small()
    reference = mpqcore.solve(base, "brute-force")
    problem = scaled(base, objective, cost)
    for solver in ("highs", "brute-force"):
        alloc = mpqcore.solve(problem, solver)
        assert dict(alloc.bits) == dict(reference.bits), solver
        assert allocation_violations(problem, alloc.bits) == []
        assert alloc.objective == pytest.approx(reference.objective * objective, rel=1e-9)
        if solver == "highs":
            assert alloc.bound == pytest.approx(alloc.objective, rel=1e-6)  # the bound is scaled back too


def test_highs_model_scales_by_powers_of_two_only_when_needed():
    from mpqcore.problem import reduce_problem
    from mpqcore.solvers.highs import HighsModel

    plain = HighsModel(reduce_problem(small()))
    assert plain.obj_scale == 1.0 and plain.row_scale == {"size": 1.0}
    huge = HighsModel(reduce_problem(scaled(small(), 1e300, 1e300)))
    for s in (huge.obj_scale, *huge.row_scale.values()):
        assert s > 1e290 and math.frexp(s)[0] == 0.5  # a power of two: dividing by it is exact


def test_dp_says_why_it_has_no_grid_for_huge_costs():
    problem = attrs.evolve(scaled(small(), 1.0, 1e16), objective=small().objective.without_pairs())
    with pytest.raises(
        ConfigError, match=r"has costs up to 2.67e\+21, beyond 2\*\*53 .* no default grid; pass grid=STEP"
    ):
        mpqcore.solve(problem, "dp")
    with pytest.raises(mpqcore.ProblemTooLargeError, match=r"beyond 2\*\*53; pass a coarser grid"):
        mpqcore.solve(problem, "dp", grid=1.0)
    assert dict(mpqcore.solve(problem, "dp", grid=1e18).bits) == dict(mpqcore.solve(problem, "brute-force").bits)


def test_a_limit_the_budget_tolerance_would_swamp_is_refused():
    # Before: costs and limit scaled by 1e-12 made every allocation "within budget" (the
    # tolerance is 1e-9 absolute below 1), and the solvers returned 8 bits everywhere.
    problem = scaled(small(), 1.0, 1e-12)
    with pytest.raises(
        ConfigError,
        match=r"budget 'size' = 1.6e-07 is below 1e-06: mpq meets a budget within 1e-09 .* 0.62% of this limit",
    ):
        mpqcore.solve(problem, "highs")
    raw = json.loads(SMALL.read_text())
    raw["budgets"]["size"] = 1e-9
    with pytest.raises(ConfigError, match=r"budget 'size' = 1e-09 is below 1e-06"):
        mpqcore.problem_from_dict(raw)


def test_a_problem_built_in_python_is_checked_for_overflowing_sums():
    objective = Objective(layers=["a", "b"], bits=[2, 4], unary=np.full((2, 2), 1e308))
    with pytest.raises(
        ConfigError, match=r"objective: values up to 1e\+308 over 2 layers sum beyond the largest float"
    ):
        mpqcore.solve(Problem(objective=objective), "highs")


def test_the_highs_budget_resolver_checks_each_new_limit():
    from mpqcore.solvers.highs import HighsSolver

    resolve = HighsSolver().budget_resolver(small())
    assert dict(resolve({"size": 160000.0}).bits) == GOOD
    with pytest.raises(ConfigError, match=r"budget 'size' = 1e-09 is below 1e-06"):
        resolve({"size": 1e-9})
