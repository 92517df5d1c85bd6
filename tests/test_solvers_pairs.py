"""The ``pairs-bnb`` solver (pair objectives by branch-and-bound) against brute force."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import attrs
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpqcore.errors import ConfigError, InfeasibleError
from mpqcore.plugins import get_plugins
from mpqcore.problem import allocation_violations, load_problem, reduce_problem
from mpqcore.solvers import BruteForceSolver, PairsBnBSolver
from mpqcore.solvers._common import effective_terms
from mpqcore.solvers.pairs_bnb import CERTIFICATES, dense_pairs, rlt_reparametrization
from mpqcore.types import Objective, Problem

sys.path.insert(0, str(Path(__file__).parent))
from test_solvers import check_agree, outcome, problems

ROOT = Path(__file__).resolve().parent.parent

#: batch=1 bounds one partial allocation at a time, 3 splits children across batches, the default keeps them whole.
BATCHES = st.sampled_from([1, 3, 2048])


@st.composite
def dense_problems(draw):
    """Every pair of layers and bit-widths coupled (CLADO's ``pairs="all"``), 2-7 layers of
    2-3 widths, mixed signs, equal and unequal sizes (ties in the budget), one budget drawn
    from the cheapest allocation to the dearest, sometimes a pin or a tie."""
    L = draw(st.integers(2, 7))
    bits = (2, 4, 8)[: draw(st.integers(2, 3))]
    B = len(bits)
    layers = [f"l{i}" for i in range(L)]
    unary = np.array(draw(st.lists(st.integers(0, 400), min_size=L * B, max_size=L * B)), float).reshape(L, B) / 100
    if draw(st.booleans()):
        params = np.full(L, 64.0)
    else:
        params = np.array(draw(st.lists(st.integers(1, 9), min_size=L, max_size=L)), float)
    size = params[:, None] * np.array(bits, float)
    values = draw(st.lists(st.integers(-300, 300), min_size=L * L * B * B, max_size=L * L * B * B))
    it = iter(values)
    pairs = [
        (layers[i], bits[x], layers[k], bits[y], next(it) / 100)
        for i in range(L)
        for k in range(i + 1, L)
        for x in range(B)
        for y in range(B)
    ]
    lo, hi = size.min(axis=1).sum(), size.max(axis=1).sum()
    limit = float(lo + (hi - lo) * draw(st.integers(0, 10)) / 10)
    pins = {layers[draw(st.integers(0, L - 1))]: draw(st.sampled_from(bits))} if draw(st.integers(0, 3)) == 0 else {}
    ties = [[layers[0], layers[-1]]] if draw(st.integers(0, 3)) == 0 else []
    objective = Objective(layers=layers, bits=bits, unary=unary, pairs=pairs)
    return Problem(objective=objective, costs={"size": size}, budgets={"size": limit}, pins=pins, ties=ties)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(max_layers=6, max_pair_bits=3, pairs=True), BATCHES)
def test_agrees_with_brute_force_on_sparse_pairs_pins_ties_and_two_budgets(problem, batch):
    check_agree(
        problem,
        {
            "brute-force": outcome(BruteForceSolver(), problem),
            "pairs-bnb": outcome(PairsBnBSolver(batch=batch), problem),
        },
    )


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dense_problems(), BATCHES)
def test_agrees_with_brute_force_on_dense_pairs_at_several_budgets(problem, batch):
    check_agree(
        problem,
        {
            "brute-force": outcome(BruteForceSolver(), problem),
            "pairs-bnb": outcome(PairsBnBSolver(batch=batch), problem),
        },
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dense_problems(), st.data())
def test_reparametrization_keeps_every_allocation_s_objective(problem, data):
    """The LP duals move pair mass into the unary terms; no allocation's objective changes."""
    try:
        reduced = reduce_problem(problem)
    except InfeasibleError:
        return
    unary, pairs = effective_terms(reduced)
    G, B = reduced.n_groups, reduced.n_bits
    P = dense_pairs(pairs, G, B)
    weights = reduced.costs["size"][None]
    caps = np.array([problem.budgets["size"] + 1e-9])
    rep = rlt_reparametrization(unary, P, reduced.allowed, weights, caps, time_limit=10.0)
    if rep["infeasible"]:
        return
    assert np.all(rep["lam"] >= 0)
    options = [np.nonzero(row)[0] for row in reduced.allowed]
    choice = np.array([data.draw(st.sampled_from(list(o))) for o in options])
    rows = np.arange(G)
    before = unary[rows, choice].sum() + P[rows, choice][:, rows, choice].sum() / 2
    after = rep["unary"][rows, choice].sum() + rep["P"][rows, choice][:, rows, choice].sum() / 2
    assert math.isclose(before, after, rel_tol=1e-9, abs_tol=1e-9)
    # The LP bound is a bound: at most brute force's optimum.
    ref = outcome(BruteForceSolver(), problem)
    if not isinstance(ref, InfeasibleError):
        assert rep["bound"] <= ref.objective + 1e-7 * max(1.0, abs(ref.objective))


def test_registered_and_separable_objectives_go_to_mckp():
    plugins = get_plugins()
    assert "pairs-bnb" in plugins.solvers.names()
    problem = load_problem(ROOT / "mpqcore" / "examples" / "small.json")
    separable = attrs.evolve(problem, objective=problem.objective.without_pairs())
    out = plugins.solvers.create("pairs-bnb").solve(separable)
    assert out.solver == "pairs-bnb" and out.info["handed_to"] == "mckp" and out.status == "optimal"
    assert math.isclose(out.objective, BruteForceSolver().solve(separable).objective)


def test_a_dense_tensor_above_max_entries_is_refused_before_building_it():
    problem = load_problem(ROOT / "mpqcore" / "examples" / "small.json")
    with pytest.raises(ConfigError, match=r"max_entries=4.*'highs'"):
        PairsBnBSolver(max_entries=4).solve(problem)


def test_time_limit_returns_the_incumbent_with_a_proven_bound_and_its_gap():
    """The measured 52-layer problem is not proven in 3 s: the answer meets the budget, its
    bound lies below its objective and at or above the LP's, and the gap is theirs."""
    problem = load_problem(ROOT / "benchmarks" / "results" / "clado52_measured.json")
    out = PairsBnBSolver(time_limit=3.0).solve(problem)
    assert out.status == "time_limit"
    assert allocation_violations(problem, out.bits) == []
    assert out.bound <= out.objective
    assert out.info["lp_status"] != "Optimal" or out.bound >= out.info["lp_bound"] - 1e-9
    assert math.isclose(out.gap, (out.objective - out.bound) / abs(out.objective))
    assert out.solve_time < 3.0 + 1.5  # the LP and the search share the limit


def test_auto_sends_dense_pair_objectives_here_and_sparse_ones_to_highs():
    from mpqcore.solvers import AutoSolver, pick_solver
    from mpqcore.solvers.pairs_bnb import is_dense

    bits = (2, 4, 8)
    layers = ["a", "b", "c", "d"]
    unary = np.array([[3.0, 1.0, 0.0]] * 4)
    size = np.array([[2.0, 4.0, 8.0]] * 4)
    dense = [(x, 2, y, 2, -1.0) for i, x in enumerate(layers) for y in layers[i + 1 : i + 4]][:3]  # 3 of 6 pairs
    sparse = dense[:2]
    for terms, picked in ((dense, "pairs-bnb"), (sparse, "highs")):
        problem = Problem(
            objective=Objective(layers=layers, bits=bits, unary=unary, pairs=terms),
            costs={"size": size},
            budgets={"size": 16.0},
        )
        assert is_dense(problem) == (picked == "pairs-bnb")
        assert pick_solver(problem) == picked
        out = AutoSolver(time_limit=9).solve(problem)
        assert out.solver == picked and out.status == "optimal"
        assert math.isclose(out.objective, BruteForceSolver().solve(problem).objective)
        if picked == "pairs-bnb":  # with its semidefinite bound, which needs no extra package
            chosen = AutoSolver(time_limit=9).choose(problem)
            assert chosen.sdp and chosen.certificate == "admm"


# --- the semidefinite certificate (sdp=True) -------------------------------------------------

HAVE_SCS = importlib.util.find_spec("scs") is not None
needs_scs = pytest.mark.skipif(not HAVE_SCS, reason="scs (the sdp extra) not installed")


@pytest.mark.parametrize("certificate", CERTIFICATES)
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=dense_problems(), batch=BATCHES)
def test_sdp_agrees_with_brute_force_on_dense_pairs_at_several_budgets(problem, batch, certificate):
    if certificate == "scs" and not HAVE_SCS:
        pytest.skip("scs (the sdp extra) not installed")
    check_agree(
        problem,
        {
            "brute-force": outcome(BruteForceSolver(), problem),
            "pairs-bnb": outcome(PairsBnBSolver(batch=batch, sdp=True, lp_share=0.0, certificate=certificate), problem),
        },
    )


