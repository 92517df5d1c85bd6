"""The allocation problem: its JSON file, the reduced form solvers use, and its checks.

The problem file (one JSON object)::

    {"layers": ["conv1", "fc"], "bits": [2, 4, 8],
     "objective": {"conv1": {"2": 1.5, "4": 0.2, "8": 0.0}, "fc": {...}},
     "pairs": [["conv1", 2, "fc", 2, 0.3]],
     "costs": {"size": {"conv1": {"2": 864, "4": 1728, "8": 3456}, "fc": {...}}},
     "budgets": {"size": 4000},
     "pins": {"conv1": 8},
     "ties": [["conv1", "fc"]]}

``objective`` is minimized; ``pairs`` adds a value when both choices are taken; each
key of ``budgets`` names a table in ``costs`` and bounds its sum; ``pins`` fixes layers
(fnmatch patterns allowed); ``ties`` forces layers to one bit-width. Other keys are kept
in ``extra`` on load and ignored by solvers.

:class:`~mpqcore.types.Problem` validates itself when built; the rules for pins, ties
and the budget tolerance live in :mod:`mpqcore.constraints`.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from mpqcore.constraints import expand_pins, within_budget
from mpqcore.errors import ConfigError, InfeasibleError
from mpqcore.types import Objective, Problem, check_bits

__all__ = [
    "ReducedProblem",
    "allocation_costs",
    "allocation_violations",
    "cheapest_costs",
    "check_budgets_reachable",
    "dump_problem",
    "expand_pins",
    "load_problem",
    "problem_from_dict",
    "problem_to_dict",
    "raise_jointly_infeasible",
    "reduce_problem",
    "resolve_pins",
    "validate_problem",
]


# ---------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------


def _table(raw: Any, layers: list[str], bits: list[int], what: str) -> np.ndarray:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{what} must be an object {{layer: {{bits: value}}}}, got {type(raw).__name__}")
    missing = [name for name in layers if name not in raw]
    if missing:
        raise ConfigError(f"{what} has no entry for layers {missing[:5]}")
    unknown = [name for name in raw if name not in layers]
    if unknown:
        raise ConfigError(f"{what} names layers not in 'layers': {unknown[:5]}")
    out = np.empty((len(layers), len(bits)))
    for i, name in enumerate(layers):
        row = raw[name]
        if not isinstance(row, Mapping):
            raise ConfigError(f"{what}[{name!r}] must be an object {{bits: value}}")
        try:
            values = {int(b): float(v) for b, v in row.items()}
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{what}[{name!r}] has a non-numeric key or value: {exc}") from exc
        lacking = [b for b in bits if b not in values]
        if lacking:
            raise ConfigError(f"{what}[{name!r}] lacks bits {lacking}; every layer needs every bit-width in {bits}")
        out[i] = [values[b] for b in bits]
    return out


def problem_from_dict(data: Mapping[str, Any]) -> Problem:
    """Build a :class:`Problem` from the problem file's JSON object."""
    if not isinstance(data, Mapping):
        raise ConfigError("a problem file must hold a JSON object")
    for key in ("layers", "bits", "objective"):
        if key not in data:
            raise ConfigError(f"problem file lacks the required key {key!r}; required: layers, bits, objective")
    layers = data["layers"]
    if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers) or not layers:
        raise ConfigError("'layers' must be a non-empty list of layer names")
    bits = list(check_bits(data["bits"], what="'bits'"))
    unary = _table(data["objective"], layers, bits, "'objective'")
    pairs = []
    for k, p in enumerate(data.get("pairs") or []):
        if not (isinstance(p, list) and len(p) == 5):
            raise ConfigError(f"'pairs'[{k}] must be [layer, bits, layer, bits, value], got {p!r}")
        try:
            pairs.append((str(p[0]), int(p[1]), str(p[2]), int(p[3]), float(p[4])))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"'pairs'[{k}] = {p!r}: {exc}") from exc
    costs = {name: _table(t, layers, bits, f"'costs'[{name!r}]") for name, t in (data.get("costs") or {}).items()}
    budgets = _numbers(data.get("budgets"), "'budgets'", "{cost name: limit}", float)
    pins = _numbers(data.get("pins"), "'pins'", "{layer or pattern: bits}", int)
    ties = data.get("ties") or []
    if not isinstance(ties, list) or not all(isinstance(g, list) and all(isinstance(x, str) for x in g) for g in ties):
        raise ConfigError(f'\'ties\' must be a list of lists of layer names, e.g. [["fc1", "fc2"]], got {ties!r}')
    objective = Objective(layers=layers, bits=bits, unary=unary, pairs=pairs)
    return Problem(objective=objective, costs=costs, budgets=budgets, pins=pins, ties=ties)


