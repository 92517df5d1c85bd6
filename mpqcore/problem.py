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
import math
import sys
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from mpqcore.constraints import budget_slack, expand_pins, within_budget
from mpqcore.errors import ConfigError, InfeasibleError, MpqError, PluginError
from mpqcore.files import atomic_write_json
from mpqcore.types import Allocation, Objective, Problem, check_bits, check_width

__all__ = [
    "ReducedProblem",
    "allocation_costs",
    "allocation_violations",
    "cheapest_costs",
    "check_allocation",
    "check_budgets_reachable",
    "check_magnitudes",
    "dump_problem",
    "expand_pins",
    "load_problem",
    "problem_from_dict",
    "problem_to_dict",
    "raise_jointly_infeasible",
    "reduce_problem",
    "resolve_pins",
    "run_solver",
    "validate_problem",
]


# ---------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------


#: JSON numbers as :mod:`json` reads them; ``bool`` (``true``) is deliberately not one.
_NUMBER_TYPES = (int, float)


def _number(value: Any, where: str, *, nonnegative: bool = False) -> float:
    """One number of the file as a float, or a :class:`ConfigError` naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, _NUMBER_TYPES):
        why = " (true/false is a boolean)" if isinstance(value, bool) else ""
        raise ConfigError(f"{where} = {value!r} is not a number{why}; give a JSON number")
    try:
        number = float(value)
    except OverflowError:
        digits = int(int(value).bit_length() * math.log10(2)) + 1  # only an int overflows float()
        raise ConfigError(
            f"{where} is an integer of about {digits} digits, beyond the largest float ({sys.float_info.max:.3g})"
        ) from None
    if not math.isfinite(number):
        raise ConfigError(f"{where} = {value!r} is not finite; give a finite number")
    if nonnegative and number < 0:
        raise ConfigError(f"{where} = {value!r} is negative; costs and limits are >= 0")
    return number


def _row(row: Any, keys: list[str], bits: list[int], where: str) -> list[Any]:
    """A table row's raw values in the order of ``bits`` (keys ``"4"``; ``"04"`` is read too)."""
    if not isinstance(row, Mapping):
        raise ConfigError(f"{where} must be an object {{bits: value}}, got {type(row).__name__}")
    try:
        return [row[k] for k in keys]
    except KeyError:
        pass
    by_bits: dict[int, Any] = {}
    for key, value in row.items():
        try:
            by_bits[int(key)] = value
        except (TypeError, ValueError):
            raise ConfigError(
                f'{where} has key {key!r}, which is not a bit-width; keys are bit-widths like "4"'
            ) from None
    lacking = [b for b in bits if b not in by_bits]
    if lacking:
        raise ConfigError(f"{where} lacks bits {lacking}; every layer needs every bit-width in {bits}")
    return [by_bits[b] for b in bits]