@pytest.mark.parametrize("certificate", CERTIFICATES)
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=problems(max_layers=6, max_pair_bits=3, pairs=True), batch=BATCHES)
def test_sdp_agrees_with_brute_force_on_sparse_pairs_pins_ties_and_two_budgets(problem, batch, certificate):
    if certificate == "scs" and not HAVE_SCS:
        pytest.skip("scs (the sdp extra) not installed")
    check_agree(
        problem,
        {
            "brute-force": outcome(BruteForceSolver(), problem),
            "pairs-bnb": outcome(PairsBnBSolver(batch=batch, sdp=True, lp_share=0.0, certificate=certificate), problem),
        },
    )


def _dense_instance(problem):
    """``(reduced, unary, P, G, B)`` of a feasible problem with two or more free groups, else ``None``."""
    try:
        reduced = reduce_problem(problem)
    except InfeasibleError:
        return None
    unary, pairs = effective_terms(reduced)
    G, B = reduced.n_groups, reduced.n_bits
    if G < 2:
        return None
    return reduced, unary, dense_pairs(pairs, G, B), G, B


def _allocation_vector(reduced, data):
    """A drawn allocation (allowed choices) as group choices and its lifted vector ``[1; x]``."""
    G, B = reduced.n_groups, reduced.n_bits
    options = [np.nonzero(row)[0] for row in reduced.allowed]
    choice = np.array([data.draw(st.sampled_from(list(o))) for o in options])
    x = np.zeros(G * B)
    x[np.arange(G) * B + choice] = 1.0
    return choice, np.concatenate([[1.0], x])


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(dense_problems(), problems(max_layers=6, max_pair_bits=3, pairs=True)),
    st.data(),
    st.sampled_from([0, 3, 100_000]),
    st.sampled_from([0, 1, 40]),
)
def test_face_certificate_is_semidefinite_splits_every_allocation_and_bounds_the_optimum(
    problem, data, steps, triangles
):
    """ADMM's certificate after 0, 3 or as many steps as it takes (any multiplier is one), with
    no, one or 40 triangle inequalities dualized (separated at every step here): q(x) >= 0 for
    every x (S semidefinite), f = q + its pair objective on every allocation without cuts and
    f >= q + it with them, and its bound is at most brute force's optimum (pins, ties, one and
    two budgets)."""
    from mpqcore.solvers.sdp_bound import face_certificate

    instance = _dense_instance(problem)
    if instance is None:
        return
    reduced, unary, P, G, B = instance
    names = list(reduced.problem.budgets)
    weights = np.array([reduced.costs[n] for n in names]).reshape(len(names), G, B)
    caps = np.array([reduced.problem.budgets[n] + 1e-9 for n in names])
    cert = face_certificate(
        unary,
        P,
        reduced.allowed,
        weights,
        caps,
        time_limit=10.0,
        max_iterations=steps,
        triangles=triangles,
        check_every=1 if triangles else 200,
    )
    assert cert["cuts"] <= triangles
    S = cert["S"]
    assert np.linalg.eigvalsh(S)[0] >= -1e-12 * max(1.0, np.abs(S).max())
    assert np.all(cert["lam"] >= 0)
    choice, z = _allocation_vector(reduced, data)
    rows = np.arange(G)
    before = unary[rows, choice].sum() + P[rows, choice][:, rows, choice].sum() / 2
    ur, Pr = cert["unary"], cert["P"]
    after = z @ S @ z + cert["const"] + ur[rows, choice].sum() + Pr[rows, choice][:, rows, choice].sum() / 2
    if cert["cuts"]:
        assert after <= before + 1e-9 * max(1.0, abs(before))
    else:
        assert math.isclose(before, after, rel_tol=1e-9, abs_tol=1e-9)
    assert z @ S @ z >= -1e-9 * max(1.0, np.abs(S).max())
    ref = outcome(BruteForceSolver(), problem)
    if not isinstance(ref, InfeasibleError):
        assert cert["bound"] <= ref.objective + 1e-7 * max(1.0, abs(ref.objective))


