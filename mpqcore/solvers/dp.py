"""The ``dp`` solver: exact dynamic programming over one budget's capacity.

The classic pseudo-polynomial multiple-choice knapsack recursion: ``f_g[s]`` is the
least objective of the first ``g`` groups using at most ``s`` grid units of the
budget. Its table has ``groups x states`` cells, so it needs costs on an integer grid
and a capacity that is not too many grid steps: fine for hundreds of layers on a
coarse grid, impractical at thousands on a fine one (measured in ``docs/solvers.md``).

Each group's cheapest allowed cost is subtracted first (from its weights and from the
capacity): that leaves every weight >= 0 and the table only as wide as the budget's
slack above the cheapest allocation.
"""

from __future__ import annotations

import math
import time
from functools import reduce

import attrs
import numpy as np

from mpqcore.constraints import budget_slack
from mpqcore.errors import ConfigError, InfeasibleError, ProblemTooLargeError
from mpqcore.options import option
from mpqcore.solvers._common import argmin_choice, make_allocation, prepare, relative_gap
from mpqcore.types import Allocation, Problem

__all__ = ["DPSolver"]

#: Largest integer a float64 holds exactly; integer costs above it are not "on a grid".
_EXACT_INT = 2**53

#: How close (relatively) a cost in grid steps must be to an integer to count as one: a
#: rounding allowance on the grid, not the budget tolerance (that is ``budget_slack``).
_GRID_RTOL = 1e-9


def _is_integral(arr: np.ndarray) -> bool:
    return bool(np.all(np.abs(arr - np.round(arr)) <= _GRID_RTOL * np.maximum(1.0, np.abs(arr))))