def _numbers(raw: Any, what: str, shape: str, kind: type) -> dict[str, Any]:
    """An object of numbers from the file, or a :class:`ConfigError` naming the bad entry."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{what} must be an object {shape}, got {type(raw).__name__}")
    out = {}
    for key, value in raw.items():
        # bool is an int in Python; true/false is never a limit or a bit-width.
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and kind is int:
            ok = float(value).is_integer()
        if not ok:
            noun = "an integer" if kind is int else "a number"
            raise ConfigError(f"{what}[{key!r}] = {value!r} is not {noun}")
        out[str(key)] = kind(value)
    return out


def load_problem(path: str | Path) -> Problem:
    """Read a problem file; errors name the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"problem file {str(path)!r} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"problem file {str(path)!r} is not valid JSON: {exc}") from exc
    try:
        return problem_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"problem file {str(path)!r}: {exc}") from exc


def problem_to_dict(problem: Problem) -> dict[str, Any]:
    layers, bits = list(problem.layers), list(problem.bits)

    def table(arr: np.ndarray) -> dict:
        return {name: {str(b): float(arr[i, j]) for j, b in enumerate(bits)} for i, name in enumerate(layers)}

    out: dict[str, Any] = {"layers": layers, "bits": bits, "objective": table(problem.objective.unary)}
    if problem.objective.pairs:
        out["pairs"] = [[a, ba, c, bc, v] for (a, ba, c, bc), v in problem.objective.pairs.items()]
    out["costs"] = {name: table(arr) for name, arr in problem.costs.items()}
    out["budgets"] = dict(problem.budgets)
    if problem.pins:
        out["pins"] = dict(problem.pins)
    ties = problem.all_ties
    if ties:
        out["ties"] = [list(g) for g in ties]
    return out


def dump_problem(problem: Problem, path: str | Path) -> None:
    Path(path).write_text(json.dumps(problem_to_dict(problem), indent=1))


# ---------------------------------------------------------------------------
# Pins and ties
# ---------------------------------------------------------------------------


def validate_problem(problem: Problem) -> None:
    """Check ``problem`` again (a :class:`Problem` checks itself when it is built)."""
    problem.validate()


def resolve_pins(problem: Problem) -> dict[str, int]:
    """Expand the problem's pin patterns to ``{fqn: bits}``."""
    return problem.pinned()


@attrs.define
class ReducedProblem:
    """The problem over groups of tied layers, with pins as allowed-choice masks.

    Every solver works on this form: ``groups[g]`` lists layer indices that share one
    choice; ``allowed[g, j]`` says whether group ``g`` may take ``bits[j]``; ``unary``
    and ``costs`` are summed over each group's members; ``pairs[(g, j, h, k)]`` with
    ``g < h`` are pair terms between groups (pairs inside a group fold into ``unary``).
    """

    problem: Problem
    groups: list[list[int]]
    allowed: np.ndarray
    unary: np.ndarray
    costs: dict[str, np.ndarray]
    pairs: dict[tuple[int, int, int, int], float]

    @property
    def n_groups(self) -> int:
        return len(self.groups)

    @property
    def n_bits(self) -> int:
        return len(self.problem.bits)

    def expand(self, choice) -> dict[str, int]:
        """``{fqn: bits}`` from one bit index per group."""
        out: dict[str, int] = {}
        for g, members in enumerate(self.groups):
            for i in members:
                out[self.problem.layers[i]] = self.problem.bits[int(choice[g])]
        return {name: out[name] for name in self.problem.layers}

    def objective_of(self, choice) -> float:
        choice = np.asarray(choice, dtype=int)
        value = float(self.unary[np.arange(self.n_groups), choice].sum())
        for (g, j, h, k), v in self.pairs.items():
            if choice[g] == j and choice[h] == k:
                value += v
        return value

    def costs_of(self, choice) -> dict[str, float]:
        choice = np.asarray(choice, dtype=int)
        return {name: float(arr[np.arange(self.n_groups), choice].sum()) for name, arr in self.costs.items()}


