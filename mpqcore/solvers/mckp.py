"""The ``mckp`` solver: the multiple-choice knapsack solved through its structure.

A separable objective under budgets is a multiple-choice knapsack (MCKP): per layer
group one choice, ``sum u[g, j]`` minimized, ``sum w[g, j] <= limit`` per budget. General
MIP solvers prove it slowly at thousands of groups although its LP relaxation is almost
tight (``docs/solvers.md``). This solver follows the core algorithms for the MCKP
(Pisinger, "A minimal algorithm for the multiple-choice knapsack problem", 1995; Kellerer,
Pferschy and Pisinger, *Knapsack Problems*, ch. 11):

1. **Dominance.** A choice no lighter in every budget and no better in the objective
   than another of its group is dropped (ties keep the lower bit index).
2. **LP optimum** (one budget). Per group the lower convex hull of (weight, objective);
   its increments sorted by efficiency ``-du/dw`` and taken greedily until the capacity
   runs out. The efficiency ``lam`` of the first increment that does not fit is the LP
   dual: ``LB = sum_g min_j (u + lam w) - lam * capacity`` is a proven lower bound (it
   holds for any ``lam >= 0``, so rounding cannot make it invalid).
3. **An incumbent** ``UB``: the LP solution without its fractional increment, filled up
   with the best improving moves that still fit.
4. **Reduced-cost fixing.** Choice ``j`` of group ``g`` is in no allocation better than
   ``LB + rc[g, j]`` (``rc`` = ``u + lam w`` minus the group's least), so every choice
   with ``LB + rc > UB`` goes. What is left with two or more choices is the *core*:
   typically a few groups whose efficiencies sit next to ``lam``.
5. **Exact core.** Dynamic programming over the core groups on lists of non-dominated
   partial allocations (used weight, objective), real-valued weights, no grid: a list
   entry whose Lagrangian bound exceeds the incumbent is dropped, and so is one that
   another beats in both weight and objective. When the list grows past ``max_states``
   the core goes to HiGHS instead (still exact).

Several budgets: dominance in all of them, the LP relaxation on HiGHS (its budget duals
are the ``lam``), reduced-cost fixing against an incumbent, and HiGHS's MIP on the core.
Without an incumbent the fixing threshold is guessed and raised until the core's optimum
passes the fixing test: the answer is proven in every round that returns ``optimal``.

``time_limit`` stops the search with the incumbent, status ``time_limit``, and the
bound still proven (the least bound of the open partial allocations, or HiGHS's bound on
the core, and what fixing left out).
"""

from __future__ import annotations

import math
import time
from typing import Any

import attrs
import numpy as np

from mpqcore.constraints import budget_slack
from mpqcore.errors import ConfigError, InfeasibleError, MpqError
from mpqcore.options import option
from mpqcore.problem import ReducedProblem, raise_jointly_infeasible
from mpqcore.solvers._common import argmin_choice, effective_terms, make_allocation, over_budget, prepare, relative_gap
from mpqcore.types import Allocation, Problem

__all__ = ["MCKPSolver", "dominated", "lp_bound"]

#: Relative size of the rounding allowance in bound comparisons: bounds are sums of
#: thousands of floats, and a choice is only fixed out when its bound beats the
#: incumbent by more than this times the objective's scale.
_BOUND_RTOL = 1e-11

#: How many times a solution over a budget by rounding (a sum in another order than the
#: checker's) is re-solved with that capacity tightened by the overshoot.
_TIGHTEN_RETRIES = 3

#: The DP keeps every stage's states for backtracking (6 bytes each): past this many times
#: ``max_states`` in all, the core goes to HiGHS instead (120 MB at the default).
_STORED_STATES = 20

#: Groups in the first core of one budget's expanding core: small enough to solve in
#: milliseconds, large enough that its optimum is usually the final incumbent.
_FIRST_CORE = 64


