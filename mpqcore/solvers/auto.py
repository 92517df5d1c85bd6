"""The ``auto`` solver: ``mckp`` where it applies, ``pairs-bnb`` for dense pair objectives,
``highs`` everywhere else.

A separable objective (no pair terms) under at most one budget is a multiple-choice
knapsack that :class:`~mpqcore.solvers.mckp.MCKPSolver` proves in well under a second at
tens of thousands of layers, where HiGHS needs minutes (``docs/solvers.md``); pair
objectives that couple at least half of the layer pairs (CLADO's ``pairs="all"``) and
whose dense pair tensor fits :class:`~mpqcore.solvers.pairs_bnb.PairsBnBSolver`'s default
``max_entries`` go to it, with its semidefinite bound (``sdp=True``; it costs nothing where the
LP-bounded search proves the problem within its first share of the time,
``benchmarks/results/pairs.md``: it proves dense problems HiGHS does not); sparse pair objectives and several budgets go to
:class:`~mpqcore.solvers.highs.HighsSolver`. The Allocation's ``solver`` field names the
one that ran.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import attrs

from mpqcore.options import option
from mpqcore.solvers.highs import HighsSolver
from mpqcore.solvers.mckp import MCKPSolver
from mpqcore.solvers.pairs_bnb import PairsBnBSolver, is_dense
from mpqcore.types import Allocation, Problem

__all__ = ["AutoSolver", "pick_solver"]


def pick_solver(problem: Problem) -> str:
    """``"mckp"`` for a problem without pair terms and with at most one budget, ``"pairs-bnb"`` for
    dense pair terms (:func:`~mpqcore.solvers.pairs_bnb.is_dense`), else ``"highs"``."""
    if problem.objective.pairs:
        return "pairs-bnb" if is_dense(problem) else "highs"
    if len(problem.budgets) > 1:
        return "highs"
    return "mckp"


@attrs.frozen
class AutoSolver(HighsSolver):
    """``mckp`` for separable objectives under one budget, ``pairs-bnb`` for dense pair
    objectives, ``highs`` for the rest (:func:`pick_solver`).

    Takes ``highs``' options (inherited; ``time_limit`` goes to every solver) and
    ``mckp``'s ``max_states``. Capability: :meth:`budget_resolver`, HiGHS's where it
    picks HiGHS.
    """

    name = "auto"

    max_states: int = option(int, default=1_000_000, minimum=1, help="mckp: partial allocations its core DP keeps")

    def choose(self, problem: Problem) -> MCKPSolver | PairsBnBSolver | HighsSolver:
        """The solver :meth:`solve` hands ``problem`` to, built with these options."""
        picked = pick_solver(problem)
        if picked == "mckp":
            return MCKPSolver(time_limit=self.time_limit, max_states=self.max_states)
        if picked == "pairs-bnb":  # with its semidefinite bound (ADMM, numpy only)
            return PairsBnBSolver(time_limit=self.time_limit, sdp=True)
        return HighsSolver(**{f.name: getattr(self, f.name) for f in attrs.fields(HighsSolver)})

    def solve(self, problem: Problem) -> Allocation:
        return self.choose(problem).solve(problem)

    def budget_resolver(self, problem: Problem) -> Callable[[Mapping[str, float]], Allocation]:
        """``resolve(budgets)``: each budget set solved by the solver it picks; HiGHS keeps one model."""
        highs_resolve: Callable[[Mapping[str, float]], Allocation] | None = None

        def resolve(budgets: Mapping[str, float]) -> Allocation:
            nonlocal highs_resolve
            chosen = self.choose(problem.with_budgets(budgets))
            if isinstance(chosen, HighsSolver):
                if highs_resolve is None:
                    highs_resolve = chosen.budget_resolver(problem)
                return highs_resolve(budgets)
            return chosen.solve(problem.with_budgets(budgets))

        return resolve
