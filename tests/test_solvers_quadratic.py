"""Pair (quadratic, possibly non-convex) objectives: both HiGHS linearizations against brute force."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpqcore.errors import MpqError
from mpqcore.problem import allocation_violations, reduce_problem
from mpqcore.solvers import BruteForceSolver, HighsSolver, pareto_sweep
from mpqcore.solvers._common import local_search
from mpqcore.types import Objective, Problem

# The random-problem strategy and the agreement check live in test_solvers.py; pytest
# may import test files without putting their folder on sys.path.
sys.path.insert(0, str(Path(__file__).parent))
import itertools

from test_solvers import check_agree, close, outcome, problems


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(max_layers=5, max_pair_bits=3, pairs=True), st.sampled_from(["onehot", "generic"]), st.booleans())
def test_highs_linearizations_match_brute_force(problem, linearization, warm_start):
    results = {
        "brute-force": outcome(BruteForceSolver(), problem),
        "highs": outcome(HighsSolver(linearization=linearization, warm_start=warm_start), problem),
    }
    check_agree(problem, results)


def dense_problem(L: int, bits=(2, 4, 8), seed=0, avg=4.5) -> Problem:
    """Every pair of layers coupled, mixed-sign pair terms ~0.1-0.5 x the unary scale."""
    rng = np.random.default_rng(seed)
    params = rng.integers(10**3, 10**6, L)
    b = np.array(bits)
    unary = params[:, None] * 2.0 ** (-2 * b) * rng.uniform(0.5, 2, (L, len(bits))) / 1e3
    scale = math.exp(np.log(unary).mean())
    pairs = [
        (f"l{i}", x, f"l{k}", y, scale * rng.uniform(0.1, 0.5) * rng.choice([-1, 1]))
        for i in range(L)
        for k in range(i + 1, L)
        for x in bits
        for y in bits
    ]
    return Problem(
        objective=Objective(layers=[f"l{i}" for i in range(L)], bits=bits, unary=unary, pairs=pairs),
        costs={"size": params[:, None] * b},
        budgets={"size": avg * params.sum()},
    )


def test_onehot_and_generic_agree_on_a_dense_problem():
    problem = dense_problem(9)
    ref = BruteForceSolver().solve(problem)
    for lin in ("onehot", "generic"):
        res = HighsSolver(linearization=lin).solve(problem)
        assert res.status == "optimal" and close(res.objective, ref.objective)
        assert res.info["linearization"] == lin
    onehot = HighsSolver(linearization="onehot").solve(problem)
    generic = HighsSolver(linearization="generic").solve(problem)
    # Same y columns on a dense problem; RLT needs (|B|+|B|) rows per pair, McCormick 3 per term.
    assert onehot.info["columns"] == generic.info["columns"] == 9 * 3 + 36 * 9
    assert onehot.info["rows"] < generic.info["rows"]


def test_time_limit_returns_the_incumbent_with_bound_and_gap():
    problem = dense_problem(30)  # McCormick's weak bound: far from proven after 2 s
    res = HighsSolver(linearization="generic", time_limit=2.0).solve(problem)
    assert res.status == "time_limit"
    assert allocation_violations(problem, res.bits) == []
    if res.bound is None:  # a loaded machine may stop before the root LP: no bound yet
        assert res.gap == math.inf
    else:
        assert res.bound < res.objective and 0 < res.gap < math.inf
    assert res.objective <= res.info["start_objective"] + 1e-9


def test_no_incumbent_at_time_limit_is_a_clear_error():
    with pytest.raises(MpqError, match="no feasible allocation within its time limit"):
        HighsSolver(linearization="generic", time_limit=1e-3, warm_start=False).solve(dense_problem(40))


def test_pinned_partner_folds_pair_into_unary():
    problem = dense_problem(5)
    pinned = Problem(objective=problem.objective, costs=problem.costs, budgets=problem.budgets, pins={"l0": 4})
    res = HighsSolver().solve(pinned)
    assert close(res.objective, BruteForceSolver().solve(pinned).objective)
    # l0's pair terms became unary terms: only the 4 x 3 / 2 = 6 other pairs need y blocks.
    assert res.info["columns"] == 5 * 3 + 6 * 9


def test_local_search_keeps_budgets_and_never_worsens():
    problem = dense_problem(12)
    reduced = reduce_problem(problem)
    start = np.zeros(12, dtype=int)  # all 2 bits: cheapest, feasible
    better = local_search(reduced, start)
    assert reduced.objective_of(better) <= reduced.objective_of(start)
    assert allocation_violations(problem, reduced.expand(better)) == []


def test_pareto_sweep_with_pairs():
    problem = dense_problem(6)
    limits = [problem.costs["size"][:, 0].sum() * f for f in (1.0, 1.5, 2.5, 4.0)]
    sweep = pareto_sweep(problem, "size", limits, linearization="onehot")
    values = [a.objective for a in sweep]
    assert all(b <= a + 1e-9 for a, b in itertools.pairwise(values))
    for alloc, limit in zip(sweep, limits, strict=True):
        assert close(alloc.objective, BruteForceSolver().solve(problem.with_budgets({"size": limit})).objective)


def test_changing_threads_between_solves_in_one_process():
    # HiGHS sizes its global thread pool at the first solve; a later model asking for
    # another size used to stop with status "Not Set" and no allocation.
    problem = dense_problem(6)
    ref = HighsSolver().solve(problem)
    for threads in (2, 1, None):
        res = HighsSolver(threads=threads).solve(problem)
        assert res.status == "optimal" and close(res.objective, ref.objective)