@needs_scs
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dense_problems(), st.data(), st.sampled_from([1e-6, 1e-1]))
def test_certificate_is_semidefinite_splits_every_allocation_and_bounds_the_optimum(problem, data, eps):
    """q(x) >= 0 for every x (S semidefinite), f = q + split part on every allocation, and
    the LP bound of the split part is at most brute force's optimum, even from a loose SCS run."""
    from mpqcore.solvers.sdp_bound import psd_certificate, split_objective

    instance = _dense_instance(problem)
    if instance is None:
        return
    reduced, unary, P, G, B = instance
    weights = reduced.costs["size"][None]
    caps = np.array([problem.budgets["size"] + 1e-9])
    cert = psd_certificate(unary, P, reduced.allowed, weights, caps, time_limit=10.0, eps=eps)
    S = cert["S"]
    assert S is not None
    assert np.linalg.eigvalsh(S)[0] >= -1e-12 * max(1.0, np.abs(S).max())
    const, unary_r, P_r = split_objective(unary, P, S)
    options = [np.nonzero(row)[0] for row in reduced.allowed]
    choice = np.array([data.draw(st.sampled_from(list(o))) for o in options])
    rows = np.arange(G)
    x = np.zeros(G * B)
    x[rows * B + choice] = 1.0
    z = np.concatenate([[1.0], x])
    before = unary[rows, choice].sum() + P[rows, choice][:, rows, choice].sum() / 2
    after = z @ S @ z + const + unary_r[rows, choice].sum() + P_r[rows, choice][:, rows, choice].sum() / 2
    assert math.isclose(before, after, rel_tol=1e-9, abs_tol=1e-9)
    rep = rlt_reparametrization(unary_r, P_r, reduced.allowed, weights, caps, time_limit=10.0)
    ref = outcome(BruteForceSolver(), problem)
    if not isinstance(ref, InfeasibleError) and not rep["infeasible"]:
        assert const + rep["bound"] <= ref.objective + 1e-7 * max(1.0, abs(ref.objective))


