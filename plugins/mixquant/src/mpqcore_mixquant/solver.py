"""The ``mixquant-qem`` solver: MixQuant's QEM rule, with a QEM or with a budget.

It reads the quantization errors from ``problem.objective.unary`` (the ``mixquant``
method's objective, either scaling; any non-negative per-layer error works, e.g.
``hawq``'s, since the rule only compares a layer's errors with its own at the
reference bits) and ignores pair terms.

- ``qem`` given: the paper's rule exactly. Each layer takes the smallest bit-width whose
  error is at most ``qem`` times its error at ``reference_bits`` (the largest bit-width
  if none is). A group of tied layers takes the largest of its members' picks; pinned
  layers keep their pins. If the result breaks a budget, :class:`InfeasibleError`.
- no ``qem``: the smallest QEM whose allocation meets every budget. The rule is monotone
  in QEM and only changes at the thresholds of :func:`~mpqcore_mixquant.rule.thresholds`,
  so the search bisects over the sorted thresholds when every budgeted cost grows with
  the bit-width (then feasibility is monotone too) and scans them in order otherwise.
  Both return the exact smallest QEM, not an approximation.

The status is ``heuristic``: the rule does not minimize the objective under the budget
(the ``highs`` solver does that on the same objective).
"""

from __future__ import annotations

import math
import time

import attrs
import numpy as np

from mpqcore.constraints import within_budget
from mpqcore.errors import ConfigError, InfeasibleError
from mpqcore.options import option
from mpqcore.problem import ReducedProblem, allocation_costs, check_budgets_reachable, reduce_problem
from mpqcore.types import BITS_RANGE, Allocation, Problem
from mpqcore_mixquant.rule import group_choice, rule_choice, thresholds

__all__ = ["QEMSolver"]

_WHERE = "solver 'mixquant-qem'"  # in errors raised while solving (the registry names the plugin at creation)


@attrs.frozen
class QEMSolver:
    """MixQuant's rule: each layer gets the smallest b with QE_b <= QEM x QE_ref.

    Options
    -------
    qem: the multiplier (>= 1). ``None`` (default) searches the smallest QEM that meets
        the problem's budgets.
    reference_bits: the bit-width whose error is the reference (default 8; must be a
        candidate).
    """

    name = "mixquant-qem"

    qem: float | None = option(float, default=None, minimum=1.0, optional=True, help="the multiplier (None: searched)")
    reference_bits: int = option(
        int, default=8, minimum=BITS_RANGE.start, maximum=BITS_RANGE.stop - 1, help="bits of the reference error"
    )

    # -- the rule on a reduced problem -------------------------------------------------

    def _errors(self, problem: Problem) -> tuple[np.ndarray, np.ndarray]:
        bits = list(problem.bits)
        if self.reference_bits not in bits:
            raise ConfigError(f"{_WHERE}: reference_bits={self.reference_bits} is not a candidate; valid: {bits}")
        qe = np.asarray(problem.objective.unary, dtype=float)
        if np.any(qe < 0):
            bad = [problem.layers[i] for i in np.unique(np.nonzero(qe < 0)[0])][:5]
            raise ConfigError(
                f"{_WHERE} reads quantization errors (>= 0) from the objective, but layers {bad} have negative values; "
                "measure with method='mixquant'"
            )
        return qe, qe[:, bits.index(self.reference_bits)]

    def _choice(self, reduced: ReducedProblem, qe: np.ndarray, ref: np.ndarray, qem: float) -> np.ndarray:
        return group_choice(rule_choice(qe, ref, qem), reduced.groups, reduced.allowed)

    @staticmethod
    def _fits(reduced: ReducedProblem, choice: np.ndarray) -> bool:
        costs = reduced.costs_of(choice)
        return all(within_budget(costs[n], lim) for n, lim in reduced.problem.budgets.items())

    @staticmethod
    def _costs_grow_with_bits(reduced: ReducedProblem) -> bool:
        return all(np.all(np.diff(reduced.costs[n], axis=1) >= 0) for n in reduced.problem.budgets)

    # -- solving ---------------------------------------------------------------------------

    def solve(self, problem: Problem) -> Allocation:
        started = time.perf_counter()
        qe, ref = self._errors(problem)
        reduced = reduce_problem(problem)
        info: dict = {"reference_bits": self.reference_bits}
        if self.qem is not None:
            qem = self.qem
            choice = self._choice(reduced, qe, ref, qem)
            info.update(mode="qem")
            if not self._fits(reduced, choice):
                costs = reduced.costs_of(choice)
                parts = [
                    f"{n}: {costs[n]:g} > {lim:g}"
                    for n, lim in problem.budgets.items()
                    if not within_budget(costs[n], lim)
                ]
                raise InfeasibleError(
                    f"{_WHERE}: the allocation of qem={qem:g} breaks the budget ({'; '.join(parts)}); "
                    "raise qem, or leave it out to search the smallest QEM that meets the budget",
                    budgets=dict(problem.budgets),
                )
        else:
            if not problem.budgets:
                raise ConfigError(f"{_WHERE}: give option qem=... (>= 1) or a budget to search the QEM for")
            check_budgets_reachable(reduced)
            qem, choice, search = self._smallest_feasible_qem(reduced, qe, ref)
            info.update(mode="budget", search=search)
        bits = reduced.expand(choice)
        info.update(
            qem=qem, rule_bits={problem.layers[i]: problem.bits[j] for i, j in enumerate(rule_choice(qe, ref, qem))}
        )
        return Allocation(
            bits=bits,
            objective=problem.objective.value(bits),
            costs=allocation_costs(problem, bits),
            status="heuristic",
            gap=math.inf,
            bound=None,
            solver=self.name,
            solve_time=time.perf_counter() - started,
            info=info,
        )

    def _smallest_feasible_qem(self, reduced: ReducedProblem, qe: np.ndarray, ref: np.ndarray):
        t = thresholds(qe, ref).ravel()
        # An infinite threshold (error > 0 where the reference error is 0) is never reached.
        cands = np.unique(np.concatenate([[1.0], t[np.isfinite(t)]]))
        tried = 0

        def fits(k: int) -> tuple[bool, np.ndarray]:
            nonlocal tried
            tried += 1
            choice = self._choice(reduced, qe, ref, float(cands[k]))
            return self._fits(reduced, choice), choice

        if self._costs_grow_with_bits(reduced):
            ok, best = fits(len(cands) - 1)
            if not ok:
                raise InfeasibleError(
                    f"{_WHERE}: even QEM={cands[-1]:g}, past which the rule changes nothing, breaks the budget; "
                    "the rule cannot reach it (solver 'highs' can, if any allocation does)",
                    budgets=dict(reduced.problem.budgets),
                )
            lo, hi = -1, len(cands) - 1  # fits(hi) holds; fits(lo) is taken to fail
            while hi - lo > 1:
                mid = (lo + hi) // 2
                ok, choice = fits(mid)
                if ok:
                    hi, best = mid, choice
                else:
                    lo = mid
            return float(cands[hi]), best, {"kind": "bisection", "candidates": len(cands), "evaluated": tried}
        for k in range(len(cands)):
            ok, choice = fits(k)
            if ok:
                return float(cands[k]), choice, {"kind": "scan", "candidates": len(cands), "evaluated": tried}
        raise InfeasibleError(
            f"{_WHERE}: no QEM gives an allocation within the budget (solver 'highs' may find one)",
            budgets=dict(reduced.problem.budgets),
        )
