"""The ``highs`` solver: the allocation as a mixed-integer program on HiGHS.

Without pair terms the problem is a multiple-choice knapsack: one binary ``x[g, j]``
per group and bit-width, one one-hot row per group, one row per budget. Pair terms
``v * x[g, j] * x[h, k]`` are linearized with continuous ``y`` variables, either

* ``onehot`` (the reformulation-linearization technique, RLT): for every coupled pair
  of groups a full ``y[j, k]`` block with ``sum_k y[j, k] = x[g, j]`` and
  ``sum_j y[j, k] = x[h, k]``. Its LP relaxation is far tighter (``docs/solvers.md``:
  52 dense layers proven 7-14x faster than McCormick, measured), or
* ``generic`` (McCormick): one ``y`` per nonzero term with ``y <= x_i``, ``y <= x_j``,
  ``y >= x_i + x_j - 1``, ``y >= 0``; fewer columns when pair terms are sparse, three
  rows per term and a weak bound (below zero at the root on dense problems).

The model is built as one ``HighsLp`` in row-wise sparse form and passed whole:
adding variables one by one from Python is the slow part at thousands of layers.

A budget row's upper bound is the limit plus :func:`mpqcore.constraints.budget_slack`,
the tolerance the checker allows, so HiGHS and the other solvers accept the same
allocations. :meth:`HighsSolver.budget_resolver` keeps one built model across budget
changes (the capability :func:`mpqcore.solvers.pareto.pareto_sweep` looks for).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import numpy as np

from mpqcore.constraints import budget_slack
from mpqcore.errors import ConfigError, MpqError
from mpqcore.options import option
from mpqcore.problem import (
    ReducedProblem,
    check_budgets_reachable,
    check_magnitudes,
    raise_jointly_infeasible,
    reduce_problem,
)
from mpqcore.solvers._common import (
    argmin_choice,
    effective_terms,
    local_search,
    make_allocation,
    over_budget,
    prepare,
    relative_gap,
)
from mpqcore.types import Allocation, Problem

__all__ = ["LINEARIZATIONS", "HighsModel", "HighsSolver"]

LINEARIZATIONS = ("onehot", "generic")

#: How many times a solution that overshoots a budget by more than mpq's tolerance
#: (HiGHS's row tolerance is absolute) is re-solved with that row tightened.
_TIGHTEN_RETRIES = 3


def _quiet_highs() -> Any:
    """``highspy.Highs()`` without the banner HiGHS >= 1.16 prints to stdout on its first
    construction (before any option can turn output off): ``mpq solve`` prints JSON on
    stdout, and a banner there breaks every consumer. The C library writes to file
    descriptor 1, so that descriptor is pointed at /dev/null for the construction."""
    import highspy

    fd = 1  # the C library's stdout, whatever Python's sys.stdout is now
    try:
        sys.stdout.flush()
        saved = os.dup(fd)
    except (OSError, ValueError):  # no descriptor 1 to borrow
        return highspy.Highs()
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
            return highspy.Highs()
    finally:
        os.dup2(saved, fd)
        os.close(saved)


class HighsModel:
    """One built HiGHS model of a reduced problem, reusable across budget changes.

    :meth:`rebudget` moves the budget rows' upper bounds; the next :meth:`optimize`
    solves under them (what :meth:`HighsSolver.budget_resolver` does between solves).
    """

    def __init__(
        self,
        reduced: ReducedProblem,
        *,
        linearization: str = "onehot",
        mip_rel_gap: float = 0.0,
        threads: int | None = None,
        use_pairs: bool = True,
    ):
        import highspy  # imported here: highspy and ortools cannot share a process

        self._highspy = highspy
        self.reduced = reduced
        self.linearization = linearization
        G, B = reduced.n_groups, reduced.n_bits
        self.G, self.B = G, B
        unary, pairs = effective_terms(reduced)
        if not use_pairs:
            pairs = {}
        self.pairs = pairs
        self.budget_names = list(reduced.problem.budgets)
        self.budget_rows = {name: G + i for i, name in enumerate(self.budget_names)}
        self.limits = dict(reduced.problem.budgets)

        allowed = reduced.allowed
        rows: list[np.ndarray] = []
        cols: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        row_lo: list[np.ndarray] = []
        row_hi: list[np.ndarray] = []
        inf = highspy.kHighsInf

        # x[g, j] at column g*B + j; a disallowed choice is fixed to 0 by its bound.
        n_x = G * B
        col_cost = [unary.ravel()]
        col_hi = [allowed.ravel().astype(float)]
        g_idx, j_idx = np.nonzero(allowed)
        x_col = g_idx * B + j_idx
        rows.append(g_idx)
        cols.append(x_col)
        vals.append(np.ones(len(x_col)))
        row_lo.append(np.ones(G))
        row_hi.append(np.ones(G))
        #: Each budget row is divided by its own power of two (1 unless its entries need it).
        self.row_scale: dict[str, float] = {}
        for name in self.budget_names:
            coef = reduced.costs[name][g_idx, j_idx]
            keep = coef != 0.0
            self.row_scale[name] = _scale(coef)
            rows.append(np.full(int(keep.sum()), self.budget_rows[name]))
            cols.append(x_col[keep])
            vals.append(coef[keep] / self.row_scale[name])
        row_lo.append(np.full(len(self.budget_names), -inf))
        row_hi.append(np.array([self._bound(n, _row_bound(self.limits[n])) for n in self.budget_names], dtype=float))
        n_row = G + len(self.budget_names)
        n_col = n_x

        # y columns; self._y lists (column, g, j, h, k) so a start can be filled in.
        y_col, y_g, y_j, y_h, y_k = [], [], [], [], []
        if pairs and linearization == "onehot":
            coupled: dict[tuple[int, int], dict[tuple[int, int], float]] = {}
            for (g, j, h, k), v in pairs.items():
                coupled.setdefault((g, h), {})[(j, k)] = v
            for (g, h), terms in sorted(coupled.items()):
                Aj, Ak = np.nonzero(allowed[g])[0], np.nonzero(allowed[h])[0]
                nj, nk = len(Aj), len(Ak)
                block = n_col + np.arange(nj * nk).reshape(nj, nk)
                cost = np.zeros((nj, nk))
                pj, pk = {int(b): a for a, b in enumerate(Aj)}, {int(b): a for a, b in enumerate(Ak)}
                for (j, k), v in terms.items():
                    cost[pj[j], pk[k]] = v
                col_cost.append(cost.ravel())
                col_hi.append(np.ones(nj * nk))
                # sum_k y[j, k] - x[g, j] = 0 for each j, then sum_j y[j, k] - x[h, k] = 0.
                r_j = n_row + np.repeat(np.arange(nj), nk)
                r_k = n_row + nj + np.tile(np.arange(nk), nj)
                rows += [r_j, n_row + np.arange(nj), r_k, n_row + nj + np.arange(nk)]
                cols += [block.ravel(), g * B + Aj, block.ravel(), h * B + Ak]
                vals += [np.ones(nj * nk), -np.ones(nj), np.ones(nj * nk), -np.ones(nk)]
                row_lo.append(np.zeros(nj + nk))
                row_hi.append(np.zeros(nj + nk))
                jj, kk = np.meshgrid(Aj, Ak, indexing="ij")
                y_col.append(block.ravel())
                y_g.append(np.full(nj * nk, g))
                y_j.append(jj.ravel())
                y_h.append(np.full(nj * nk, h))
                y_k.append(kk.ravel())
                n_row += nj + nk
                n_col += nj * nk
        elif pairs:  # generic McCormick, one y per term
            keys = np.array(list(pairs), dtype=int)
            n = len(keys)
            yc = n_col + np.arange(n)
            xi = keys[:, 0] * B + keys[:, 1]
            xj = keys[:, 2] * B + keys[:, 3]
            col_cost.append(np.array(list(pairs.values()), dtype=float))
            col_hi.append(np.ones(n))
            r = n_row + np.arange(n)
            # y - x_i <= 0; y - x_j <= 0; y - x_i - x_j >= -1 (y >= 0 is its bound).
            rows += [r, r, r + n, r + n, r + 2 * n, r + 2 * n, r + 2 * n]
            cols += [yc, xi, yc, xj, yc, xi, xj]
            vals += [np.ones(n), -np.ones(n), np.ones(n), -np.ones(n), np.ones(n), -np.ones(n), -np.ones(n)]
            row_lo += [np.full(2 * n, -inf), np.full(n, -1.0)]
            row_hi += [np.zeros(2 * n), np.full(n, inf)]
            y_col.append(yc)
            y_g.append(keys[:, 0])
            y_j.append(keys[:, 1])
            y_h.append(keys[:, 2])
            y_k.append(keys[:, 3])
            n_row += 3 * n
            n_col += n
        self._y = tuple(np.concatenate(a) if a else np.zeros(0, dtype=int) for a in (y_col, y_g, y_j, y_h, y_k))

        r = np.concatenate(rows).astype(np.int64)
        c = np.concatenate(cols).astype(np.int64)
        values = np.concatenate(vals).astype(float)
        order = np.lexsort((c, r))
        r, c, values = r[order], c[order], values[order]
        lp = highspy.HighsLp()
        lp.num_col_ = n_col
        lp.num_row_ = n_row
        objective = np.concatenate(col_cost)
        #: The objective is divided by it before HiGHS sees it (1 unless its entries need it).
        self.obj_scale = _scale(objective)
        lp.col_cost_ = objective / self.obj_scale
        lp.col_lower_ = np.zeros(n_col)
        lp.col_upper_ = np.concatenate(col_hi)
        lp.row_lower_ = np.concatenate(row_lo).astype(float)
        lp.row_upper_ = np.concatenate(row_hi).astype(float)
        lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
        lp.a_matrix_.start_ = np.searchsorted(r, np.arange(n_row + 1)).astype(np.int32)
        lp.a_matrix_.index_ = c.astype(np.int32)
        lp.a_matrix_.value_ = values
        lp.integrality_ = [highspy.HighsVarType.kInteger] * n_x + [highspy.HighsVarType.kContinuous] * (n_col - n_x)
        self.n_col, self.n_row = n_col, n_row

        h = _quiet_highs()
        h.setOptionValue("output_flag", False)
        if threads is not None:
            # Tree search runs in parallel only with both. HiGHS sizes one global thread
            # pool at the first solve in the process and refuses to run (status "Not Set")
            # when a later model asks for another size: reset the pool first.
            highspy.Highs.resetGlobalScheduler(True)
            h.setOptionValue("threads", int(threads))
            h.setOptionValue("parallel", "on")
        h.setOptionValue("mip_rel_gap", float(mip_rel_gap))
        if mip_rel_gap == 0:
            h.setOptionValue("mip_abs_gap", 0.0)
        # Budget rows are checked at mpq's own tolerance (mpqcore.constraints.BUDGET_RTOL);
        # a looser MIP feasibility tolerance could accept an allocation the checker refuses.
        h.setOptionValue("mip_feasibility_tolerance", 1e-9)
        h.passModel(lp)
        self.highs = h

    def set_limit(self, name: str, limit: float) -> None:
        """Move budget ``name``'s row bound; the next :meth:`optimize` uses it."""
        self.limits[name] = float(limit)
        self._set_row(name, _row_bound(limit))

    def _bound(self, name: str, value: float) -> float:
        """A budget row's bound in HiGHS's units (the row is scaled by ``row_scale[name]``)."""
        return value / self.row_scale[name]

    def _set_row(self, name: str, value: float) -> None:
        """Budget ``name``'s row upper bound at ``value`` (in the cost table's units)."""
        self.highs.changeRowBounds(self.budget_rows[name], -self._highspy.kHighsInf, self._bound(name, value))

    def rebudget(self, reduced: ReducedProblem) -> None:
        """Solve ``reduced`` next: the problem this model was built for, under its own budgets.

        Only the limits may differ (the same budget names, tables, pins and ties);
        anything else needs a new model.
        """
        if list(reduced.problem.budgets) != self.budget_names or reduced.n_groups != self.G:
            raise ConfigError(
                f"highs: a built model bounds budgets {self.budget_names}; "
                f"cannot re-solve it under {list(reduced.problem.budgets)}"
            )
        for name, limit in reduced.problem.budgets.items():
            self.limits[name] = float(limit)
            self._set_row(name, _row_bound(limit))
        self.reduced = reduced

    def start_vector(self, choice: np.ndarray) -> list[float]:
        """Full column values (x and y) of an allocation, for a MIP start."""
        values = np.zeros(self.n_col)
        values[np.arange(self.G) * self.B + choice] = 1.0
        col, g, j, h, k = self._y
        values[col] = ((choice[g] == j) & (choice[h] == k)).astype(float)
        return values.tolist()

    def optimize(self, time_limit: float, start: np.ndarray | None = None) -> dict[str, Any]:
        """Solve; returns ``{choice, status, bound, gap}`` or raises.

        An allocation that overshoots a budget beyond mpq's relative tolerance (HiGHS
        checks rows with an absolute one) is re-solved with that row tightened by the
        overshoot, so what comes back always passes ``allocation_violations``.
        """
        hs, h = self._highspy, self.highs
        deadline = time.perf_counter() + time_limit
        tightened: dict[str, float] = {}
        try:
            for _attempt in range(_TIGHTEN_RETRIES + 1):
                h.setOptionValue("time_limit", max(1e-3, deadline - time.perf_counter()))
                if start is not None:
                    sol = hs.HighsSolution()
                    sol.col_value = self.start_vector(start)
                    h.setSolution(sol)
                h.run()
                status = h.getModelStatus()
                info = h.getInfo()
                if status in (hs.HighsModelStatus.kInfeasible, hs.HighsModelStatus.kUnboundedOrInfeasible):
                    reduced = self.reduced
                    if self.limits != dict(reduced.problem.budgets):
                        reduced = _with_budgets(reduced, self.limits)
                    raise_jointly_infeasible(reduced, "highs")
                has_solution = info.primal_solution_status == hs.SolutionStatus.kSolutionStatusFeasible
                if status != hs.HighsModelStatus.kOptimal and not has_solution:
                    if status == hs.HighsModelStatus.kTimeLimit:
                        raise MpqError(
                            f"solver 'highs' found no feasible allocation within its time limit "
                            f"({time_limit:g} s; model of {self.n_col} columns, {self.n_row} rows); "
                            "raise time_limit=..., or use linearization='onehot' for pair objectives"
                        )
                    raise MpqError(
                        f"solver 'highs' stopped with status {h.modelStatusToString(status)!r} and no allocation"
                    )
                x = np.asarray(h.getSolution().col_value[: self.G * self.B]).reshape(self.G, self.B)
                choice = np.where(self.reduced.allowed, x, -np.inf).argmax(axis=1)
                over = over_budget(_with_budgets(self.reduced, self.limits), self.reduced.costs_of(choice))
                if not over:
                    break
                for name, excess in over.items():
                    row = tightened.get(name, _row_bound(self.limits[name]))
                    tightened[name] = row - excess - budget_slack(self.limits[name])
                    self._set_row(name, tightened[name])
            else:
                raise MpqError(f"solver 'highs' kept returning allocations over the budgets {sorted(over)} by {over}")
        finally:
            for name in tightened:  # leave the model as the caller set it
                self._set_row(name, _row_bound(self.limits[name]))
        dual_bound = float(info.mip_dual_bound) * self.obj_scale  # back from HiGHS's scaled objective
        bound = dual_bound if math.isfinite(dual_bound) else None  # stopped before the root LP: no bound yet
        gap = float(info.mip_gap)
        if status == hs.HighsModelStatus.kOptimal:
            return {
                "choice": choice,
                "status": "optimal",
                "bound": bound,
                "gap": max(0.0, gap) if math.isfinite(gap) else 0.0,
            }
        return {
            "choice": choice,
            "status": "time_limit",
            "bound": bound,
            "gap": gap if math.isfinite(gap) and gap >= 0 else math.inf,
        }


