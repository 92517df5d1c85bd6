"""Sweeping one budget: the objective-vs-cost trade-off curve.

With the ``highs`` solver the model is built once and only the swept budget's row
bound moves between solves (``changeRowBounds``); building is a large share of a
solve at thousands of layers. Other solvers are simply called once per limit.

Limits below the cheapest achievable cost (or jointly infeasible with the other
budgets) are **skipped** by default: a sweep usually starts at an aggressive limit,
and one infeasible end should not lose the rest of the curve. Every returned
allocation carries the limit it was solved for in ``info["limit"]``, so a caller can
see which limits were skipped; pass ``on_infeasible="raise"`` to get the
:class:`~mpqcore.errors.InfeasibleError` instead.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import attrs

from mpqcore.errors import ConfigError, InfeasibleError
from mpqcore.problem import check_budgets_reachable, reduce_problem
from mpqcore.types import Allocation, Problem

__all__ = ["pareto_sweep"]


def pareto_sweep(
    problem: Problem,
    budget_name: str,
    limits: Iterable[float],
    solver: str = "highs",
    *,
    on_infeasible: str = "skip",
    **solver_options,
) -> list[Allocation]:
    """Solve ``problem`` once per limit on budget ``budget_name``, in the order given.

    ``budget_name`` must name a cost table; it replaces (or adds) that budget, the
    problem's other budgets stay. ``solver`` is a registered solver name;
    ``solver_options`` go to its constructor. ``on_infeasible`` is ``"skip"`` (leave
    the limit out of the result) or ``"raise"``.
    """
    if on_infeasible not in ("skip", "raise"):
        raise ConfigError(f"pareto_sweep: on_infeasible must be 'skip' or 'raise', got {on_infeasible!r}")
    if budget_name not in problem.costs:
        raise ConfigError(f"pareto_sweep: budget {budget_name!r} names no cost table; tables: {sorted(problem.costs)}")
    limits = [float(v) for v in limits]
    if solver == "highs":
        return _sweep_highs(problem, budget_name, limits, on_infeasible, solver_options)
    from mpqcore.plugins import get_plugins

    impl = get_plugins().solvers.create(solver, **solver_options)
    out = []
    for limit in limits:
        try:
            alloc = impl.solve(problem.with_budgets({**problem.budgets, budget_name: limit}))
        except InfeasibleError:
            if on_infeasible == "raise":
                raise
            continue
        out.append(attrs.evolve(alloc, info={**alloc.info, "limit": limit}))
    return out


def _sweep_highs(problem, budget_name, limits, on_infeasible, options) -> list[Allocation]:
    from mpqcore.solvers.highs import HighsSolver

    solver = HighsSolver(**options)
    out: list[Allocation] = []
    model = None
    for limit in limits:
        started = time.perf_counter()
        reduced = reduce_problem(problem.with_budgets({**problem.budgets, budget_name: limit}))
        try:
            check_budgets_reachable(reduced)
            if reduced.n_groups == 0:  # nothing to model
                alloc = solver.solve(reduced.problem)
                out.append(attrs.evolve(alloc, info={**alloc.info, "limit": limit}))
                continue
            if model is None:
                model = solver.build(reduced)
                info = {"limit": limit, "reused_model": False}
            else:
                model.reduced = reduced  # same tables, new budgets: only the row bound moves
                model.set_limit(budget_name, limit)
                info = {"limit": limit, "reused_model": True}
            out.append(solver.solve_model(model, started=started, info=info))
        except InfeasibleError:
            if on_infeasible == "raise":
                raise
    return out
