"""The ``brute-force`` solver: try every allowed allocation.

The reference the other solvers are tested against: no modelling, no tolerances but
mpq's own budget slack, pair terms and any number of budgets. Exponential, so it
refuses problems with more than ``max_combinations`` allocations.
"""

from __future__ import annotations

import math
import time

import attrs
import numpy as np

from mpqcore.constraints import within_budget
from mpqcore.errors import ProblemTooLargeError
from mpqcore.options import option
from mpqcore.problem import raise_jointly_infeasible
from mpqcore.solvers._common import make_allocation, prepare
from mpqcore.types import Allocation, Problem

__all__ = ["BruteForceSolver"]

#: Allocations scored per numpy batch: bounds memory at ~batch x groups ints.
_BATCH = 65_536


@attrs.frozen
class BruteForceSolver:
    """Exhaustive search over every allowed allocation (tiny problems, tests).

    Handles pair terms and several budgets. Among equal objectives the first
    allocation in lexicographic order of bit indices (layer groups in order) wins.
    """

    name = "brute-force"

    max_combinations: int = option(int, default=200_000, minimum=1, help="largest number of allocations it tries")

    def solve(self, problem: Problem) -> Allocation:
        started = time.perf_counter()
        reduced = prepare(problem)
        options = [np.nonzero(row)[0] for row in reduced.allowed]
        total = math.prod(len(o) for o in options)  # Python int: no overflow
        if total > self.max_combinations:
            raise ProblemTooLargeError(
                f"solver 'brute-force': {total:,} allocations to try ({reduced.n_groups} layer groups) "
                f"exceeds max_combinations={self.max_combinations:,}; use the 'highs' solver, or pin or tie layers"
            )
        G = reduced.n_groups
        pairs = list(reduced.pairs.items())
        budgets = list(reduced.problem.budgets.items())
        best_value, best_choice = math.inf, None
        # Mixed-radix counting in lexicographic order (last group fastest, like itertools.product).
        radix = np.array([len(o) for o in options], dtype=np.int64)
        place = np.concatenate([np.cumprod(radix[::-1])[::-1][1:], [1]]).astype(np.int64) if G else radix
        for lo in range(0, total, _BATCH):
            idx = np.arange(lo, min(lo + _BATCH, total), dtype=np.int64)
            digits = (idx[:, None] // place[None, :]) % radix[None, :]
            choice = np.empty_like(digits)
            for g in range(G):
                choice[:, g] = options[g][digits[:, g]]
            rows = np.arange(G)
            feasible = np.ones(len(idx), dtype=bool)
            for name, limit in budgets:
                feasible &= within_budget(reduced.costs[name][rows, choice].sum(axis=1), limit)
            value = reduced.unary[rows, choice].sum(axis=1)
            for (g, j, h, k), v in pairs:
                value += v * ((choice[:, g] == j) & (choice[:, h] == k))
            value = np.where(feasible, value, np.inf)
            i = int(np.argmin(value))  # first minimum: lexicographic tie-break
            if value[i] < best_value:
                best_value, best_choice = float(value[i]), choice[i]
        if best_choice is None:
            raise_jointly_infeasible(reduced, self.name)
        return make_allocation(reduced, best_choice, solver=self.name, started=started, info={"combinations": total})