#: Largest entries kept as they are: an objective or a budget row whose largest magnitude
#: lies in [2**-20, 2**40] (about 1e-6 to 1.1e12) reaches HiGHS unscaled.
_UNSCALED = (2.0**-20, 2.0**40)


def _scale(values: np.ndarray) -> float:
    """1, or the power of two that brings the largest ``|value|`` into [0.5, 1) when it lies outside
    :data:`_UNSCALED`: dividing by a power of two is exact in floating point, and the scaled
    entries are far inside what HiGHS takes (it reads costs and bounds from 1e20 on as
    infinite, refuses matrix entries above 1e15 and drops those below 1e-9)."""
    biggest = float(np.max(np.abs(values))) if values.size else 0.0
    if biggest == 0.0 or _UNSCALED[0] <= biggest <= _UNSCALED[1]:
        return 1.0
    return math.ldexp(1.0, math.frexp(biggest)[1])


def _row_bound(limit: float) -> float:
    """A budget row's upper bound: the limit and the slack every budget check allows."""
    return float(limit) + budget_slack(limit)


def _with_budgets(reduced: ReducedProblem, limits: Mapping[str, float]) -> ReducedProblem:
    if dict(limits) == dict(reduced.problem.budgets):
        return reduced
    return ReducedProblem(
        reduced.problem.with_budgets(limits),
        reduced.groups,
        reduced.allowed,
        reduced.unary,
        reduced.costs,
        reduced.pairs,
    )


