"""Pieces every built-in solver shares: preparing the reduced problem, the trivial
cases, the budget check (with :mod:`mpqcore.constraints`' tolerance, the one the checker
uses), and the Allocation.

Kept private: the public surface is the solver classes and :mod:`.pareto`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from mpqcore.constraints import BUDGET_RTOL, budget_slack, within_budget
from mpqcore.problem import ReducedProblem, check_budgets_reachable, check_magnitudes, reduce_problem
from mpqcore.types import Allocation, Problem

__all__ = [
    "BUDGET_RTOL",
    "argmin_choice",
    "budget_slack",
    "effective_terms",
    "local_search",
    "make_allocation",
    "over_budget",
    "prepare",
    "relative_gap",
]


def prepare(problem: Problem) -> ReducedProblem:
    """Refuse sums beyond the float range, merge ties, apply pins and fail early (with the
    cheapest costs) on unreachable budgets."""
    check_magnitudes(problem)
    reduced = reduce_problem(problem)
    check_budgets_reachable(reduced)
    return reduced


def over_budget(reduced: ReducedProblem, costs: Mapping[str, float]) -> dict[str, float]:
    """``{budget: overshoot above the limit}`` for every budget the costs do not meet."""
    return {
        name: costs[name] - limit
        for name, limit in reduced.problem.budgets.items()
        if not within_budget(costs[name], limit)
    }


def argmin_choice(reduced: ReducedProblem, unary: np.ndarray | None = None) -> np.ndarray:
    """Per group the cheapest allowed bit index (first on ties): optimal with no budget and no pairs."""
    unary = reduced.unary if unary is None else unary
    masked = np.where(reduced.allowed, unary, np.inf)
    return masked.argmin(axis=1) if reduced.n_groups else np.zeros(0, dtype=int)


def relative_gap(objective: float, bound: float | None) -> float:
    """``(objective - bound) / |objective|``, the convention HiGHS reports; inf when undefined."""
    if bound is None or not math.isfinite(bound):
        return math.inf
    diff = max(0.0, objective - bound)
    if diff == 0.0:
        return 0.0
    scale = abs(objective)
    return diff / scale if scale > 0 else math.inf


def make_allocation(
    reduced: ReducedProblem,
    choice,
    *,
    solver: str,
    started: float,
    status: str = "optimal",
    gap: float = 0.0,
    bound: float | None = None,
    info: dict[str, Any] | None = None,
) -> Allocation:
    """The Allocation of one bit index per group; the objective is re-evaluated exactly
    (pair terms included) instead of trusting the solver's floating-point value."""
    choice = np.asarray(choice, dtype=int)
    objective = reduced.objective_of(choice) if reduced.n_groups else 0.0
    if status == "optimal" and bound is None:
        bound = objective
    return Allocation(
        bits=reduced.expand(choice),
        objective=objective,
        costs=reduced.costs_of(choice) if reduced.n_groups else dict.fromkeys(reduced.costs, 0.0),
        status=status,
        gap=gap,
        bound=bound,
        solver=solver,
        solve_time=time.perf_counter() - started,
        info=dict(info or {}),
    )


def effective_terms(reduced: ReducedProblem) -> tuple[np.ndarray, dict[tuple[int, int, int, int], float]]:
    """Unary terms and pair terms with what pins make linear folded in.

    A pair term on a disallowed choice never fires, and one whose partner group is
    pinned is a unary term of the other group. Both shrink the MIP without changing the
    objective of any allowed allocation.
    """
    unary = reduced.unary.copy()
    single = reduced.allowed.sum(axis=1) == 1
    pairs: dict[tuple[int, int, int, int], float] = {}
    for (g, j, h, k), v in reduced.pairs.items():
        if not (reduced.allowed[g, j] and reduced.allowed[h, k]):
            continue
        if single[g]:
            unary[h, k] += v
        elif single[h]:
            unary[g, j] += v
        else:
            pairs[(g, j, h, k)] = v
    return unary, pairs


def local_search(reduced: ReducedProblem, choice: np.ndarray, *, max_moves: int = 10_000) -> np.ndarray:
    """Steepest-descent 1-swaps (one group changes bits) on the full objective, budgets kept.

    Cheap (each move costs O(pair terms + groups x bits)) and a good MIP start for pair
    objectives, where the diagonal-only optimum can be far off; no optimality claim.
    """
    G = reduced.n_groups
    choice = np.array(choice, dtype=int)
    if G == 0:
        return choice
    # Both directions of every pair term, so C[g, j] = sum of terms (g, j) shares with
    # the current choices of the other groups.
    keys = np.array(list(reduced.pairs), dtype=int).reshape(-1, 4)
    vals = np.array(list(reduced.pairs.values()), dtype=float)
    src_g = np.concatenate([keys[:, 0], keys[:, 2]])
    src_j = np.concatenate([keys[:, 1], keys[:, 3]])
    dst_g = np.concatenate([keys[:, 2], keys[:, 0]])
    dst_j = np.concatenate([keys[:, 3], keys[:, 1]])
    both = np.concatenate([vals, vals])
    rows = np.arange(G)
    budgets = dict(reduced.problem.budgets)
    tables = {n: reduced.costs[n] for n in budgets}
    for _ in range(max_moves):
        active = choice[dst_g] == dst_j
        C = np.zeros_like(reduced.unary)
        np.add.at(C, (src_g[active], src_j[active]), both[active])
        local = reduced.unary + C
        delta = local - local[rows, choice][:, None]
        ok = reduced.allowed.copy()
        for name, limit in budgets.items():
            table = tables[name]
            used = table[rows, choice].sum()
            ok &= within_budget(used + (table - table[rows, choice][:, None]), limit)
        delta = np.where(ok, delta, np.inf)
        g, j = np.unravel_index(np.argmin(delta), delta.shape)
        if not delta[g, j] < -1e-12 * max(1.0, abs(local[g, choice[g]])):
            break
        choice[g] = j
    return choice
