"""The ``mixquant-qem`` solver on hand-made problems and against an exhaustive QEM scan."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import mpqcore
from mpqcore.problem import allocation_violations
from mpqcore.types import Objective, Problem
from mpqcore_mixquant import QEMSolver, rule_choice, thresholds

BITS = (2, 3, 4, 8)
QE = np.array(
    [
        [16.0, 4.0, 1.0, 0.5],  # ratios 32, 8, 2, 1
        [8.0, 2.0, 1.5, 1.0],  # ratios 8, 2, 1.5, 1
    ]
)
PARAMS = np.array([100.0, 300.0])


def _problem(qe=QE, params=PARAMS, budget=None, pins=None, ties=(), bits=BITS):
    size = params[:, None] * np.array(bits, dtype=float)[None, :]
    obj = Objective(layers=[f"l{i}" for i in range(len(qe))], bits=bits, unary=qe)
    budgets = {} if budget is None else {"size": budget}
    return Problem(objective=obj, costs={"size": size}, budgets=budgets, pins=pins or {}, ties=ties)


def test_paper_rule_by_hand():
    # qem = 2: l0 -> 4 bits (ratio 2), l1 -> 3 bits (ratio 2).
    a = QEMSolver(qem=2.0).solve(_problem())
    assert a.bits == {"l0": 4, "l1": 3}
    assert a.status == "heuristic" and a.info["mode"] == "qem" and a.info["qem"] == 2.0
    assert a.costs == {"size": 100 * 4 + 300 * 3}
    assert a.objective == pytest.approx(1.0 + 2.0)


def test_budget_search_by_hand():
    # Thresholds: l0 {32, 8, 2, 1}, l1 {8, 2, 1.5, 1}. Allocations by QEM:
    #  [1, 1.5): (8, 8) = 3200   [1.5, 2): (8, 4) = 2000   [2, 8): (4, 3) = 1300
    #  [8, 32): (3, 2) = 900     [32, inf): (2, 2) = 800
    for budget, qem, bits in [
        (5000, 1.0, (8, 8)),
        (2000, 1.5, (8, 4)),
        (1999, 2.0, (4, 3)),
        (1300, 2.0, (4, 3)),
        (1000, 8.0, (3, 2)),
        (800, 32.0, (2, 2)),
    ]:
        a = QEMSolver().solve(_problem(budget=budget))
        assert (a.bits["l0"], a.bits["l1"]) == bits, budget
        assert a.info["qem"] == qem and a.info["mode"] == "budget"
        assert a.info["search"]["kind"] == "bisection"


def test_infeasible_budget_and_qem_over_budget():
    with pytest.raises(mpqcore.InfeasibleError):
        QEMSolver().solve(_problem(budget=799))
    with pytest.raises(mpqcore.InfeasibleError, match="qem=2"):
        QEMSolver(qem=2.0).solve(_problem(budget=1000))


def test_pins_and_ties():
    a = QEMSolver(qem=2.0).solve(_problem(pins={"l1": 8}))
    assert a.bits == {"l0": 4, "l1": 8}
    # tied: l0 wants 4, l1 wants 3 -> both 4
    a = QEMSolver(qem=2.0).solve(_problem(ties=[("l0", "l1")]))
    assert a.bits == {"l0": 4, "l1": 4}
    assert allocation_violations(_problem(ties=[("l0", "l1")]), a.bits) == []


def test_option_and_problem_errors_name_what_is_valid():
    with pytest.raises(mpqcore.ConfigError, match=r"\(plugin .*\): qem must be a finite number >= 1 or None, got 0.5"):
        mpqcore.get_plugins().solvers.create("mixquant-qem", qem=0.5)
    with pytest.raises(mpqcore.ConfigError, match="reference_bits must be an integer from 1 to 16, got 0"):
        QEMSolver(reference_bits=0)
    with pytest.raises(mpqcore.ConfigError, match=r"reference_bits=6 is not a candidate; valid: \[2, 3, 4, 8\]"):
        QEMSolver(reference_bits=6, qem=2).solve(_problem())
    with pytest.raises(mpqcore.ConfigError, match=r"qem=.*or a budget"):
        QEMSolver().solve(_problem())
    with pytest.raises(mpqcore.ConfigError, match="negative"):
        QEMSolver(qem=2).solve(_problem(qe=-QE))


def test_non_monotone_costs_are_scanned():
    # A latency-like table where 3 bits costs more than 4: feasibility is not monotone in QEM.
    obj = Objective(layers=["a"], bits=BITS, unary=[[16.0, 4.0, 1.0, 0.5]])
    costs = {"lat": [[1.0, 9.0, 5.0, 10.0]]}
    p = Problem(objective=obj, costs=costs, budgets={"lat": 6.0})
    a = QEMSolver().solve(p)
    assert a.bits == {"a": 4} and a.info["qem"] == 2.0 and a.info["search"]["kind"] == "scan"


@settings(max_examples=200, deadline=None)
@given(L=st.integers(1, 5), data=st.data())
def test_budget_search_finds_the_smallest_feasible_qem(L, data):
    bits = BITS
    qe = data.draw(arrays(np.float64, (L, len(bits)), elements=st.one_of(st.just(0.0), st.floats(1e-9, 1e3))))
    params = data.draw(arrays(np.float64, L, elements=st.integers(1, 1000).map(float)))
    frac = data.draw(st.floats(0.25, 1.0))
    budget = frac * float(params.sum()) * 8
    problem = _problem(qe, params, budget=budget)
    ref = qe[:, bits.index(8)]
    size = problem.costs["size"]

    def cost(q):
        c = rule_choice(qe, ref, q)
        return float(size[np.arange(L), c].sum())

    t = thresholds(qe, ref).ravel()
    candidates = sorted({1.0, *t[np.isfinite(t)]})
    feasible = [q for q in candidates if cost(q) <= budget * (1 + 1e-9)]
    if not feasible:
        with pytest.raises(mpqcore.InfeasibleError):
            QEMSolver().solve(problem)
        return
    a = QEMSolver().solve(problem)
    assert a.info["qem"] == feasible[0]
    assert allocation_violations(problem, a.bits) == []
    assert [a.bits[f"l{i}"] for i in range(L)] == [bits[j] for j in rule_choice(qe, ref, feasible[0])]
    # any smaller QEM (the last float below it included) breaks the budget
    below = math.nextafter(feasible[0], 0.0)
    if below >= 1.0:
        assert cost(below) > budget * (1 + 1e-9)