def _table(
    raw: Any, layers: list[str], known: set[str], bits: list[int], what: str, *, nonnegative: bool = False
) -> np.ndarray:
    """A ``{layer: {bits: value}}`` object as a ``[layer, bits]`` array.

    Linear in its size: layer names are looked up in ``known`` (a set), and the numbers
    are checked once as a whole array; only a bad table is walked entry by entry, to name
    the first bad entry.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{what} must be an object {{layer: {{bits: value}}}}, got {type(raw).__name__}")
    missing = [name for name in layers if name not in raw]
    if missing:
        raise ConfigError(f"{what} has no entry for layers {missing[:5]}")
    if len(raw) != len(layers):
        unknown = [name for name in raw if name not in known]
        raise ConfigError(f"{what} names layers not in 'layers': {unknown[:5]}")
    keys = [str(b) for b in bits]
    rows = [_row(raw[name], keys, bits, f"{what}[{name!r}]") for name in layers]
    flat = [v for r in rows for v in r]
    # type() (not isinstance) on purpose: bool is an int subclass, and true is not a number
    if all(type(v) is float or type(v) is int for v in flat):
        try:
            out = np.array(rows, dtype=float).reshape(len(layers), len(bits))
        except OverflowError:  # an integer beyond the float range: named below
            out = None
        if out is not None and np.all(np.isfinite(out)) and not (nonnegative and np.any(out < 0)):
            return out
    for name, r in zip(layers, rows, strict=True):  # the slow path names the first bad entry
        for b, value in zip(bits, r, strict=True):
            _number(value, f'{what}[{name!r}]["{b}"]', nonnegative=nonnegative)
    raise AssertionError("unreachable: some entry failed the array check")  # pragma: no cover


def _layers(data: Mapping[str, Any]) -> list[str]:
    layers = data["layers"]
    if not isinstance(layers, list) or not layers or not all(isinstance(x, str) for x in layers):
        raise ConfigError("'layers' must be a non-empty list of layer names (strings)")
    if len(set(layers)) != len(layers):
        dup = [n for n, count in Counter(layers).items() if count > 1]
        raise ConfigError(f"'layers' names some layers more than once: {dup[:5]}; list each layer once")
    return layers


def _pairs(raw: Any) -> list[tuple[str, int, str, int, float]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(f"'pairs' must be a list of [layer, bits, layer, bits, value], got {type(raw).__name__}")
    out = []
    for k, p in enumerate(raw):
        if not (isinstance(p, list) and len(p) == 5):
            raise ConfigError(f"'pairs'[{k}] must be [layer, bits, layer, bits, value], got {p!r}")
        a, ba, c, bc, v = p
        if not (isinstance(a, str) and isinstance(c, str)):
            raise ConfigError(f"'pairs'[{k}] = {p!r}: the layers (items 0 and 2) must be layer names (strings)")
        out.append(
            (
                a,
                check_width(ba, what=f"'pairs'[{k}][1]"),
                c,
                check_width(bc, what=f"'pairs'[{k}][3]"),
                _number(v, f"'pairs'[{k}][4]"),
            )
        )
    return out


def problem_from_dict(data: Mapping[str, Any]) -> Problem:
    """Build a :class:`Problem` from the problem file's JSON object.

    Every entry is checked (numbers are JSON numbers, ``true`` is not; costs and limits
    are finite and >= 0; widths are integers 1..16), and the work is linear in the
    file's size.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"a problem file must hold a JSON object, got a JSON {type(data).__name__}")
    for key in ("layers", "bits", "objective"):
        if key not in data:
            raise ConfigError(f"problem file lacks the required key {key!r}; required: layers, bits, objective")
    layers = _layers(data)
    known = set(layers)
    bits = list(check_bits(data["bits"], what="'bits'"))
    unary = _table(data["objective"], layers, known, bits, "'objective'")
    pairs = _pairs(data.get("pairs"))
    raw_costs = data.get("costs") or {}
    if not isinstance(raw_costs, Mapping):
        raise ConfigError(f"'costs' must be an object {{cost name: table}}, got {type(raw_costs).__name__}")
    costs = {
        name: _table(t, layers, known, bits, f"'costs'[{name!r}]", nonnegative=True) for name, t in raw_costs.items()
    }
    budgets = _numbers(data.get("budgets"), "'budgets'", "{cost name: limit}", float)
    pins = _numbers(data.get("pins"), "'pins'", "{layer or pattern: bits}", int)
    ties = data.get("ties") or []
    if not isinstance(ties, list) or not all(isinstance(g, list) and all(isinstance(x, str) for x in g) for g in ties):
        raise ConfigError(f'\'ties\' must be a list of lists of layer names, e.g. [["fc1", "fc2"]], got {ties!r}')
    objective = Objective(layers=layers, bits=bits, unary=unary, pairs=pairs)
    problem = Problem(objective=objective, costs=costs, budgets=budgets, pins=pins, ties=ties)
    check_magnitudes(problem)
    return problem