def test_scs_certificate_without_scs_is_refused_with_the_extra_to_install_and_admm_needs_none(monkeypatch):
    problem = load_problem(ROOT / "benchmarks" / "results" / "clado52.json")
    monkeypatch.setitem(sys.modules, "scs", None)
    with pytest.raises(ConfigError, match=r"mpq\[sdp\]"):
        PairsBnBSolver(sdp=True, certificate="scs").solve(problem)
    assert PairsBnBSolver(sdp=True, time_limit=30).solve(problem).status == "optimal"


def test_sdp_bounds_with_the_certificate_when_the_lp_search_gets_no_time():
    """lp_share=0: the certificate path itself (not the LP-bounded search) proves the optimum."""
    rng = np.random.default_rng(3)
    L, bits = 6, (2, 4, 8)
    layers = [f"l{i}" for i in range(L)]
    pairs = [
        (layers[i], x, layers[k], y, float(rng.normal()))
        for i in range(L)
        for k in range(i + 1, L)
        for x in bits
        for y in bits
    ]
    size = np.tile(np.array(bits, float), (L, 1))
    problem = Problem(
        objective=Objective(layers=layers, bits=bits, unary=rng.uniform(0, 2, (L, 3)), pairs=pairs),
        costs={"size": size},
        budgets={"size": 4.0 * L},
    )
    got = PairsBnBSolver(sdp=True, lp_share=0.0).solve(problem)
    ref = BruteForceSolver().solve(problem)
    assert got.status == "optimal" and math.isclose(got.objective, ref.objective, rel_tol=1e-9)
    assert got.info["lp_search_nodes"] == 0 and "sdp_iterations" in got.info
    # With triangle cuts the search's first bounding is a lower bound, not the objective: its
    # leaves are ranked by their objectives (the path the brute-force properties exercise too).
    assert got.info["sdp_cuts"] > 0
    plain = PairsBnBSolver(sdp=True, lp_share=0.0, triangles=0).solve(problem)
    assert plain.info["sdp_cuts"] == 0 and math.isclose(plain.objective, ref.objective, rel_tol=1e-9)
    assert got.info["sdp_bound"] <= ref.objective + 1e-9


# --- ADMM's projection onto the box and one budget row ---------------------------------------


def _bisected_projection(v, w, c):
    """The projection as it was computed before: bisection on the multiplier (60 halvings)."""
    a = np.clip(v, 0.0, 1.0)
    if w @ a <= c or not np.any(w > 0):
        return a
    lo, hi = 0.0, 1.0
    while w @ np.clip(v - hi * w, 0.0, 1.0) > c and hi < 1e300:
        hi *= 2.0
    for _ in range(60):
        t = (lo + hi) / 2
        if w @ np.clip(v - t * w, 0.0, 1.0) > c:
            lo = t
        else:
            hi = t
    return np.clip(v - hi * w, 0.0, 1.0)


_entries = st.lists(st.integers(-300, 300), min_size=1, max_size=64)


@settings(max_examples=400, deadline=None)
@given(v=_entries, w=_entries, c=st.integers(-200, 2000))
def test_the_box_row_projection_is_the_bisected_one_and_optimal(v, w, c):
    from mpqcore.solvers.sdp_bound import _box_halfspace_projection

    n = min(len(v), len(w))
    v, w, c = np.array(v[:n], float) / 100, np.abs(np.array(w[:n], float)) / 100 * np.sign(w[:n]), c / 100
    a = _box_halfspace_projection(v, w, c)
    assert a.shape == v.shape and np.all((a >= 0) & (a <= 1))
    np.testing.assert_allclose(a, _bisected_projection(v, w, c), atol=1e-9)
    # optimality (KKT): a = clip(v - t w) with t >= 0, and the row tight when t > 0 (or every entry saturated)
    # (a row with no positive weight is left alone, as before: costs are never negative)
    if np.any(w > 0) and w @ np.clip(v, 0, 1) > c and (w @ np.clip(v - 1e12 * w, 0, 1)) <= c:
        assert w @ a == pytest.approx(c, abs=1e-9)