@attrs.frozen
class MCKPSolver:
    """Exact multiple-choice knapsack: dominance, LP bound, reduced-cost fixing, exact core.

    Separable objectives only (pair terms that pins or ties make linear are folded in;
    others are refused with a :class:`~mpqcore.errors.ConfigError`: use ``highs``). Any
    number of budgets; one budget is solved without a MIP solver. ``time_limit`` seconds
    (the incumbent comes back with status ``time_limit``, its proven bound and gap);
    ``max_states`` caps the core's list of partial allocations, above which the core is
    handed to HiGHS.
    """

    name = "mckp"

    time_limit: float = option(float, default=60.0, greater_than=0.0, help="seconds before the incumbent is returned")
    max_states: int = option(
        int, default=1_000_000, minimum=1, help="partial allocations the core's DP keeps before HiGHS takes the core"
    )

    def solve(self, problem: Problem) -> Allocation:
        started = time.perf_counter()
        deadline = started + self.time_limit
        reduced = prepare(problem)
        unary, pairs = effective_terms(reduced)
        if pairs:
            raise ConfigError(
                f"solver 'mckp' handles separable objectives only, but this one has {len(pairs)} pair terms "
                "between free layer groups; use the 'highs' solver (the 'auto' solver picks it for you), "
                "or drop the pairs with Objective.without_pairs()"
            )
        names = list(reduced.problem.budgets)
        if reduced.n_groups == 0 or not names:
            return make_allocation(reduced, argmin_choice(reduced, unary), solver=self.name, started=started)
        limits = {n: float(reduced.problem.budgets[n]) for n in names}
        caps = {n: limits[n] + budget_slack(limits[n]) for n in names}
        tightened: dict[str, float] = {}
        for _attempt in range(_TIGHTEN_RETRIES + 1):
            use = {n: tightened.get(n, caps[n]) for n in names}
            if len(names) == 1:
                out = _solve_one(reduced, unary, names[0], use[names[0]], deadline, self.max_states)
            else:
                out = _solve_several(reduced, unary, names, use, deadline)
            over = over_budget(reduced, reduced.costs_of(out.choice))
            if not over:
                break
            for n, excess in over.items():
                tightened[n] = use[n] - excess - budget_slack(limits[n])
        else:
            raise MpqError(f"solver 'mckp' kept returning allocations over the budgets {sorted(over)} by {over}")
        objective = reduced.objective_of(out.choice)
        if out.status == "optimal":
            gap, bound = 0.0, objective
        else:
            bound = min(out.bound, objective)
            gap = relative_gap(objective, bound)
        return make_allocation(
            reduced,
            out.choice,
            solver=self.name,
            started=started,
            status=out.status,
            gap=gap,
            bound=bound,
            info={**out.info, "tightened": bool(tightened)},
        )


@attrs.frozen
class _Outcome:
    choice: np.ndarray
    status: str  # "optimal" or "time_limit"
    bound: float
    info: dict[str, Any]


def dominated(unary: np.ndarray, weights: list[np.ndarray], allowed: np.ndarray) -> np.ndarray:
    """``(G, B)`` mask of the allowed choices another allowed choice of the group dominates.

    ``k`` dominates ``j`` when it is no worse in the objective and in every weight and
    better in one of them, or equal in all and of a lower index (one of equals is kept).
    Dropping dominated choices never loses an optimum.
    """
    B = unary.shape[1]
    U = np.where(allowed, unary, np.inf)
    no_worse = U[:, :, None] <= U[:, None, :]  # [g, k, j]: k's objective <= j's
    better = U[:, :, None] < U[:, None, :]
    for w in weights:
        W = np.where(allowed, w, np.inf)
        no_worse &= W[:, :, None] <= W[:, None, :]
        better |= W[:, :, None] < W[:, None, :]
    earlier = np.arange(B)[:, None] < np.arange(B)[None, :]
    dom = allowed[:, :, None] & allowed[:, None, :] & no_worse & (better | earlier[None])
    return allowed & dom.any(axis=1)