def reduce_problem(problem: Problem) -> ReducedProblem:
    """Merge ties (the problem's and the objective's) and apply pins."""
    layers, bits = problem.layers, problem.bits
    index = {name: i for i, name in enumerate(layers)}
    parent = list(range(len(layers)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for group in problem.all_ties:  # names checked when the problem was built
        for first, second in itertools.pairwise(group):
            ra, rb = find(index[first]), find(index[second])
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    roots: dict[int, int] = {}
    groups: list[list[int]] = []
    group_of = np.empty(len(layers), dtype=int)
    for i in range(len(layers)):
        r = find(i)
        if r not in roots:
            roots[r] = len(groups)
            groups.append([])
        groups[roots[r]].append(i)
        group_of[i] = roots[r]

    G, B = len(groups), len(bits)
    pins = problem.pinned()
    allowed = np.ones((G, B), dtype=bool)
    for name, b in pins.items():
        g = group_of[index[name]]
        mask = np.zeros(B, dtype=bool)
        mask[bits.index(b)] = True
        if not (allowed[g] & mask).any():
            tied = [layers[i] for i in groups[g]]
            raise InfeasibleError(f"layers {tied} are tied but pinned to different bit-widths")
        allowed[g] &= mask

    def fold(arr: np.ndarray) -> np.ndarray:
        out = np.zeros((G, B))
        np.add.at(out, group_of, arr)
        return out

    unary = fold(problem.objective.unary)
    costs = {name: fold(arr) for name, arr in problem.costs.items()}
    bpos = {b: j for j, b in enumerate(bits)}
    pairs: dict[tuple[int, int, int, int], float] = {}
    for (a, ba, c, bc), v in problem.objective.pairs.items():
        g, h, j, k = group_of[index[a]], group_of[index[c]], bpos[ba], bpos[bc]
        if g == h:
            if j == k:
                unary[g, j] += v
            continue  # a tied group never takes two different bit-widths
        if g > h:
            g, h, j, k = h, g, k, j
        key = (int(g), j, int(h), k)
        pairs[key] = pairs.get(key, 0.0) + v
    pairs = {k: v for k, v in pairs.items() if v != 0.0}
    return ReducedProblem(problem, groups, allowed, unary, costs, pairs)


# ---------------------------------------------------------------------------
# Costs and feasibility
# ---------------------------------------------------------------------------


def allocation_costs(problem: Problem, bits_of: Mapping[str, int]) -> dict[str, float]:
    bpos = {b: j for j, b in enumerate(problem.bits)}
    cols = np.array([bpos[int(bits_of[name])] for name in problem.layers])
    rows = np.arange(len(problem.layers))
    return {name: float(arr[rows, cols].sum()) for name, arr in problem.costs.items()}


def allocation_violations(problem: Problem, bits_of: Mapping[str, int]) -> list[str]:
    """Every budget, pin and tie the allocation breaks, as readable lines (empty when valid).

    A budget is met within :func:`mpqcore.constraints.within_budget`'s tolerance, the
    one every built-in solver uses.
    """
    out = []
    missing = [n for n in problem.layers if n not in bits_of]
    if missing:
        return [f"no bit-width for layers {missing[:5]}"]
    bad = {n: b for n, b in bits_of.items() if b not in problem.bits}
    if bad:
        out.append(f"bit-widths outside the candidates {list(problem.bits)}: {bad}")
        return out
    costs = allocation_costs(problem, bits_of)
    for name, limit in problem.budgets.items():
        if not within_budget(costs[name], limit):
            out.append(f"budget {name!r}: cost {costs[name]:g} > limit {limit:g}")
    for name, b in problem.pinned().items():
        if bits_of[name] != b:
            out.append(f"pin {name}={b} broken: got {bits_of[name]}")
    for group in problem.all_ties:
        if len({bits_of[n] for n in group}) > 1:
            out.append(f"tie {list(group)} broken: {[bits_of[n] for n in group]}")
    return out


def cheapest_costs(reduced: ReducedProblem) -> dict[str, float]:
    """Each cost table's least achievable total, respecting pins and ties (each alone)."""
    out = {}
    for name, arr in reduced.costs.items():
        masked = np.where(reduced.allowed, arr, np.inf)
        out[name] = float(masked.min(axis=1).sum())
    return out


def check_budgets_reachable(reduced: ReducedProblem) -> None:
    """Raise :class:`InfeasibleError` when some budget is below its cheapest achievable cost."""
    budgets = dict(reduced.problem.budgets)
    cheapest = cheapest_costs(reduced)
    short = {n: b for n, b in budgets.items() if not within_budget(cheapest[n], b)}
    if short:
        parts = [f"{n}: asked <= {b:g}, cheapest achievable {cheapest[n]:g}" for n, b in short.items()]
        raise InfeasibleError(
            "no allocation meets the budget ("
            + "; ".join(parts)
            + "). Raise the budget, unpin layers or add lower bit-widths.",
            cheapest={n: cheapest[n] for n in budgets},
            budgets=budgets,
        )


def raise_jointly_infeasible(reduced: ReducedProblem, solver: str) -> None:
    """Raise the error for budgets reachable one by one but not together."""
    budgets = dict(reduced.problem.budgets)
    cheapest = cheapest_costs(reduced)
    parts = [f"{n}: asked <= {b:g}, cheapest alone {cheapest[n]:g}" for n, b in budgets.items()]
    raise InfeasibleError(
        f"solver {solver!r}: no allocation meets all budgets together (" + "; ".join(parts) + ")",
        cheapest={n: cheapest[n] for n in budgets},
        budgets=budgets,
    )
