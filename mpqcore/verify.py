"""Never worse than uniform: the solved allocation measured against its rivals.

A method's objective is a prediction; on a model it has never seen it can be wrong
(hawq gives a sensitive layer 2 bits, EAGL's scaling under BOPs). After solving,
:func:`guard` measures, on calibration data the method did not see (a held-out split of
the calibration batches, :func:`split_calibration`):

- the solved allocation,
- every uniform allocation (one width for every unpinned layer, pins kept) that meets
  the budgets: the dearest is the uniform reference, the others are cheaper,
- a few neighbours along the budget: the same objective solved at slightly lower limits,
- and any further candidates given (the rounds of :func:`refine`),

and returns the best measured one. Since the uniform references are candidates, the
returned allocation's held-out loss is never above theirs.

:func:`refine` closes the loop before the guard: it measures the chosen allocation's
real loss, compares it with the objective's prediction, corrects the objective with what
it measured (the measured single-layer losses of the cells the allocation uses, the
method's objective rescaled to loss units elsewhere, and the measured residual spread
over the cells the allocation lowered) and solves again, for ``rounds`` rounds or until
the evaluation budget is spent or the answer repeats.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
import numpy as np
import torch
from torch import nn

from mpqcore.batches import Supervised, batch_size, check_not_empty, materialize
from mpqcore.bias_correction import GUARD
from mpqcore.constraints import within_budget
from mpqcore.errors import ConfigError, InfeasibleError
from mpqcore.evaluate import Evaluator
from mpqcore.frozen import freeze
from mpqcore.problem import allocation_costs, allocation_violations, reduce_problem
from mpqcore.types import Allocation, Objective, Problem
from mpqcore.verify_on import VERIFY_ON  # here for mpq --help, which must not import torch

__all__ = [
    "ALPHA",
    "HELD_OUT_FRACTION",
    "VERIFY_ON",
    "BiasTrial",
    "CalibrationSplit",
    "check_guard_options",
    "check_held_out",
    "guard",
    "held_out_evaluator",
    "holm",
    "paired_p_value",
    "refine",
    "split_calibration",
    "uniform_candidates",
    "uniform_costs_compared",
    "verify",
]

#: The share of the calibration (batches, or examples of a single batch) held out for the guard.
HELD_OUT_FRACTION = 0.25
#: How far below the limit each neighbour along the budget is solved, as a share of the
#: distance from the limit to the cheapest allocation.
_NEIGHBOUR_STEP = 0.04

Solve = Callable[[Problem], Allocation]


def check_guard_options(
    *, guard: Any, guard_candidates: Any, verify_on: Any, held_out: Any, refine: Any, refine_evaluations: Any
) -> None:
    """Refuse a bad guard or refinement option before any work, naming what is valid."""
    if not isinstance(guard, bool):
        raise ConfigError(f"guard must be True or False, got {guard!r}")
    for name, value, low in (("guard_candidates", guard_candidates, 0), ("refine", refine, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    if refine_evaluations is not None and (
        isinstance(refine_evaluations, bool) or not isinstance(refine_evaluations, int) or refine_evaluations < 1
    ):
        raise ConfigError(f"refine_evaluations must be None (no limit) or an integer >= 1, got {refine_evaluations!r}")
    if verify_on not in VERIFY_ON:
        raise ConfigError(f"verify_on must be one of {list(VERIFY_ON)}, got {verify_on!r}")
    if isinstance(held_out, bool) or not isinstance(held_out, (int, float)) or not 0.0 < float(held_out) < 1.0:
        raise ConfigError(f"held_out must be a fraction strictly between 0 and 1 (default 0.25), got {held_out!r}")


# -- the held-out split ------------------------------------------------------------


@attrs.frozen(eq=False)
class CalibrationSplit:
    """The calibration batches the method measures on, and those the guard verifies on.

    ``how`` is ``"batches"`` (whole batches held out), ``"examples"`` (one batch split
    along its first dimension) or ``"none"`` (too small to split: the guard then
    measures on the method's own calibration data and ``note`` says so).
    """

    measure: tuple[Any, ...]
    held_out: tuple[Any, ...]
    how: str
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "how": self.how,
            "measure_batches": len(self.measure),
            "held_out_batches": len(self.held_out),
            "measure_examples": sum(batch_size(b) for b in self.measure),
            "held_out_examples": sum(batch_size(b) for b in self.held_out),
            "note": self.note,
        }


def split_calibration(calibration: Iterable[Any], fraction: float = HELD_OUT_FRACTION) -> CalibrationSplit:
    """Hold out ``fraction`` of the calibration: the last whole batches when there are two or
    more (so the method's batches keep their indices); else that share of the one batch's
    examples; else nothing."""
    batches = materialize(calibration)
    for i, batch in enumerate(batches):  # named by its index in the user's calibration, before splitting
        check_not_empty(batch, i)
    n = len(batches)
    if n >= 2:
        k = min(n - 1, max(1, round(n * fraction)))
        return CalibrationSplit(tuple(batches[: n - k]), tuple(batches[n - k :]), "batches")
    size = batch_size(batches[0])
    if size >= 2:
        k = min(size - 1, max(1, round(size * fraction)))
        return CalibrationSplit(
            (_slice(batches[0], size, 0, size - k),), (_slice(batches[0], size, size - k, size),), "examples"
        )
    note = "one calibration batch of one example: nothing to hold out, so the guard measured on the method's data"
    return CalibrationSplit(tuple(batches), (), "none", note)


def _slice(batch: Any, size: int, start: int, stop: int) -> Any:
    """Examples ``start:stop`` of ``batch``: every tensor whose first dimension is the batch size is sliced."""
    if isinstance(batch, torch.Tensor):
        return batch[start:stop] if batch.dim() and batch.shape[0] == size else batch
    if isinstance(batch, Supervised):
        return Supervised(_slice(batch.inputs, size, start, stop), _slice(batch.target, size, start, stop))
    if isinstance(batch, Mapping):
        return {k: _slice(v, size, start, stop) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_slice(v, size, start, stop) for v in batch)
    return batch


#: The held-out data is scored in about this many chunks, so that two candidates can be
#: compared by the spread of their paired differences, not by one number each.
HELD_OUT_CHUNKS = 16


def held_out_evaluator(
    model: nn.Module, split: CalibrationSplit, quantizer: Any, *, spec: Any = None, **options: Any
) -> Evaluator | None:
    """An evaluator over the held-out batches of ``split`` (``None`` when nothing is held out),
    cut into about :data:`HELD_OUT_CHUNKS` chunks, working on ``model`` itself (no copy: the
    measuring evaluator's working copy, whose weights every evaluation puts back), its float
    outputs computed now.

    ``options`` are :class:`~mpqcore.evaluate.Evaluator`'s (loss, act_bits, device, exclude,
    plugins). A held-out batch the model cannot take is named by its index in the user's
    calibration. Close it before the evaluator that owns ``model``.
    """
    if not split.held_out:
        return None
    total = sum(batch_size(b) for b in split.held_out)
    step = max(1, math.ceil(total / HELD_OUT_CHUNKS))
    chunks, source = [], []
    for i, batch in enumerate(split.held_out):
        n = batch_size(batch)
        for start in range(0, n, step):
            chunks.append(_slice(batch, n, start, min(start + step, n)) if n > step else batch)
            source.append(i)
    try:
        evaluator = Evaluator(model, chunks, spec, quantizer, reuse_prefix=False, inplace=True, **options)
        evaluator.float_outputs()
    except ConfigError as exc:
        offset = len(split.measure) if split.how == "batches" else 0

        def user_index(m: re.Match) -> str:
            j = int(m.group(1))
            return f"calibration batch {(source[j] if j < len(source) else j) + offset}"

        raise ConfigError(re.sub(r"calibration batch (\d+)", user_index, str(exc))) from exc
    return evaluator


def check_held_out(model: nn.Module, split: CalibrationSplit, quantizer: Any, **options: Any) -> None:
    """Run the user's model on the held-out batches before the method measures, so that a batch
    it cannot take is said before any work (no copy: the model is only run, in eval mode, and its
    training flags put back). Skipped where evaluating in place is refused (computed weights, a
    model off ``device``): the guard's evaluator on the working copy then finds such a batch."""
    try:
        checked = held_out_evaluator(model, split, quantizer, **options)
    except ConfigError as exc:
        if "inplace=True" in str(exc):
            return
        raise
    if checked is not None:
        checked.close()


# -- candidates --------------------------------------------------------------------


def uniform_candidates(
    problem: Problem, allocation: Mapping[str, int] | None = None
) -> list[tuple[int, dict[str, int]]]:
    """Every uniform allocation (pins kept) that meets the budgets and ties, dearest first.

    Without budgets, the allocation's own size is the budget. A tie of a pinned layer
    with others rules out every width but the pin's.
    """
    pins = problem.pinned()
    limits = dict(problem.budgets)
    if not limits and allocation is not None:
        limits = {"size": allocation_costs(problem, allocation)["size"]}
    bounded = problem.with_budgets(limits)
    out = []
    for b in problem.bits:
        assign = {f: pins.get(f, b) for f in problem.layers}
        if not allocation_violations(bounded, assign):
            out.append((b, assign))
    return out[::-1]


def uniform_costs_compared(
    problem: Problem, spec: Any, bits: Mapping[str, int], width: int, uniform: Mapping[str, int]
) -> dict[str, Any]:
    """The allocation's and the uniform reference's average bits side by side, and a note
    when the uniform reference is cheaper (pins at high widths can leave no uniform width
    near the budget): never a cheaper uniform without saying so."""
    params = {layer.fqn: layer.params for layer in spec.layers}
    mine, theirs = _average_bits(problem, params, bits), _average_bits(problem, params, uniform)
    out: dict[str, Any] = {"average_bits": mine, "uniform_average_bits": theirs}
    mine_costs, theirs_costs = allocation_costs(problem, bits), allocation_costs(problem, uniform)
    if any(not within_budget(mine_costs[n], theirs_costs[n]) for n in mine_costs):
        out["uniform_note"] = (
            f"uniform {width}-bit ({theirs:.2f} average bits) is cheaper than the allocation ({mine:.2f}): it is the "
            f"dearest uniform allocation within the budget (pins kept); the next width up does not fit"
        )
    return out


def _neighbours(problem: Problem, allocation: Allocation, solve: Solve, k: int) -> list[Allocation]:
    """Up to ``k`` distinct allocations of the same objective solved at slightly lower limits."""
    if k <= 0 or not problem.budgets:
        return []
    reduced = reduce_problem(problem)
    cheapest = {
        n: float(np.where(reduced.allowed, reduced.costs[n], np.inf).min(axis=1).sum()) for n in problem.budgets
    }
    seen = {tuple(sorted(allocation.bits.items()))}
    out: list[Allocation] = []
    for step in range(1, 3 * k + 1):
        limits = {n: lim - step * _NEIGHBOUR_STEP * max(lim - cheapest[n], 0.0) for n, lim in problem.budgets.items()}
        try:
            found = solve(problem.with_budgets(limits))
        except InfeasibleError:
            break
        key = tuple(sorted(found.bits.items()))
        if key not in seen:
            seen.add(key)
            out.append(found)
            if len(out) == k:
                break
    return out


def _average_bits(problem: Problem, params: Mapping[str, int], bits: Mapping[str, int]) -> float:
    total = sum(params[f] for f in problem.layers)
    return sum(params[f] * bits[f] for f in problem.layers) / max(total, 1)


#: The family-wise error rate of the guard's comparisons: the chance that noise in the
#: held-out data alone makes any rival replace the uniform reference (or the method's answer).
ALPHA = 0.05

Score = Callable[[Mapping[str, int]], "np.ndarray"]


def _paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean and standard error of ``a - b`` over the chunks (0 error for a single chunk)."""
    return _mean_and_stderr(np.asarray(a, dtype=float) - np.asarray(b, dtype=float))


def _mean_and_stderr(d: np.ndarray) -> tuple[float, float]:
    if d.size < 2:
        return float(d.mean()), 0.0
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(d.size))


def paired_p_value(a: np.ndarray, b: np.ndarray) -> float:
    """One-sided p-value that ``a`` is lower than ``b`` over the paired chunks: the smaller of
    Wilcoxon's signed-rank test (exact for small samples) and the paired t-test, doubled
    (Bonferroni over the two, so the combined test keeps its level).

    Each covers the other's blind spot. Per-chunk losses are heavy-tailed (one badly
    quantized example can hold most of a candidate's loss), which leaves the t-test without
    power where every chunk says the same; the ranks do not care. With few chunks (a
    held-out part of four examples) the ranks cannot go below ``2**-n`` however large the
    difference, while the t-test can. No difference on any chunk: 1. A single chunk: 0 when
    ``a`` is lower, else 1."""
    from scipy import stats  # scikit-learn's dependency; imported here, off the start-up path

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if not np.any(d != 0):
        return 1.0
    if d.size < 2:
        return 0.0 if float(d.mean()) < 0 else 1.0
    ranks = float(stats.wilcoxon(d, alternative="less", zero_method="wilcox").pvalue)
    diff, err = _mean_and_stderr(d)
    t = (0.0 if diff < 0 else 1.0) if err == 0.0 else float(stats.t.cdf(diff / err, df=d.size - 1))
    return min(1.0, 2.0 * min(ranks, t))


def holm(p_values: Mapping[int, float], alpha: float = ALPHA) -> set[int]:
    """The hypotheses Holm's step-down procedure rejects at family-wise level ``alpha``:
    the smallest p-value against ``alpha / m``, the next against ``alpha / (m - 1)``, and
    so on until one fails. Uniformly more powerful than Bonferroni, and as safe."""
    order = sorted(p_values, key=lambda i: (p_values[i], i))
    rejected: set[int] = set()
    for rank, i in enumerate(order):
        if p_values[i] > alpha / (len(order) - rank):
            break
        rejected.add(i)
    return rejected


def guard(
    problem: Problem,
    allocation: Allocation,
    solve: Solve,
    *,
    score: Score,
    params: Mapping[str, int],
    candidates: int = 3,
    extra: Sequence[tuple[str, Allocation]] = (),
) -> tuple[Allocation, dict[str, Any]]:
    """The allocation to return, among ``allocation``, the uniform allocations within the
    budgets, its neighbours along the budget and ``extra``; and the record of every candidate.

    ``score(bits)`` gives lower-is-better values per chunk of the held-out data (their mean
    is the candidate's measured loss). The rule: the uniform reference (the dearest uniform
    allocation within the budgets) stands unless a rival's loss is lower by
    :func:`paired_p_value` over the chunks, Holm-corrected over all the rivals at family-wise level
    :data:`ALPHA` (several rivals tested at 5% each would replace uniform by noise far
    more often than 5%); among those that are, the method's own answer is kept unless
    another is lower than it by the same test, else the lowest is taken. So the result is
    never measured worse than uniform, and a difference within the noise of the held-out
    data never replaces it.
    """
    t0 = time.perf_counter()
    objective = problem.objective
    named: list[tuple[str, Mapping[str, int], Allocation | None]] = [("method", allocation.bits, allocation)]
    named += [(name, a.bits, a) for name, a in extra]
    uniform = uniform_candidates(problem, allocation.bits)
    named += [(f"uniform-{b}", assign, None) for b, assign in uniform]
    named += [
        (f"neighbour-{i + 1}", a.bits, a) for i, a in enumerate(_neighbours(problem, allocation, solve, candidates))
    ]
    values: dict[tuple, np.ndarray] = {}
    keys = []
    for _, bits, _ in named:
        key = tuple(sorted(bits.items()))
        if key not in values:
            values[key] = np.asarray(score(bits), dtype=float)
        keys.append(key)
    measured = [float(values[k].mean()) for k in keys]
    ref = next((i for i, (n, _, _) in enumerate(named) if n.startswith("uniform-")), None)
    best, why = _choose(named, keys, values, measured, ref)
    rows: list[dict[str, Any]] = []
    for i, (name, bits, _) in enumerate(named):
        diff, err = _paired(values[keys[i]], values[keys[ref]]) if ref is not None else (0.0, 0.0)
        p = paired_p_value(values[keys[i]], values[keys[ref]]) if ref is not None and keys[i] != keys[ref] else None
        rows.append(
            {
                "name": name,
                "average_bits": _average_bits(problem, params, bits),
                "costs": allocation_costs(problem, bits),
                "predicted": objective.value(bits),
                "measured": measured[i],
                "vs_uniform": diff,
                "vs_uniform_stderr": err,
                "p_lower_than_uniform": p,
                "same_as": next((named[j][0] for j in range(i) if keys[j] == keys[i]), None),
                "chosen": i == best,
                "bits": dict(bits),
            }
        )
    name, bits, chosen = named[best]
    if keys[best] == keys[0]:
        name, chosen = "method", allocation  # the method's answer, whatever else has the same bits
        for i, row in enumerate(rows):
            row["chosen"] = i == 0
    if chosen is None:  # a uniform allocation: not a solver's answer
        costs = allocation_costs(problem, bits)
        chosen = Allocation(bits, objective.value(bits), costs, status="heuristic", solver=allocation.solver)
    if name != "method":
        chosen = attrs.evolve(chosen, info={**dict(chosen.info), "guard": name})
    record = {
        "enabled": True,
        "kept": name == "method",
        "chosen": name,
        "why": why,
        "method_measured": measured[0],
        "chosen_measured": measured[best],
        "uniform_reference": uniform[0][0] if uniform else None,
        "alpha": ALPHA,
        "test": "one-sided Wilcoxon signed-rank and paired t-test over the chunks (the smaller p doubled), Holm-corrected over the rivals",
        "chunks": int(values[keys[0]].size),
        "candidates": rows,
        "distinct_candidates": len(values),
        "seconds": time.perf_counter() - t0,
    }
    return chosen, freeze(record)


def _choose(
    named: Sequence[tuple[str, Any, Any]],
    keys: Sequence[tuple],
    values: Mapping[tuple, np.ndarray],
    measured: Sequence[float],
    ref: int | None,
) -> tuple[int, str]:
    """The index of the candidate to return, and why, by :func:`guard`'s rule."""
    if ref is None:  # no uniform allocation meets the budgets: the lowest measured
        best = min(range(len(named)), key=lambda i: (measured[i], i))
        return best, "no uniform allocation meets the budgets; the lowest measured loss"

    def lower_than(j: int, rivals: Iterable[int]) -> set[int]:
        """The rivals whose loss is lower than ``j``'s beyond the noise, Holm over those rivals."""
        distinct = {keys[i]: i for i in sorted(rivals, reverse=True) if keys[i] != keys[j]}  # one test per allocation
        found = holm({i: paired_p_value(values[keys[i]], values[keys[j]]) for i in distinct.values()})
        return {i for i in range(len(named)) if any(keys[i] == keys[f] for f in found)}

    better = lower_than(ref, range(len(named)))
    if keys[0] == keys[ref] and not better:
        return 0, "the method's answer is the uniform reference"
    if not better:
        return ref, f"no candidate measured lower than {named[ref][0]} beyond the noise (paired test, Holm, {ALPHA:g})"
    lowest = min(better, key=lambda i: (measured[i], i))
    if 0 in better and not lower_than(0, better):
        return 0, f"the method's answer measured lower than {named[ref][0]} beyond the noise"
    return lowest, f"{named[lowest][0]} measured lowest, beyond the noise, of those lower than {named[ref][0]}"


# -- closed-loop refinement --------------------------------------------------------


@attrs.define
class _Corrected:
    """The objective in loss units, corrected by what was measured."""

    raw: np.ndarray  # the method's unary terms
    pairs: Mapping[tuple[str, int, str, int], float]
    cells: dict[tuple[int, int], float] = attrs.field(factory=dict)  # measured single-layer losses
    delta: np.ndarray | None = None  # the residuals spread so far
    scale: float = 1.0

    def fit_scale(self) -> None:
        """Least squares of measured cells on the method's terms (through the origin)."""
        if not self.cells:
            return
        c = np.array([self.raw[i, j] for i, j in self.cells])
        m = np.array(list(self.cells.values()))
        denom = float(c @ c)
        if denom > 0 and math.isfinite(denom):
            fitted = float(c @ m) / denom
            if fitted > 0:
                self.scale = fitted

    def unary(self) -> np.ndarray:
        u = self.scale * self.raw
        for (i, j), m in self.cells.items():
            u[i, j] = m
        return u if self.delta is None else u + self.delta

    def objective(self, like: Objective) -> Objective:
        pairs = {k: self.scale * v for k, v in self.pairs.items()}
        return attrs.evolve(like, unary=self.unary(), pairs=pairs)


def refine(
    problem: Problem,
    allocation: Allocation,
    solve: Solve,
    evaluator: Evaluator,
    *,
    rounds: int,
    params: Mapping[str, int],
    max_evaluations: int | None = None,
) -> tuple[list[tuple[str, Allocation]], dict[str, Any], Objective]:
    """``rounds`` rounds of measure, correct, re-solve, starting from ``allocation``.

    Returns the distinct allocations of the rounds after the first (named ``refine-r``),
    the record (per round: the prediction, in loss units, of the objective that chose the
    allocation, made before measuring it; the measured calibration loss; the evaluations
    spent) and the corrected objective (loss units, less ``record["base"]``: the loss of
    the pins alone). Round 0's prediction is the method's objective rescaled by the fit
    of its own cells.
    """
    t0 = time.perf_counter()
    spent0 = evaluator.evaluations
    layers, bits = problem.layers, problem.bits
    pins = problem.pinned()
    top = len(bits) - 1
    row = {f: i for i, f in enumerate(layers)}
    col = {b: j for j, b in enumerate(bits)}

    def left() -> float:
        return math.inf if max_evaluations is None else max_evaluations - (evaluator.evaluations - spent0)

    base = evaluator.loss(dict(pins))
    state = _Corrected(np.array(problem.objective.unary, dtype=float), dict(problem.objective.pairs))
    state.delta = np.zeros_like(state.raw)
    current = problem.objective
    history: list[dict[str, Any]] = []
    out: list[tuple[str, Allocation]] = []
    seen: set[tuple] = set()
    a = allocation
    stop = "every round ran"
    for r in range(rounds + 1):
        key = tuple(sorted(a.bits.items()))
        if key in seen:
            stop = "converged: the corrected objective chose an allocation already measured"
            break
        if left() < 1:
            stop = "evaluation budget spent"
            break
        seen.add(key)
        lowered = [(row[f], col[b]) for f, b in a.bits.items() if f not in pins and col[b] < top]
        # the prediction of the objective that chose ``a`` (round 0: the method's, rescaled below)
        new_cells = [c for c in lowered if c not in state.cells]
        new_cells.sort(key=lambda c: -float(state.unary()[c]))  # the largest predicted contributions first
        for i, j in new_cells[: max(0, int(min(left() - 1, len(new_cells))))]:
            state.cells[(i, j)] = evaluator.loss({**pins, layers[i]: bits[j]}) - base
        if r == 0:
            state.fit_scale()
            predicted = base + state.scale * problem.objective.value(a.bits)
        else:
            predicted = base + current.value(a.bits)
        measured = evaluator.loss(dict(a.bits))
        history.append(
            {
                "round": r,
                "predicted": predicted,
                "measured": measured,
                "error": abs(predicted - measured),
                "relative_error": abs(predicted - measured) / max(abs(measured), 1e-12),
                "average_bits": _average_bits(problem, params, a.bits),
                "evaluations": evaluator.evaluations - spent0,
                "bits": dict(a.bits),
            }
        )
        if r > 0:
            out.append((f"refine-{r}", a))
        _spread_residual(state, problem.objective, a.bits, lowered, measured - base)
        current = state.objective(problem.objective)
        if r == rounds:
            break
        a = solve(attrs.evolve(problem, objective=current))
    record = {
        "rounds": history,
        "base": base,
        "scale": state.scale,
        "measured_cells": len(state.cells),
        "stopped": stop,
        "evaluations": evaluator.evaluations - spent0,
        "seconds": time.perf_counter() - t0,
    }
    return out, freeze(record), current


def _spread_residual(
    state: _Corrected, like: Objective, bits: Mapping[str, int], lowered: list[tuple[int, int]], target: float
) -> None:
    """Add to the lowered cells what the corrected objective misses of the measured loss, so it
    predicts this allocation exactly: in proportion to each cell's share, equally when none has one."""
    if not lowered:
        return
    missing = target - state.objective(like).value(bits)
    u = state.unary()
    weights = np.array([max(float(u[c]), 0.0) for c in lowered])
    weights = weights / weights.sum() if weights.sum() > 0 else np.full(len(lowered), 1.0 / len(lowered))
    assert state.delta is not None
    for (i, j), w in zip(lowered, weights, strict=True):
        state.delta[i, j] += w * missing


# -- bias correction as a candidate ------------------------------------------------


class BiasTrial:
    """``bias_correction="guard"``: the allocation the guard returns, measured with and without
    bias correction where the guard measured, the corrected one returned only when it is lower
    under :func:`paired_p_value` (one-sided, one test, level :data:`ALPHA`).

    The mean inputs are fitted by an evaluator over the measuring evaluator's batches (the
    method's part of the calibration: never the held-out part), working on its model in place;
    :attr:`measuring` then scores (and :func:`mpqcore.apply` reproduces) the corrected model.
    Close it before the measuring evaluator lets go of the model.
    """

    def __init__(self, meas: Any, split: CalibrationSplit | None, policy: str = "add", plugins: Any = None):
        ev = meas.evaluator
        self._split = split
        self._options = {"loss": ev.user_loss, "act_bits": ev.act_bits, "device": ev.device, "plugins": plugins}
        self.measuring = Evaluator(
            ev.model, ev.calibration, meas.spec, ev.quantizer, metric=ev.user_metric, reuse_prefix=False,
            inplace=True, bias_correction=policy, weights_from=ev, **self._options,
        )  # fmt: skip
        self._held: Evaluator | None = None

    @property
    def value(self) -> Any:
        """The :class:`~mpqcore.bias_correction.BiasCorrection` fitted on the method's part."""
        return self.measuring.bias_correction

    def _score(self, bits: Mapping[str, int], verify_on: str) -> np.ndarray:
        if verify_on == "metric":
            return np.array([-self.measuring.metric_score(bits)])
        if verify_on == "held-out" and self._split is not None and self._split.held_out:
            if self._held is None:
                ev = self.measuring
                self._held = held_out_evaluator(
                    ev.model,
                    self._split,
                    ev.quantizer,
                    spec=ev.spec,
                    bias_correction=self.value,
                    weights_from=ev,
                    **self._options,
                )
            assert self._held is not None
            return np.array(self._held.batch_losses(bits))
        return np.array(self.measuring.batch_losses(bits))

    def cannot_compare(self, where: Mapping[str, Any]) -> str | None:
        """Why the trial is not run (``None`` when it is): nothing to correct, or no data to judge it on
        that the mean inputs were not fitted on (``where`` is the guard's record of its data)."""
        if not self.value.means:
            reasons = sorted(set(self.value.skipped.values()))
            return "no quantized layer can be bias-corrected (" + "; ".join(reasons[:3]) + ")"
        if where["how"] == "none":
            return (
                f"not tried: the guard measured on the data the mean inputs are fitted on ({where['note']}), "
                "which would favour the correction; hold out calibration batches or use verify_on='metric'"
            )
        return None

    def compare(self, bits: Mapping[str, int], uncorrected: np.ndarray, verify_on: str, where: str) -> dict[str, Any]:
        """The record of one comparison; ``chosen`` says whether the corrected allocation is returned."""
        corrected = self._score(bits, verify_on)
        p = paired_p_value(corrected, uncorrected)
        chosen = p <= ALPHA
        lower = "lower" if chosen else "not lower"
        return freeze(
            {
                "mode": GUARD,
                "tried": True,
                "chosen": bool(chosen),
                "why": f"with bias correction the returned allocation measured {lower} than without "
                f"(p = {p:.3g}, level {ALPHA:g}) on {where}",
                "test": "one-sided Wilcoxon signed-rank and paired t-test over the chunks (the smaller p doubled)",
                "p_lower": p,
                "alpha": ALPHA,
                "measured": float(uncorrected.mean()),
                "measured_corrected": float(corrected.mean()),
                "chunks": int(corrected.size),
                "means_from": f"the method's part of the calibration ({len(self.measuring.calibration)} batches)",
            }
        )

    def close(self) -> None:
        if self._held is not None:
            self._held.close()
        self.measuring.close()


# -- the whole step, as search() runs it -------------------------------------------


def verify(
    meas: Any,
    allocation: Allocation,
    solve: Solve,
    *,
    split: CalibrationSplit | None,
    held: Evaluator | None,
    guard_on: bool,
    candidates: int,
    verify_on: str,
    rounds: int,
    max_evaluations: int | None,
    bias_trial: BiasTrial | None = None,
) -> tuple[Allocation, dict[str, Any], dict[str, float]]:
    """Refine (if ``rounds``), then guard (if ``guard_on``) ``allocation`` of the measurement ``meas``,
    then (given ``bias_trial``) try bias correction on the allocation the guard chose.

    Returns the allocation to use, the results to add (``guard``, ``refine``,
    ``bias_correction`` with a trial) and timings.
    """
    problem: Problem = meas.problem
    params = {layer.fqn: layer.params for layer in meas.spec.layers}
    results: dict[str, Any] = {}
    timings: dict[str, float] = {}
    extra: list[tuple[str, Allocation]] = []
    if rounds:
        t0 = time.perf_counter()
        extra, record, _ = refine(
            problem, allocation, solve, meas.evaluator, rounds=rounds, params=params, max_evaluations=max_evaluations
        )
        results["refine"] = record
        timings["refine"] = time.perf_counter() - t0
    if not guard_on:
        results["guard"] = {"enabled": False}
        if extra:  # no guard: the best measured round on the calibration data
            measured = results["refine"]["rounds"]
            best = min(range(len(measured)), key=lambda i: (measured[i]["measured"], i))
            if best > 0:
                allocation = attrs.evolve(extra[best - 1][1], info={"refine": best})
        return allocation, results, timings
    t0 = time.perf_counter()
    ev = meas.evaluator
    score: Score
    if verify_on == "metric":
        score = lambda bits: np.array([-ev.metric_score(bits)])  # noqa: E731
        where = {"how": "metric", "note": "the user's metric (verify_on='metric')"}
    elif verify_on == "held-out" and split is not None and held is not None:
        score = lambda bits: np.array(held.batch_losses(bits))  # noqa: E731
        where = split.to_dict()
    else:
        score = lambda bits: np.array(ev.batch_losses(bits))  # noqa: E731
        if verify_on == "calibration":
            note = "the method's own calibration data (verify_on='calibration')"
        elif split is None:
            note = "no held-out split: the measurement was given (measurement=), so the guard measured on its data"
        else:
            note = split.note
        where = {"how": "none", "note": note}
    before = meas.evaluator.evaluations
    held_before = held.evaluations if held is not None else 0
    chosen, record = guard(problem, allocation, solve, score=score, params=params, candidates=candidates, extra=extra)
    evaluations = meas.evaluator.evaluations - before
    if held is not None:
        evaluations += held.evaluations - held_before
    results["guard"] = {**dict(record), "verified_on": verify_on, "data": where, "evaluations": evaluations}
    timings["guard"] = time.perf_counter() - t0
    if bias_trial is not None:
        t0 = time.perf_counter()
        place = (
            "the user's metric"
            if verify_on == "metric"
            else ("the held-out part" if where["how"] != "none" else where["note"])
        )
        why_not = bias_trial.cannot_compare(where)
        if why_not is None:
            results["bias_correction"] = bias_trial.compare(chosen.bits, score(chosen.bits), verify_on, place)
        else:
            results["bias_correction"] = freeze({"mode": GUARD, "tried": False, "chosen": False, "why": why_not})
        timings["bias_correction"] = time.perf_counter() - t0
    return chosen, results, timings