@attrs.frozen
class DPSolver:
    """Exact dynamic programming for one budget with costs on an integer grid.

    ``grid`` is the budget cost of one step (default: the gcd of the integer costs).
    Costs not on the given grid are rounded up, which keeps the answer within budget
    but may lose optimality: the status is then ``heuristic`` with a proven bound and
    gap from the rounded-down relaxation. ``max_cells`` caps the groups x states table.
    """

    name = "dp"

    grid: float | None = option(float, default=None, greater_than=0.0, optional=True, help="budget cost of one step")
    max_cells: int = option(int, default=50_000_000, minimum=1, help="largest groups x states table")

    def solve(self, problem: Problem) -> Allocation:
        started = time.perf_counter()
        if problem.objective.pairs:
            raise ConfigError(
                f"solver 'dp' handles separable objectives only, but this one has {len(problem.objective.pairs)} "
                "pair terms; use the 'highs' solver (or 'brute-force' for tiny problems), or drop the pairs "
                "with Objective.without_pairs()"
            )
        if len(problem.budgets) > 1:
            raise ConfigError(
                f"solver 'dp' handles exactly one budget, got {len(problem.budgets)}: {sorted(problem.budgets)}; "
                "use the 'highs' solver for several budgets"
            )
        reduced = prepare(problem)
        if not problem.budgets or reduced.n_groups == 0:
            return make_allocation(reduced, argmin_choice(reduced), solver=self.name, started=started)
        ((name, limit),) = problem.budgets.items()
        G = reduced.n_groups
        allowed = reduced.allowed
        cost = reduced.costs[name]
        base = np.where(allowed, cost, np.inf).min(axis=1)  # each group's cheapest allowed cost
        extra = np.where(allowed, cost - base[:, None], 0.0)
        grid = self.grid if self.grid is not None else self._default_grid(name, cost, extra, allowed)

        scaled = extra / grid
        if np.any(scaled[allowed] >= _EXACT_INT):  # beyond int64 counting (and exact floats)
            raise ProblemTooLargeError(
                f"solver 'dp': on grid {grid:g} the costs of budget {name!r} span up to {float(scaled.max()):.3g} "
                f"steps, beyond 2**53; pass a coarser grid (grid={float(extra.max()) / 1e6:.3g} gives a million "
                "steps), or use the 'highs' solver"
            )
        exact = _is_integral(scaled[allowed])
        up = np.where(allowed, np.ceil(scaled - _GRID_RTOL * np.maximum(1.0, scaled)), 0).astype(np.int64)
        # The budget's own slack widens the capacity, as it widens every solver's limit.
        capacity = math.floor((limit + budget_slack(limit) - base.sum()) / grid)
        if capacity < 0:  # only after rounding up costs: prepare() proved the budget reachable
            raise InfeasibleError(
                f"solver 'dp': on grid {grid:g} the budget {name!r} <= {limit:g} is below the cheapest "
                f"allocation; use a finer grid or the 'highs' solver",
                cheapest={name: float(base.sum())},
                budgets={name: limit},
            )
        # A capacity above every group's largest weight never binds: cap the table there.
        states = min(capacity, int(up.max(axis=1).sum())) + 1
        cells = G * states
        if cells > self.max_cells:
            need = grid * math.ceil(cells / self.max_cells)
            raise ProblemTooLargeError(
                f"solver 'dp': the table would have {G} groups x {states} states = {cells:,} cells "
                f"(> max_cells={self.max_cells:,}) for budget {name!r} on grid {grid:g}; pass a coarser "
                f"grid (grid={need:g} fits), raise max_cells, or use the 'highs' solver"
            )
        table = np.zeros((G, states), dtype=np.int8)
        _forward(reduced.unary, allowed, up, states, table)
        choice = _backtrack(table, up)
        info = {"grid": grid, "states": states, "cells": cells, "rounded": not exact}
        if exact:
            return make_allocation(reduced, choice, solver=self.name, started=started, info=info)
        # Rounded-down weights relax the budget: their optimum is a proven lower bound.
        down = np.where(allowed, np.floor(scaled + _GRID_RTOL * np.maximum(1.0, scaled)), 0).astype(np.int64)
        bound = _forward(reduced.unary, allowed, down, min(capacity, int(down.max(axis=1).sum())) + 1)
        objective = reduced.objective_of(choice)
        return make_allocation(
            reduced,
            choice,
            solver=self.name,
            started=started,
            status="heuristic",
            gap=relative_gap(objective, bound),
            bound=min(bound, objective),
            info=info,
        )

    def _default_grid(self, name: str, cost: np.ndarray, extra: np.ndarray, allowed: np.ndarray) -> float:
        used = cost[allowed]
        if not np.all(np.abs(used) < _EXACT_INT):
            raise ConfigError(
                f"solver 'dp': cost table {name!r} has costs up to {float(np.abs(used).max()):.3g}, beyond 2**53 "
                "where floats stop being exact integers, so it has no default grid; pass grid=STEP (costs are "
                "rounded up to multiples of STEP), or use the 'highs' solver"
            )
        if not _is_integral(used):
            off = used[np.abs(used - np.round(used)) > _GRID_RTOL * np.maximum(1.0, np.abs(used))]
            raise ConfigError(
                f"solver 'dp': cost table {name!r} has non-integer costs (e.g. {off[:3].tolist()}); "
                "pass grid=STEP to put them on a grid of STEP units (costs are rounded up), or use the 'highs' solver"
            )
        steps = [int(v) for v in np.unique(np.round(extra[allowed]).astype(np.int64)) if v != 0]
        return float(reduce(math.gcd, steps, 0) or 1)


def _forward(
    unary: np.ndarray, allowed: np.ndarray, weights: np.ndarray, states: int, table: np.ndarray | None = None
) -> float:
    """The recursion over groups; the least objective within the capacity ``states - 1``.

    With ``table`` (``groups x states``, int8) also records each cell's best bit index
    for :func:`_backtrack`. Strict ``<`` keeps the lowest bit index on ties.
    """
    G = allowed.shape[0]
    f = np.zeros(states)  # no groups yet: objective 0 at any capacity
    for g in range(G):
        new = np.full(states, np.inf)
        best = np.zeros(states, dtype=np.int8)
        for j in np.nonzero(allowed[g])[0]:
            w = int(weights[g, j])
            if w >= states:
                continue
            cand = f[: states - w] + unary[g, j]
            better = cand < new[w:]
            new[w:][better] = cand[better]
            best[w:][better] = j
        f = new
        if table is not None:
            table[g] = best
    return float(f[-1])


def _backtrack(table: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The choice per group that :func:`_forward` found best at full capacity."""
    G, states = table.shape
    choice = np.zeros(G, dtype=int)
    s = states - 1
    for g in range(G - 1, -1, -1):
        choice[g] = table[g, s]
        s -= int(weights[g, choice[g]])
    return choice