def _hull_increments(U: np.ndarray, W: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per group, the steps along the lower convex hull of (weight, objective).

    ``U``, ``W``: objective and weight (inf where not kept), undominated, each group's
    lightest choice at weight 0. Returns ``(group, to, dw, du, step)`` arrays, one entry
    per hull edge, from the lightest choice on; collinear points are separate steps.
    """
    G, B = U.shape
    order = np.argsort(W, axis=1, kind="stable")
    Ws = np.take_along_axis(W, order, axis=1)
    Us = np.take_along_axis(U, order, axis=1)
    n_keep = keep.sum(axis=1)
    rows = np.arange(G)
    pos = np.arange(B)[None, :]
    cur = np.zeros(G, dtype=int)
    out_g, out_to, out_dw, out_du, out_step = [], [], [], [], []
    for step in range(B - 1):
        wc, uc = Ws[rows, cur][:, None], Us[rows, cur][:, None]
        valid = (pos > cur[:, None]) & (pos < n_keep[:, None])
        with np.errstate(invalid="ignore", divide="ignore"):
            slope = np.where(valid, (Us - uc) / (Ws - wc), np.inf)
        nxt = slope.argmin(axis=1)  # the first of equal slopes: the nearest collinear point
        has = np.isfinite(slope[rows, nxt])
        if not has.any():
            break
        g = rows[has]
        out_g.append(g)
        out_to.append(order[g, nxt[has]])
        out_dw.append(Ws[g, nxt[has]] - Ws[g, cur[has]])
        out_du.append(Us[g, nxt[has]] - Us[g, cur[has]])
        out_step.append(np.full(len(g), step))
        cur[has] = nxt[has]
    if not out_g:
        empty = np.zeros(0)
        return empty.astype(int), empty.astype(int), empty, empty, empty.astype(int)
    return tuple(np.concatenate(a) for a in (out_g, out_to, out_dw, out_du, out_step))


def lp_bound(unary: np.ndarray, weight: np.ndarray, allowed: np.ndarray, capacity: float) -> tuple[float, float]:
    """``(bound, lam)``: the LP relaxation's optimum of a one-budget MCKP and its dual.

    ``capacity`` bounds ``sum weight``; the bound is the Lagrangian value at ``lam``,
    which equals the LP optimum and is a valid lower bound whatever rounding did.
    """
    keep = allowed & ~dominated(unary, [weight], allowed)
    U = np.where(keep, unary, np.inf)
    base = np.where(keep, weight, np.inf).min(axis=1)
    W = np.where(keep, weight - base[:, None], np.inf)
    lp = _greedy_lp(U, W, keep, capacity - float(base.sum()))
    return lp["bound"], lp["lam"]


def _greedy_lp(U: np.ndarray, W: np.ndarray, keep: np.ndarray, capacity: float) -> dict[str, Any]:
    """The LP over hull increments: ``lam``, the bound and the integer part of its solution."""
    G = U.shape[0]
    rows = np.arange(G)
    lightest = np.where(keep, W, np.inf).argmin(axis=1)  # weight 0 after the shift
    g, to, dw, du, step = _hull_increments(U, W, keep)
    eff = -du / dw
    order = np.lexsort((step, g, -eff))
    cum = np.cumsum(dw[order])
    n_full = int(np.searchsorted(cum, capacity, side="right"))
    choice = lightest.copy()
    taken = order[:n_full]
    # Increments of one group come in hull order, so the last one taken per group wins.
    choice[g[taken]] = to[taken]
    lam = 0.0 if n_full == len(order) else float(eff[order[n_full]])
    red = np.where(keep, U + lam * np.where(keep, W, 0.0), np.inf)
    bound = float(red.min(axis=1).sum() - lam * capacity)
    if lam == 0.0:
        bound = float(U[rows, choice].sum())  # every hull taken: the LP optimum is integral
    return {"lam": lam, "bound": bound, "choice": choice, "fractional": n_full < len(order), "increments": len(order)}


def _fill_up(
    choice: np.ndarray, U: np.ndarray, weights: list[np.ndarray], caps: list[float], max_moves: int = 2000
) -> np.ndarray:
    """Greedy improving moves that fit every budget's spare capacity, best objective gain first."""
    choice = choice.copy()
    rows = np.arange(len(choice))
    used = [float(W[rows, choice].sum()) for W in weights]
    for _ in range(max_moves):
        du = U - U[rows, choice][:, None]
        ok = du < 0
        for W, cap, u in zip(weights, caps, used, strict=True):
            ok &= W - W[rows, choice][:, None] <= cap - u
        if not ok.any():
            break
        gi, j = np.unravel_index(np.argmin(np.where(ok, du, np.inf)), du.shape)
        used = [u + float(W[gi, j] - W[gi, choice[gi]]) for W, u in zip(weights, used, strict=True)]
        choice[gi] = j
    return choice


def _solve_one(
    reduced: ReducedProblem, unary: np.ndarray, name: str, cap: float, deadline: float, max_states: int
) -> _Outcome:
    """One budget: LP by the greedy pass, fixing, then DP over the core (HiGHS past ``max_states``)."""
    allowed = reduced.allowed
    weight = reduced.costs[name]
    G = reduced.n_groups
    rows = np.arange(G)
    keep = allowed & ~dominated(unary, [weight], allowed)
    U = np.where(keep, unary, np.inf)
    base = np.where(keep, weight, np.inf).min(axis=1)
    W = np.where(keep, weight - base[:, None], np.inf)
    capacity = max(0.0, cap - float(base.sum()))
    lp = _greedy_lp(U, W, keep, capacity)
    info: dict[str, Any] = {
        "method": "lp",
        "choices_kept": int(keep.sum()),
        "lp_bound": lp["bound"],
        "lam": lp["lam"],
        "core_groups": 0,
        "max_states": 0,
    }
    if not lp["fractional"]:
        # Each group at its hull's least objective, and it fits: nothing can do better.
        return _Outcome(lp["choice"], "optimal", lp["bound"], info)
    lam, LB = lp["lam"], lp["bound"]
    start = lp["choice"]
    if float(W[rows, start].sum()) > capacity:  # the cumulative sum rounded differently
        start = np.where(keep, W, np.inf).argmin(axis=1)
    incumbent = _fill_up(start, U, [W], [capacity])
    UB = float(U[rows, incumbent].sum())
    info["start_objective"] = UB
    Wz = np.where(keep, W, 0.0)
    red = np.where(keep, U + lam * Wz, np.inf)
    rc = red - red.min(axis=1)[:, None]
    scale = float(np.abs(np.where(keep, U, 0.0)).max(axis=1).sum() + lam * (capacity + Wz.max(axis=1).sum())) + 1e-300
    tol = _BOUND_RTOL * scale
    # An expanding core: fix out the choices whose reduced cost exceeds ``delta``, solve
    # what is left exactly, and stop once nothing fixed out can beat the answer.
    delta = _first_threshold(rc, keep, UB - LB)
    delta = max(delta, tol)
    info["rounds"] = 0
    peak = 0
    while True:
        info["rounds"] += 1
        survive = keep & (rc <= delta + tol)
        fixed_out = float(np.where(keep & ~survive, rc, np.inf).min(initial=np.inf))
        info["core_groups"] = int((survive.sum(axis=1) >= 2).sum())
        result = _core_dp(U, W, survive, capacity, UB, incumbent, tol, deadline, max_states, info)
        peak = max(peak, info["max_states"])
        if result is None:  # too many states: the same core, exactly, on HiGHS
            info["method"] = "highs-core"
            weights = {name: np.where(keep, W, 0.0)}
            result = _highs_core(U, weights, {name: capacity}, survive, incumbent, UB, deadline, info)
        info["max_states"] = peak
        if result.status != "optimal":
            return _with_fixed_bound(result, LB + fixed_out)
        incumbent, UB = result.choice, float(U[rows, result.choice].sum())
        if LB + fixed_out > UB + tol:  # nothing fixed out is in a better allocation
            return attrs.evolve(result, bound=UB)
        delta = min(UB - LB, max(4 * delta, tol))


def _with_fixed_bound(out: _Outcome, fixed_bound: float) -> _Outcome:
    """A time-limited core's bound covers only the choices left in; those fixed out are >= ``fixed_bound``."""
    if out.status == "optimal":
        return out
    return attrs.evolve(out, bound=min(out.bound, fixed_bound))


def _core_dp(
    U: np.ndarray,
    W: np.ndarray,
    survive: np.ndarray,
    capacity: float,
    UB: float,
    incumbent: np.ndarray,
    tol: float,
    deadline: float,
    max_states: int,
    info: dict[str, Any],
) -> _Outcome | None:
    """Exact DP over the groups with two or more surviving choices; ``None`` past ``max_states``
    states in one stage (or :data:`_STORED_STATES` times that in all).

    States are partial allocations of the core groups taken so far, as (weight, objective)
    lists without dominated entries. Each state is bounded by its objective plus the LP
    optimum of the groups still to come in the capacity it leaves (their hull increments
    taken by efficiency: a convex piecewise-linear function of the capacity, evaluated
    for every state at once) and dropped when that exceeds the incumbent; the LP's
    integer part in the same capacity (the increments that fit whole) completes each
    state to a candidate incumbent.
    """
    n_surv = survive.sum(axis=1)
    core = np.nonzero(n_surv >= 2)[0]
    fixed = np.nonzero(n_surv == 1)[0]
    fixed_choice = survive[fixed].argmax(axis=1)
    fixed_u = float(U[fixed, fixed_choice].sum())
    cap = capacity - float(W[fixed, fixed_choice].sum())
    # Groups whose choices differ most in weight first: a partial allocation that strays
    # far from the capacity is then bounded out while the light groups left cannot make
    # up for it (measured: 50,000 layers, 1.8 k states at most, against 420 k with the
    # groups ordered by reduced cost).
    heaviest = np.where(survive[core], W[core], -np.inf).max(axis=1)
    lightest = np.where(survive[core], W[core], np.inf).min(axis=1)
    core = core[np.argsort(lightest - heaviest, kind="stable")]
    k = len(core)
    Uc = np.where(survive[core], U[core], np.inf)
    Wc = np.where(survive[core], W[core], np.inf)
    light = Wc.argmin(axis=1)
    rows_c = np.arange(k)

    def suffix(a: np.ndarray) -> np.ndarray:
        return np.concatenate([np.cumsum(a[::-1])[::-1], [0.0]])

    rest_w, rest_u = suffix(Wc[rows_c, light]), suffix(Uc[rows_c, light])
    # The core's hull increments (within the surviving choices), by efficiency.
    inc_g, inc_to, inc_dw, inc_du, inc_step = _hull_increments(Uc, np.where(survive[core], Wc, np.inf), survive[core])
    by_eff = np.lexsort((inc_step, inc_g, inc_du / inc_dw))
    inc_g, inc_to, inc_dw, inc_du = inc_g[by_eff], inc_to[by_eff], inc_dw[by_eff], inc_du[by_eff]

    def rest_lp(t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The increments of the groups after stage ``t - 1``: their index, cumulative dw and du."""
        idx = np.nonzero(inc_g >= t)[0]
        return idx, np.concatenate([[0.0], np.cumsum(inc_dw[idx])]), np.concatenate([[0.0], np.cumsum(inc_du[idx])])

    best, best_path = UB, None  # (stage, parent index, choice, increments of the rest taken)
    Wst, Vst = np.zeros(1), np.zeros(1)
    parents: list[np.ndarray] = []
    picks: list[np.ndarray] = []
    peak, stored = 1, 0
    status = "optimal"
    for t in range(k):
        if time.perf_counter() > deadline:
            status = "time_limit"
            break
        J = np.nonzero(survive[core[t]])[0]
        n = len(Wst)
        W2 = (Wst[None, :] + Wc[t, J][:, None]).ravel()
        V2 = (Vst[None, :] + Uc[t, J][:, None]).ravel()
        P = np.tile(np.arange(n), len(J))
        C = np.repeat(J, n)
        room = cap - W2 - rest_w[t + 1]  # capacity left above the rest's lightest choices
        ok = room >= 0
        _, xp, fp = rest_lp(t + 1)
        whole = np.searchsorted(xp, np.where(ok, room, 0.0), side="right") - 1
        value = np.where(ok, fixed_u + V2 + rest_u[t + 1] + fp[whole], np.inf)
        i = int(value.argmin())
        if value[i] < best:
            best, best_path = float(value[i]), (t, int(P[i]), int(C[i]), int(whole[i]))
        bound = fixed_u + V2 + rest_u[t + 1] + np.interp(room, xp, fp)
        ok &= bound <= best + tol
        W2, V2, P, C = W2[ok], V2[ok], P[ok], C[ok]
        order = np.lexsort((V2, W2))
        W2, V2, P, C = W2[order], V2[order], P[order], C[order]
        if len(V2) > 1:
            running = np.minimum.accumulate(V2)
            front = np.concatenate([[True], V2[1:] < running[:-1]])
            W2, V2, P, C = W2[front], V2[front], P[front], C[front]
        parents.append(P.astype(np.int32))
        picks.append(C.astype(np.int16))
        Wst, Vst = W2, V2
        peak = max(peak, len(Wst))
        stored += len(Wst)
        if len(Wst) == 0:
            break  # every partial allocation is bounded out: the incumbent is optimal
        if len(Wst) > max_states or stored > _STORED_STATES * max_states:
            info["max_states"] = peak
            return None
    info["method"] = "dp"
    info["max_states"] = peak
    info["stages"] = len(parents)
    choice = incumbent.copy()
    if best_path is not None:
        t, p, c, whole_taken = best_path
        choice[fixed] = fixed_choice
        choice[core[t + 1 :]] = light[t + 1 :]
        idx, _, _ = rest_lp(t + 1)
        taken = idx[:whole_taken]
        choice[core[inc_g[taken]]] = inc_to[taken]  # a group's increments in hull order: the last wins
        choice[core[t]] = c
        for s in range(t - 1, -1, -1):
            choice[core[s]] = picks[s][p]
            p = int(parents[s][p])
    bound = best
    if status != "optimal" and len(Wst):
        t = len(parents)  # stages done; the open states cover every better allocation
        _, xp, fp = rest_lp(t)
        room = cap - Wst - rest_w[t]
        bound = min(best, float((fixed_u + Vst + rest_u[t] + np.interp(room, xp, fp)).min()))
    return _Outcome(choice, status, bound, info)


def _solve_several(
    reduced: ReducedProblem, unary: np.ndarray, names: list[str], caps: dict[str, float], deadline: float
) -> _Outcome:
    """Several budgets: LP on HiGHS for the duals, reduced-cost fixing, HiGHS MIP on the core."""
    allowed = reduced.allowed
    G = reduced.n_groups
    rows = np.arange(G)
    weights = {n: reduced.costs[n] for n in names}
    keep = allowed & ~dominated(unary, list(weights.values()), allowed)
    U = np.where(keep, unary, np.inf)
    lp = _highs_mckp(U, weights, caps, keep, integer=False, time_limit=max(1e-3, deadline - time.perf_counter()))
    if lp["status"] == "infeasible":
        raise_jointly_infeasible(reduced, "mckp")
    info: dict[str, Any] = {"method": "highs-core", "choices_kept": int(keep.sum()), "rounds": 0}
    if lp["status"] != "optimal":
        raise MpqError(
            f"solver 'mckp': the LP relaxation ({int(keep.sum())} columns) did not finish within the time limit; "
            "raise time_limit=..."
        )
    lam = {n: max(0.0, -d) for n, d in zip(names, lp["row_dual"], strict=True)}
    red_all = np.where(keep, unary, 0.0)
    for n in names:
        red_all = red_all + lam[n] * np.where(keep, weights[n], 0.0)
    red = np.where(keep, red_all, np.inf)
    LB = float(red.min(axis=1).sum() - sum(lam[n] * caps[n] for n in names))
    info["lp_bound"] = LB
    info["lam"] = lam
    rc = red - red.min(axis=1)[:, None]
    scale = float(np.abs(np.where(keep, red_all, 0.0)).max(axis=1).sum() + sum(lam[n] * abs(caps[n]) for n in names))
    tol = _BOUND_RTOL * (scale + 1e-300)
    # An incumbent: the LP's choice in every integral group, the lightest of its choices
    # (in budget shares) in each fractional one, then improving moves that fit.
    support = keep & (lp["x"] > 1e-9)
    share = sum(np.where(keep, weights[n], 0.0) / max(abs(caps[n]), 1.0) for n in names)
    start = np.where(support, -share, -np.inf).argmax(axis=1)
    incumbent: np.ndarray | None = None
    if all(float(weights[n][rows, start].sum()) <= caps[n] for n in names):
        incumbent = _fill_up(start, U, [np.where(keep, weights[n], np.inf) for n in names], [caps[n] for n in names])
    UB = float(U[rows, incumbent].sum()) if incumbent is not None else math.inf
    # An expanding core, as for one budget: a small one first (its optimum is usually the
    # final incumbent), raised until nothing fixed out can beat the answer.
    spread = float(np.where(keep, rc, 0.0).max())
    threshold = _first_threshold(rc, keep, UB - LB)
    while True:
        info["rounds"] += 1
        survive = keep & (rc <= threshold + tol)
        fixed_out = float(np.where(keep & ~survive, rc, np.inf).min(initial=np.inf))
        info["core_groups"] = int((survive.sum(axis=1) >= 2).sum())
        try:
            core = _highs_core(U, weights, caps, survive, incumbent, UB, deadline, info)
        except InfeasibleError:  # no incumbent, and nothing in this core fits
            if bool((survive == keep).all()):
                raise_jointly_infeasible(reduced, "mckp")
            threshold = spread if threshold * 4 >= spread else max(threshold * 4, tol)
            continue
        if core.status != "optimal":
            return _with_fixed_bound(core, LB + fixed_out)
        incumbent, UB = core.choice, float(U[rows, core.choice].sum())
        if LB + fixed_out > UB + tol:  # nothing fixed out is in a better allocation
            return attrs.evolve(core, bound=UB)
        threshold = min(UB - LB, max(4 * threshold, tol))


def _first_threshold(rc: np.ndarray, keep: np.ndarray, gap: float) -> float:
    """The reduced cost below which about :data:`_FIRST_CORE` groups keep a second choice (at most ``gap``)."""
    second = np.sort(np.where(keep, rc, np.inf), axis=1)[:, 1] if rc.shape[1] > 1 else np.zeros(0)
    second = second[np.isfinite(second)]
    if len(second) > _FIRST_CORE:
        return min(gap, float(np.partition(second, _FIRST_CORE - 1)[_FIRST_CORE - 1]))
    return gap if math.isfinite(gap) else float(second.max(initial=0.0))


def _highs_core(
    U: np.ndarray,
    weights: dict[str, np.ndarray],
    caps: dict[str, float],
    survive: np.ndarray,
    incumbent: np.ndarray | None,
    UB: float,
    deadline: float,
    info: dict[str, Any],
) -> _Outcome:
    """HiGHS's MIP over the groups with two or more surviving choices, the rest fixed.

    Raises :class:`InfeasibleError` when no allocation of the surviving choices fits
    and there is no incumbent; with one, an infeasible or worse core leaves it optimal.
    """
    G = U.shape[0]
    rows = np.arange(G)
    n_surv = survive.sum(axis=1)
    core = np.nonzero(n_surv >= 2)[0]
    fixed = np.nonzero(n_surv == 1)[0]
    choice = survive.argmax(axis=1)
    fixed_u = float(U[fixed, choice[fixed]].sum())
    core_caps = {n: caps[n] - float(w[fixed, choice[fixed]].sum()) for n, w in weights.items()}
    if len(core) == 0:
        fits = all(float(w[rows, choice].sum()) <= caps[n] for n, w in weights.items())
        if fits and (incumbent is None or float(U[rows, choice].sum()) < UB):
            return _Outcome(choice, "optimal", float(U[rows, choice].sum()), info)
        if incumbent is None:
            raise InfeasibleError("mckp: no surviving allocation fits")
        return _Outcome(incumbent, "optimal", UB, info)
    res = _highs_mckp(
        U[core],
        {n: w[core] for n, w in weights.items()},
        core_caps,
        survive[core],
        integer=True,
        time_limit=max(1e-3, deadline - time.perf_counter()),
        start=None if incumbent is None or not survive[core, incumbent[core]].all() else incumbent[core],
    )
    info["highs_columns"] = int(survive[core].sum())
    if res["status"] == "infeasible" or res["x"] is None:
        if incumbent is None:
            if res["status"] == "infeasible":
                raise InfeasibleError("mckp: no surviving allocation fits")
            raise MpqError("solver 'mckp' found no feasible allocation within its time limit; raise time_limit=...")
        bound = UB if res["status"] == "infeasible" else min(UB, fixed_u + res["bound"])
        return _Outcome(incumbent, "optimal" if res["status"] == "infeasible" else "time_limit", bound, info)
    choice = choice.copy()
    choice[core] = np.where(survive[core], res["x"], -np.inf).argmax(axis=1)
    value = float(U[rows, choice].sum())
    if incumbent is not None and value > UB:
        choice, value = incumbent, UB
    if res["status"] == "optimal":
        return _Outcome(choice, "optimal", value, info)
    return _Outcome(choice, "time_limit", min(value, fixed_u + res["bound"]), info)


def _highs_mckp(
    U: np.ndarray,
    weights: dict[str, np.ndarray],
    caps: dict[str, float],
    mask: np.ndarray,
    *,
    integer: bool,
    time_limit: float,
    start: np.ndarray | None = None,
) -> dict[str, Any]:
    """The MCKP (or its LP relaxation) over the ``mask`` choices on HiGHS.

    ``start`` (a choice per group) is passed as a MIP start. Returns ``status`` (optimal,
    time_limit, infeasible), ``x`` (``(G, B)`` values or None), ``bound`` (the dual
    bound) and ``row_dual`` (the budget rows', LP only).
    """
    import highspy

    from mpqcore.solvers.highs import _quiet_highs

    G, B = U.shape
    names = list(weights)
    g_idx, j_idx = np.nonzero(mask)
    n = len(g_idx)
    # Each group's least objective and weights are constants of any allocation: taken
    # out, the entries HiGHS sees are differences within a group, then brought near 1 by
    # a power of two (exact in floating point), whatever the problem's units.
    offset = np.where(mask, U, np.inf).min(axis=1)
    cost = U[g_idx, j_idx] - offset[g_idx]
    obj_scale = _power_of_two(cost)
    col = [np.arange(n)]
    row = [g_idx]
    val = [np.ones(n)]
    upper = []
    row_scale = []
    for i, name in enumerate(names):
        lightest = np.where(mask, weights[name], np.inf).min(axis=1)
        coef = weights[name][g_idx, j_idx] - lightest[g_idx]
        row_scale.append(_power_of_two(coef))
        upper.append((caps[name] - float(lightest.sum())) / row_scale[-1])
        nz = coef != 0.0
        col.append(np.nonzero(nz)[0])
        row.append(np.full(int(nz.sum()), G + i))
        val.append(coef[nz] / row_scale[-1])
    c, r, v = (np.concatenate(a) for a in (col, row, val))
    order = np.lexsort((r, c))
    c, r, v = c[order], r[order], v[order].astype(float)
    lp = highspy.HighsLp()
    lp.num_col_ = n
    lp.num_row_ = G + len(names)
    lp.col_cost_ = cost / obj_scale
    lp.col_lower_ = np.zeros(n)
    lp.col_upper_ = np.ones(n)
    lp.row_lower_ = np.concatenate([np.ones(G), np.full(len(names), -highspy.kHighsInf)])
    lp.row_upper_ = np.concatenate([np.ones(G), np.array(upper, dtype=float)])
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.searchsorted(c, np.arange(n + 1)).astype(np.int32)
    lp.a_matrix_.index_ = r.astype(np.int32)
    lp.a_matrix_.value_ = np.asarray(v, dtype=np.float64)
    if integer:
        lp.integrality_ = [highspy.HighsVarType.kInteger] * n
    h = _quiet_highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(time_limit))
    if integer:
        h.setOptionValue("mip_rel_gap", 0.0)
        h.setOptionValue("mip_abs_gap", 0.0)
        h.setOptionValue("mip_feasibility_tolerance", 1e-9)
    h.passModel(lp)
    if start is not None:  # a MIP start (HiGHS checks it): measured 2x faster proofs on two budgets
        sol = highspy.HighsSolution()
        sol.col_value = (start[g_idx] == j_idx).astype(float).tolist()
        h.setSolution(sol)
    h.run()
    status = h.getModelStatus()
    info = h.getInfo()
    hs = highspy.HighsModelStatus
    if status in (hs.kInfeasible, hs.kUnboundedOrInfeasible):
        return {"status": "infeasible", "x": None, "bound": math.inf, "row_dual": None}
    sol = h.getSolution()
    has = info.primal_solution_status == highspy.SolutionStatus.kSolutionStatusFeasible
    x = None
    if has:
        x = np.zeros((G, B))
        x[g_idx, j_idx] = np.asarray(sol.col_value)
    ok = status == hs.kOptimal
    bound = float(info.mip_dual_bound) if integer else float(info.objective_function_value)
    bound = bound * obj_scale + float(offset.sum()) if math.isfinite(bound) else -math.inf
    duals = None
    if not integer:  # in the problem's units: d objective / d limit
        duals = [float(d) * obj_scale / s for d, s in zip(np.asarray(sol.row_dual)[G:], row_scale, strict=True)]
    return {"status": "optimal" if ok else "time_limit", "x": x, "bound": bound, "row_dual": duals}


def _power_of_two(values: np.ndarray) -> float:
    """The power of two nearest the largest ``|value|`` (1 for none or all zero)."""
    biggest = float(np.abs(values).max()) if values.size else 0.0
    return math.ldexp(1.0, math.frexp(biggest)[1] - 1) if biggest > 0 else 1.0