@attrs.frozen
class HighsSolver:
    """Exact MILP (multiple-choice knapsack, pair terms linearized) on HiGHS.

    Options: ``time_limit`` seconds (an unproven incumbent comes back with status
    ``time_limit`` and its gap), ``mip_rel_gap`` (0 = prove optimality), ``threads``
    (parallel tree search), ``linearization`` of pair terms (``onehot`` or
    ``generic``), ``warm_start`` (for pair objectives, start from the diagonal-only
    optimum improved by 1-swaps).

    Capability: :meth:`budget_resolver` re-solves one problem under new budgets,
    building the HiGHS model once and moving only the budget rows' bounds between
    solves. :func:`mpqcore.solvers.pareto.pareto_sweep` uses it on any solver that has a
    ``budget_resolver`` method; a solver without one is called once per budget.
    """

    name = "highs"

    time_limit: float = option(float, default=60.0, greater_than=0.0, help="seconds before the incumbent is returned")
    mip_rel_gap: float = option(float, default=0.0, minimum=0.0, less_than=1.0, help="relative gap it stops at")
    threads: int | None = option(int, default=None, minimum=1, optional=True, help="HiGHS threads (None: its default)")
    linearization: str = option(str, default="onehot", choices=LINEARIZATIONS, help="how pair terms become rows")
    warm_start: bool = option(bool, default=True, help="pair objectives start at the improved diagonal optimum")

    def build(self, reduced: ReducedProblem) -> HighsModel:
        return HighsModel(reduced, linearization=self.linearization, mip_rel_gap=self.mip_rel_gap, threads=self.threads)

    def solve(self, problem: Problem) -> Allocation:
        started = time.perf_counter()
        reduced = prepare(problem)
        trivial = self._solve_trivial(reduced, started)
        return trivial if trivial is not None else self.solve_model(self.build(reduced), started=started)

    def _solve_trivial(self, reduced: ReducedProblem, started: float) -> Allocation | None:
        """Nothing to model, or separable and unconstrained: each group's cheapest allowed choice."""
        if reduced.n_groups and (reduced.pairs or reduced.problem.budgets):
            return None
        return make_allocation(
            reduced,
            argmin_choice(reduced),
            solver=self.name,
            started=started,
            info={"linearization": None, "columns": 0, "rows": 0},
        )

    def budget_resolver(self, problem: Problem) -> Callable[[Mapping[str, float]], Allocation]:
        """A function solving ``problem`` under other budgets, with the model built once.

        ``resolve(budgets)`` returns what ``solve(problem.with_budgets(budgets))`` would
        and raises :class:`~mpqcore.errors.InfeasibleError` the same way. The problem is
        reduced once; the HiGHS model is built at the first solve that needs one, and
        later solves with the same budget names only move its budget rows
        (``info["reused_model"]`` says which did). Other budget names build a new model.
        """
        check_magnitudes(problem)
        base = reduce_problem(problem)
        model: HighsModel | None = None

        def resolve(budgets: Mapping[str, float]) -> Allocation:
            nonlocal model
            started = time.perf_counter()
            reduced = _with_budgets(base, budgets)
            check_magnitudes(reduced.problem)  # the new limits too
            check_budgets_reachable(reduced)
            trivial = self._solve_trivial(reduced, started)
            if trivial is not None:
                return trivial
            reused = model is not None and model.budget_names == list(reduced.problem.budgets)
            if model is not None and reused:
                model.rebudget(reduced)
            else:
                model = self.build(reduced)
            return self.solve_model(model, started=started, info={"reused_model": reused})

        return resolve

    def solve_model(self, model: HighsModel, *, started: float, info: Mapping[str, Any] | None = None) -> Allocation:
        """Optimize an already built model (its current budget bounds) into an Allocation."""
        reduced = model.reduced
        start = None
        extra: dict[str, Any] = {}
        if model.pairs and self.warm_start:
            start = self._start(model, started)
            if start is not None:
                extra["start_objective"] = reduced.objective_of(start)
        remaining = self.time_limit - (time.perf_counter() - started)
        result = model.optimize(max(remaining, 1e-3), start=start)
        choice, status = result["choice"], result["status"]
        gap = result["gap"]
        if status != "optimal":
            gap = relative_gap(reduced.objective_of(choice), result["bound"])
        return make_allocation(
            reduced,
            choice,
            solver=self.name,
            started=started,
            status=status,
            gap=gap,
            bound=result["bound"],
            info={
                "linearization": self.linearization if model.pairs else None,
                "columns": model.n_col,
                "rows": model.n_row,
                **extra,
                **(info or {}),
            },
        )

    def _start(self, model: HighsModel, started: float) -> np.ndarray | None:
        """The diagonal-only optimum (pair terms dropped), then 1-swaps on the full objective."""
        reduced = model.reduced
        if reduced.problem.budgets:
            linear = HighsModel(
                _with_budgets(reduced, model.limits),
                mip_rel_gap=self.mip_rel_gap,
                threads=self.threads,
                use_pairs=False,
            )
            budget = min(10.0, 0.2 * (self.time_limit - (time.perf_counter() - started)))
            try:
                choice = linear.optimize(max(budget, 1e-3))["choice"]
            except MpqError:
                return None
        else:
            choice = argmin_choice(reduced, effective_terms(reduced)[0])
        return local_search(_with_budgets(reduced, model.limits), choice)