def _numbers(raw: Any, what: str, shape: str, kind: type) -> dict[str, Any]:
    """An object of numbers from the file (limits, or widths), or a :class:`ConfigError` naming the bad entry."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{what} must be an object {shape}, got {type(raw).__name__}")
    if kind is int:
        return {str(key): check_width(value, what=f"{what}[{key!r}]") for key, value in raw.items()}
    return {str(key): _number(value, f"{what}[{key!r}]", nonnegative=True) for key, value in raw.items()}


#: The smallest positive budget limit: below it the budget tolerance (1e-9, absolute
#: below 1) is more than 0.1% of the limit, and the budget no longer means what it says.
SMALLEST_LIMIT = 1e-6


def check_magnitudes(problem: Problem) -> None:
    """Refuse tables whose sums over the layers leave the float range, and limits too small to hold.

    Every solver adds one entry per layer (and the pair terms); a sum beyond
    ``sys.float_info.max`` (about 1.8e308) is ``inf`` and no longer compares. Inside that
    range the built-in solvers take any finite value: ``highs`` scales the objective and
    each budget row by a power of two before HiGHS sees them (HiGHS itself treats costs
    and bounds from 1e20 on as infinite and refuses matrix entries above 1e15). A positive
    budget limit below :data:`SMALLEST_LIMIT` is refused: the budget tolerance would swamp it.
    """
    tables = {"objective": problem.objective.unary, **{f"cost table {n!r}": t for n, t in problem.costs.items()}}
    for what, arr in tables.items():
        if not arr.size:
            continue
        with np.errstate(over="ignore"):
            worst = float(np.abs(arr).max(axis=1).sum())
            if what == "objective" and problem.objective.pairs:
                worst += float(np.abs(np.fromiter(problem.objective.pairs.values(), dtype=float)).sum())
        if not math.isfinite(worst):
            biggest = float(np.abs(arr).max())
            raise ConfigError(
                f"{what}: values up to {biggest:.3g} over {arr.shape[0]} layers sum beyond the largest float "
                f"({sys.float_info.max:.3g}); divide the table by a constant (and its budget with it) so that "
                f"the largest entry times the number of layers stays below {sys.float_info.max:.3g}"
            )
    for name, limit in problem.budgets.items():
        if 0 < abs(limit) < SMALLEST_LIMIT:
            raise ConfigError(
                f"budget {name!r} = {limit:g} is below {SMALLEST_LIMIT:g}: mpq meets a budget within "
                f"{budget_slack(limit):g} (mpqcore.constraints.budget_slack, absolute below 1), which is "
                f"{100 * budget_slack(limit) / abs(limit):.2g}% of this limit; express the costs in a smaller unit "
                f"(multiply the cost table and its budget by the same factor) so the limit is at least {SMALLEST_LIMIT:g}"
            )


def load_problem(path: str | Path) -> Problem:
    """Read a problem file; errors name the file and what is wrong with it."""
    path = Path(path)
    name = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"problem file {name!r} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"problem file {name!r} is a directory; give the path of a JSON file") from None
    except PermissionError:
        raise ConfigError(f"problem file {name!r} cannot be read: permission denied") from None
    except OSError as exc:
        raise ConfigError(f"problem file {name!r} cannot be read: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark is tolerated
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"problem file {name!r} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "a problem file is JSON, saved as UTF-8"
        ) from None
    if not text.strip():
        raise ConfigError(f"problem file {name!r} is empty; a problem file holds one JSON object")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"problem file {name!r} is not valid JSON: {exc}") from exc
    except RecursionError:
        raise ConfigError(f"problem file {name!r} nests arrays or objects too deeply to read") from None
    except ValueError as exc:  # an integer literal beyond Python's digit limit
        raise ConfigError(f"problem file {name!r} cannot be read as JSON: {exc}") from None
    try:
        return problem_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"problem file {name!r}: {exc}") from exc


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
    """Write ``problem`` as a problem file, atomically (a reader sees the old file or the whole new one)."""
    atomic_write_json(path, problem_to_dict(problem))


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


#: The statuses an :class:`~mpqcore.types.Allocation` may carry.
STATUSES = ("optimal", "time_limit", "heuristic")

#: How far a solver's reported objective or cost may be from the core's own sum
#: (relative, at least absolute below 1): summing in another order differs by ~1e-15.
_REPORT_RTOL = 1e-6


def _agrees(reported: float, actual: float) -> bool:
    return abs(reported - actual) <= _REPORT_RTOL * max(1.0, abs(actual))


def check_allocation(
    problem: Problem, allocation: Any, *, solver: str, where: str, plugin: str | None = None
) -> Allocation:
    """The solver's answer, checked before anything uses it, or a :class:`PluginError` naming ``where``.

    ``solver`` is the solver's name and ``where`` the plugin it comes from in words (a
    registry entry's ``.where``); ``plugin`` goes to the error's ``.plugin``. Checked:
    it is an :class:`Allocation`; it gives every layer of the problem a width and names no
    other layer; every width is a candidate; every budget (at
    :func:`mpqcore.constraints.within_budget`'s tolerance), pin and tie holds; the status
    is one of :data:`STATUSES`, the gap is not NaN or negative, and the objective and
    costs it reports are the problem's own sums at these widths (within 1e-6, relative).
    Returned with the cost tables it left out filled in, and ``solver`` set if empty.
    """
    head = f"solver {solver!r} ({where})"

    def fail(what: str) -> PluginError:
        return PluginError(f"{head} returned an allocation that {what}", plugin=plugin)

    if not isinstance(allocation, Allocation):
        shown = repr(allocation)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise PluginError(
            f"{head} returned a {type(allocation).__name__} ({shown}), not an mpqcore.Allocation; "
            "a solver's solve(problem) returns Allocation(bits={layer: bits}, objective=..., costs=...)",
            plugin=plugin,
        )
    bits_of = allocation.bits
    layers = problem.layers
    known = set(layers)
    missing = [n for n in layers if n not in bits_of]
    if missing:
        raise fail(f"gives no bit-width to {len(missing)} of the {len(layers)} layers, e.g. {missing[:5]}")
    unknown = [n for n in bits_of if n not in known]
    if unknown:
        raise fail(f"names layers that are not in the problem: {unknown[:5]}; its layers: {list(layers)[:10]}")
    candidates = set(problem.bits)
    off = {n: b for n, b in bits_of.items() if b not in candidates}
    if off:
        first = dict(itertools.islice(off.items(), 5))
        raise fail(f"uses bit-widths that are not candidates: {first}; candidates: {list(problem.bits)}")
    broken = allocation_violations(problem, bits_of)
    if broken:
        raise fail("breaks the problem's constraints: " + "; ".join(broken[:5]))
    if allocation.status not in STATUSES:
        raise fail(f"has status {allocation.status!r}; valid: {', '.join(STATUSES)}")
    if math.isnan(allocation.gap) or allocation.gap < 0:
        raise fail(f"has gap {allocation.gap!r}; a gap is >= 0 (0 when proven optimal, inf when unknown)")
    actual = problem.objective.value(bits_of)
    if not _agrees(allocation.objective, actual):
        raise fail(f"reports objective {allocation.objective!r}, but the problem's objective at its bits is {actual!r}")
    costs = allocation_costs(problem, bits_of)
    wrong = {n: (v, costs[n]) for n, v in allocation.costs.items() if n in costs and not _agrees(v, costs[n])}
    if wrong:
        parts = [f"{n}: reported {v!r}, actual {c!r}" for n, (v, c) in wrong.items()]
        raise fail("reports costs that are not the tables' sums at its bits (" + "; ".join(parts) + ")")
    extra = [n for n in allocation.costs if n not in costs]
    if extra:
        raise fail(f"reports costs {extra} that the problem has no table for; tables: {sorted(costs)}")
    if set(allocation.costs) != set(costs) or not allocation.solver:
        allocation = attrs.evolve(allocation, costs={**costs, **allocation.costs}, solver=allocation.solver or solver)
    return allocation


def run_solver(problem: Problem, impl: Any, *, solver: str, where: str, plugin: str | None = None) -> Allocation:
    """``impl.solve(problem)``, its answer checked by :func:`check_allocation`, its faults named.

    A solver's own :class:`~mpqcore.errors.MpqError` (an infeasible budget, a problem too
    large) passes through, a :class:`ConfigError` prefixed with the solver's name and
    ``where`` unless it starts with them; any other exception is a :class:`PluginError` naming the solver
    and ``where``, with the exception chained. ``solve_time`` is measured when the solver
    left it at 0.
    """
    started = time.perf_counter()
    try:
        allocation = impl.solve(problem)
    except ConfigError as exc:  # the solver refuses this problem (or built a malformed Allocation): say whose words
        if str(exc).startswith(f"solver {solver!r}"):
            raise
        raise ConfigError(f"solver {solver!r} ({where}): {exc}") from exc
    except MpqError:
        raise
    except Exception as exc:
        raise PluginError(f"solver {solver!r} ({where}) raised {type(exc).__name__}: {exc}", plugin=plugin) from exc
    allocation = check_allocation(problem, allocation, solver=solver, where=where, plugin=plugin)
    if not allocation.solve_time:
        allocation = attrs.evolve(allocation, solve_time=time.perf_counter() - started)
    return allocation


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
        parts = [f"{n}: asked <= {_fig(n, b)}, cheapest achievable {_fig(n, cheapest[n])}" for n, b in short.items()]
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
    parts = [f"{n}: asked <= {_fig(n, b)}, cheapest alone {_fig(n, cheapest[n])}" for n, b in budgets.items()]
    raise InfeasibleError(
        f"solver {solver!r}: no allocation meets all budgets together (" + "; ".join(parts) + ")",
        cheapest={n: cheapest[n] for n in budgets},
        budgets=budgets,
    )


def _fig(cost: str, value: float) -> str:
    """A cost figure for a message: the raw number, and at human scale for a built-in cost (``2e+07 bits (2.50 MB)``)."""
    from mpqcore.units import BUILTIN_UNITS, human

    unit = BUILTIN_UNITS.get(cost)
    return f"{value:g} {unit} ({human(value, unit)})" if unit else f"{value:g}"
