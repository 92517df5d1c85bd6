"""Sweeping one budget: the objective-vs-cost trade-off curve.

A solver that can re-solve one problem under new budgets cheaper than from scratch
declares it with a ``budget_resolver(problem)`` method (:class:`BudgetResolving`):
it returns a function ``resolve(budgets) -> Allocation``, and the sweep calls that once
per limit. The built-in ``highs`` solver has one (its model is built once and only the
swept budget's row bound moves between solves; building is a large share of a solve at
thousands of layers). Any other solver is simply called once per limit.

Limits below the cheapest achievable cost (or jointly infeasible with the other
budgets) are **skipped** by default: a sweep usually starts at an aggressive limit,
and one infeasible end should not lose the rest of the curve. Every returned
allocation carries the limit it was solved for in ``info["limit"]``, so a caller can
see which limits were skipped; pass ``on_infeasible="raise"`` to get the
:class:`~mpqcore.errors.InfeasibleError` instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

import attrs

from mpqcore.errors import ConfigError, InfeasibleError
from mpqcore.plugins import get_plugins
from mpqcore.problem import check_allocation
from mpqcore.protocols import Solver
from mpqcore.types import Allocation, Problem

__all__ = ["BudgetResolving", "pareto_sweep", "resolver_for"]


@runtime_checkable
class BudgetResolving(Protocol):
    """The optional capability of a solver that re-solves one problem under new budgets.

    ``budget_resolver(problem)`` returns ``resolve(budgets)``, which must give what
    ``solve(problem.with_budgets(budgets))`` gives (raising
    :class:`~mpqcore.errors.InfeasibleError` alike) while reusing work between calls.
    """

    def budget_resolver(self, problem: Problem) -> Callable[[Mapping[str, float]], Allocation]: ...


def resolver_for(solver: Solver, problem: Problem) -> Callable[[Mapping[str, float]], Allocation]:
    """``resolve(budgets)`` for ``problem``: the solver's own when it declares one, else a fresh solve each time."""
    own = getattr(solver, "budget_resolver", None)
    if callable(own):
        return own(problem)
    return lambda budgets: solver.solve(problem.with_budgets(budgets))


def pareto_sweep(
    problem: Problem,
    budget_name: str,
    limits: Iterable[float],
    solver: str | Solver = "auto",
    *,
    on_infeasible: str = "skip",
    **solver_options: Any,
) -> list[Allocation]:
    """Solve ``problem`` once per limit on budget ``budget_name``, in the order given.

    ``budget_name`` must name a cost table; it replaces (or adds) that budget, the
    problem's other budgets stay. ``solver`` is a registered solver name (built with
    ``solver_options``) or a solver instance. ``on_infeasible`` is ``"skip"`` (leave the
    limit out of the result) or ``"raise"``.
    """
    if on_infeasible not in ("skip", "raise"):
        raise ConfigError(f"pareto_sweep: on_infeasible must be 'skip' or 'raise', got {on_infeasible!r}")
    if budget_name not in problem.costs:
        raise ConfigError(f"pareto_sweep: budget {budget_name!r} names no cost table; tables: {sorted(problem.costs)}")
    registry = get_plugins().solvers
    if isinstance(solver, str):
        impl: Solver = registry.create(solver, **solver_options)
        name, where, plugin = solver, registry.get(solver).where, registry.get(solver).plugin
    elif solver_options:
        raise ConfigError(
            f"pareto_sweep: options {sorted(solver_options)} go with a solver name; this solver is already built"
        )
    else:
        impl, name = solver, registry.name_of(solver)
        if name in registry and registry.get(name).factory is type(solver):
            where, plugin = registry.get(name).where, registry.get(name).plugin
        else:
            where, plugin = f"the {type(solver).__module__}.{type(solver).__qualname__} given", None
    resolve = resolver_for(impl, problem)
    out = []
    for limit in (float(v) for v in limits):
        budgets = {**problem.budgets, budget_name: limit}
        try:
            alloc = resolve(budgets)
        except InfeasibleError:
            if on_infeasible == "raise":
                raise
            continue
        # every answer checked before it is used, as mpqcore.solve checks one
        alloc = check_allocation(problem.with_budgets(budgets), alloc, solver=name, where=where, plugin=plugin)
        out.append(attrs.evolve(alloc, info={**alloc.info, "limit": limit}))
    return out
