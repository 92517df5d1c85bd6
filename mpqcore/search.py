"""One search end to end: introspect, measure, solve, apply, evaluate, report.

:func:`search` is the entry point; :func:`measure` stops after the measurement and
gives the allocation problem (the problem file's content) so that it can be solved
again under other budgets; :func:`sweep` measures once and solves for many budgets.
"""

from __future__ import annotations

import copy
import inspect
import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
import numpy as np
import torch
from torch import nn

from mpqcore import activations
from mpqcore.bias_correction import AUTO, GUARD, BiasCorrection, check_choice, check_policy, write_bias
from mpqcore.cache_limits import check_cache_max_bytes
from mpqcore.constraints import check_ties, expand_pins, within_budget
from mpqcore.context import MeasureContext
from mpqcore.costs import bind_quantizer, cost_table, with_activation_widths
from mpqcore.errors import ConfigError, InfeasibleError, MethodError, MpqError, PluginError
from mpqcore.evaluate import Evaluator, closed_on_failure
from mpqcore.frozen import FrozenDict, freeze
from mpqcore.introspect import excluded_layers, find_layers
from mpqcore.layer_kinds import bake, quantize_along
from mpqcore.measurement_cache import MeasurementCache, code_digest, open_cache, settings_digest
from mpqcore.naming import suggest
from mpqcore.plugins import PluginSet, get_plugins
from mpqcore.preflight import (
    check_act_bits,
    check_callable,
    check_device,
    check_model,
    check_seed,
    check_weight_cache_bytes,
    checked_metric,
)
from mpqcore.problem import allocation_costs, check_budgets_reachable, reduce_problem, run_solver
from mpqcore.protocols import CostModel, Quantizer, SensitivityMethod, Solver
from mpqcore.quantizers import DEFAULT_QUANTIZER
from mpqcore.report import Report, versions
from mpqcore.types import Allocation, Budget, ModelSpec, Objective, Problem, check_bits
from mpqcore.verify import (
    HELD_OUT_FRACTION,
    BiasTrial,
    check_guard_options,
    check_held_out,
    held_out_evaluator,
    split_calibration,
    uniform_candidates,
    uniform_costs_compared,
    verify,
)
from mpqcore.workers import check_workers

__all__ = ["Measurement", "apply", "measure", "search", "search_problem", "sweep"]


_DEFAULT_BUDGET = Budget.average_bits(4.0)


def _progress(enabled: bool) -> Callable[..., Iterable]:
    from mpqcore.progress import progress_factory  # a bar on a terminal, plain lines in a log

    return progress_factory(enabled)


def _budgets(budget: Budget | Sequence[Budget] | None) -> list[Budget]:
    if budget is None:
        return []
    if isinstance(budget, Budget):
        items = [budget]
    elif isinstance(budget, (list, tuple)):
        items = list(budget)
    else:
        raise ConfigError(
            f"budget must be a mpqcore.Budget (e.g. Budget.average_bits(4)) or a list of them, got {budget!r}"
        )
    for b in items:
        if not isinstance(b, Budget):
            raise ConfigError(f"budget must be a mpqcore.Budget (e.g. Budget.average_bits(4)), got {type(b).__name__}")
    return items


def _canonical(spec: ModelSpec) -> dict[str, str]:
    """Every alias of a tied layer (GPT-2's ``lm_head`` for ``transformer.wte``) -> its layer's name."""
    return {alias: layer.fqn for layer in spec.layers for alias in layer.names if alias != layer.fqn}


def _resolve_pins(pins: Mapping[str, int] | None, spec: ModelSpec, bits: tuple[int, ...]) -> dict[str, int]:
    canonical = _canonical(spec)
    named = {canonical.get(k, k): v for k, v in (pins or {}).items()}  # a pin may name any alias
    return expand_pins(named, spec.fqns, bits, noun="quantizable layer")


def _check_ties(ties: Sequence[Sequence[str]] | None, spec: ModelSpec) -> tuple[tuple[str, ...], ...]:
    canonical = _canonical(spec)
    if ties is not None and not isinstance(ties, str):
        ties = [[canonical.get(n, n) for n in g] if not isinstance(g, str) else g for g in ties]
    return check_ties(ties, spec.fqns)


def _budget_limits(
    budgets: Sequence[Budget], spec: ModelSpec, problem: Problem, models: Mapping[str, Any]
) -> dict[str, float]:
    """Each budgeted cost's limit (the tightest of its budgets) in the cost model's unit."""
    layers = spec.layers
    params = [layer.params for layer in layers]
    limits: dict[str, float] = {}
    for b in budgets:

        def total(bits: int, model: Any = models[b.cost]) -> float:
            return float(sum(model.cost(layer, bits) for layer in layers))

        # Budget.resolve is the one rule; the cost model covers reference bits not tabled.
        fixed = _fixed_cost(models[b.cost], layers)
        value = b.resolve(problem.costs[b.cost], problem.bits, params, cost_at=total, fixed=fixed)
        limits[b.cost] = min(value, limits.get(b.cost, np.inf))
    return limits


def _fixed_cost(model: Any, layers: Sequence[Any]) -> float:
    """The cost no width changes: the stored metadata a ``size`` cost counts (0 for other costs)."""
    metadata = getattr(model, "metadata", None)
    return float(sum(metadata(layer) for layer in layers)) if callable(metadata) else 0.0


def _check_feasible(problem: Problem) -> None:
    """Raise :class:`InfeasibleError` now, before measuring, when no allocation can meet the budgets.

    Pins against ties and each budget against its cheapest allocation are checked
    directly; several budgets together by a feasibility solve (zero objective).
    """
    reduced = reduce_problem(problem)
    check_budgets_reachable(reduced)
    for name, limit in problem.budgets.items():
        dearest = float(np.where(reduced.allowed, reduced.costs[name], -np.inf).max(axis=1).sum())
        if limit > dearest and not within_budget(limit, dearest):
            warnings.warn(
                f"the budget on {name!r} ({limit:g}) is above the dearest allocation ({dearest:g}): it never "
                "binds, so every layer may take the highest width; was a smaller budget meant?",
                UserWarning,
                stacklevel=4,
            )
    if len(problem.budgets) > 1 and not _one_cheapest_allocation(reduced):
        from mpqcore.solvers.highs import HighsSolver

        HighsSolver(time_limit=10.0).solve(problem)  # raises InfeasibleError; a time-out proves nothing


def _one_cheapest_allocation(reduced: Any) -> bool:
    """Whether one allocation is the cheapest under every budgeted cost at once.

    Then each budget met alone (checked above) means all are met together and no
    feasibility solve is needed; that is the case whenever every cost grows with the
    width (size, BOPs), since the lowest allowed width of each group is cheapest for all.
    """
    names = list(reduced.problem.budgets)
    choices = [np.where(reduced.allowed, reduced.costs[n], np.inf).argmin(axis=1) for n in names]
    return all(np.array_equal(choices[0], c) for c in choices[1:])


def _check_any_feasible(
    problem: Problem, budgets: Sequence[Budget], spec: ModelSpec, models: Mapping[str, Any]
) -> None:
    """Raise :class:`InfeasibleError` when not one of ``budgets`` (each alone) can be met."""
    reasons = []
    for b in budgets:
        try:
            _check_feasible(attrs.evolve(problem, budgets=_budget_limits([b], spec, problem, models)))
        except InfeasibleError as exc:
            reasons.append(f"{b.describe()}: {exc}")
        else:
            return
    raise InfeasibleError("no budget of the sweep can be met: " + " | ".join(reasons))


def _budget_tuple(budgets: Iterable[Budget]) -> tuple[Budget, ...]:
    return tuple(budgets)


@attrs.frozen(eq=False)
class Measurement:
    """A measured allocation problem and what produced it."""

    problem: Problem
    spec: ModelSpec
    objective: Objective
    evaluator: Evaluator
    budgets: tuple[Budget, ...] = attrs.field(converter=_budget_tuple)
    pins: Mapping[str, int] = attrs.field(converter=freeze)
    method: str
    method_options: Mapping[str, Any] = attrs.field(converter=freeze)
    quantizer: str
    quantizer_options: Mapping[str, Any] = attrs.field(converter=freeze)
    cost: str
    seed: int
    timings: Mapping[str, float] = attrs.field(converter=freeze)
    #: The cost model instances (with their options) that built the problem's tables.
    cost_models: Mapping[str, Any] = attrs.field(factory=dict, converter=FrozenDict)
    #: Forward passes the method itself made (the evaluator's total also counts the
    #: core's reference pass over the calibration data and, later, evaluations).
    measure_forward_passes: int = 0
    #: The quantizer instance that measured (apply uses the very same one).
    quantizer_impl: Any = None
    #: The float model's input means that corrected the biases (``None``: no bias correction).
    bias_correction: BiasCorrection | None = None
    #: Whether the objective was read back from the measurement cache.
    objective_from_cache: bool = False

    def cache_info(self) -> dict[str, Any]:
        """The report's ``cache`` entry: where, how many values were read back and stored, and the
        other models' directories ``cache_max_bytes`` removed."""
        cache = self.evaluator.cache
        if cache is None:
            return {}
        return {
            "directory": str(cache.directory),
            "hits": cache.hits,
            "stored": cache.stored,
            "objective_from_cache": self.objective_from_cache,
            "pruned": list(cache.pruned),
        }

    def with_budgets(self, budgets: Sequence[Budget], cost_models: Mapping[str, Any] | None = None) -> Problem:
        """The measured problem under ``budgets`` instead (no new measurement).

        A budget may only bound a cost that was tabled when measuring (``cost=`` and
        the budgets given to :func:`measure`, plus ``size``); the same cost model
        instances, with their options, turn relative and average-bits budgets into limits.
        """
        models = {**self.cost_models, **bind_quantizer(cost_models or {}, self.quantizer_impl)}
        budgets = _budgets(list(budgets))
        missing = sorted({b.cost for b in budgets if b.cost not in self.problem.costs or b.cost not in models})
        if missing:
            raise ConfigError(
                f"budgets on {missing} have no cost table in the measured problem; tables: {sorted(self.problem.costs)}. "
                "Name the cost when measuring (cost=... or a budget on it)"
            )
        return attrs.evolve(self.problem, budgets=_budget_limits(budgets, self.spec, self.problem, models))


#: The order of the arguments that used to be positional (after model, calibration).
_LEGACY_MEASURE = ("method", "bits", "budget")
_LEGACY_SEARCH = (
    "method",
    "bits",
    "budget",
    "metric",
    "quantizer",
    "cost",
    "solver",
    "pins",
    "ties",
    "seed",
    "inplace",
)
_LEGACY_SWEEP = ("method", "bits", "budgets", "metric")


def _legacy(func: str, args: tuple[Any, ...], names: tuple[str, ...], given: dict[str, Any]) -> dict[str, Any]:
    """Map the old positional form (``search(model, calib, "hawq", (2, 4, 8), budget)``) onto keywords."""
    if not args:
        return {}
    if len(args) > len(names):
        raise ConfigError(
            f"{func}() takes model and calibration positionally and at most {len(names)} more in the old "
            f"order ({', '.join(names)}); got {len(args)} more. Pass options by keyword, e.g. method='hawq'"
        )
    out = dict(zip(names, args, strict=False))
    both = sorted(n for n in out if n in given)
    if both:
        raise ConfigError(f"{func}() got {both} both by position and by keyword; pass them by keyword only")
    warnings.warn(
        f"{func}(model, calibration, {', '.join(out)}) by position is deprecated; pass "
        f"{', '.join(f'{n}=...' for n in out)} by keyword",
        DeprecationWarning,
        stacklevel=3,
    )
    return out


def measure(
    model: nn.Module,
    calibration: Iterable[Any],
    *legacy: Any,
    method: str | SensitivityMethod = "hawq",
    bits: Sequence[int] = (2, 4, 8),
    budget: Budget | Sequence[Budget] | None = None,
    quantizer: str | Quantizer = DEFAULT_QUANTIZER,
    cost: str = "size",
    pins: Mapping[str, int] | None = None,
    ties: Sequence[Sequence[str]] | None = None,
    seed: int = 0,
    metric: Callable[[nn.Module], float] | None = None,
    loss: Callable[[Any, Any], torch.Tensor] | None = None,
    act_bits: int | Mapping[str, int] | None = None,
    method_options: Mapping[str, Any] | None = None,
    quantizer_options: Mapping[str, Any] | None = None,
    cost_options: Mapping[str, Mapping[str, Any]] | None = None,
    cost_models: Mapping[str, CostModel] | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
    exclude: Sequence[str] | None = None,
    plugins: PluginSet | None = None,
    bias_correction: bool | str = False,
    cache: bool | str | os.PathLike[str] | MeasurementCache | None = None,
    cache_max_bytes: int | str | None = None,
    inplace: bool = False,
    workers: int | None = None,
    ray_address: str | None = None,
    weight_cache_bytes: int | None = None,
) -> Measurement:
    """Introspect ``model`` and measure its sensitivity with ``method``; solve nothing.

    Everything after ``model, calibration`` is keyword-only, the same names as in
    :func:`search` and :func:`sweep`. ``method`` and ``quantizer`` are a registered
    name (configured by ``method_options`` / ``quantizer_options``) or a ready
    instance; ``cost_models`` adds cost model instances by name beside the registered
    ones named by ``cost`` and the budgets. ``cache`` (a directory, ``True`` for the
    default one under the mpq cache directory, or ``None``) keeps every evaluation and
    the objective on disk (:mod:`mpqcore.measurement_cache`): a rerun measures only what
    is missing; ``cache_max_bytes`` (bytes, or ``"500MB"``; default ``$MPQ_CACHE_MAX_SIZE``)
    bounds the measurements directory, removing other models' least recently used
    directories when the cache opens (:mod:`mpqcore.cached_models`). ``inplace=True``
    measures on ``model`` itself rather than a copy (no second copy in memory; every evaluation puts the float weights back, and the
    evaluator's ``close()`` the modules' training flags). ``workers=N`` scores batches
    of evaluations on N Ray actors (``ray_address``: a running cluster; default a local
    one), with the single-process values (:mod:`mpqcore.workers`).
    ``weight_cache_bytes`` bounds the memory of the quantized weights kept for reuse
    (one-byte codes and dequantized tensors; the least recently used dequantized ones
    dropped first; ``None``: all kept); values do not change.
    ``bias_correction`` (``True``, or a policy of :mod:`mpqcore.bias_correction`)
    measures with corrected biases.
    """
    if legacy:
        given = {"method": method, "bits": bits, "budget": budget}
        explicit = {k for k, v in given.items() if v is not _MEASURE_DEFAULTS[k]}
        mapped = _legacy("measure", legacy, _LEGACY_MEASURE, {k: given[k] for k in explicit})
        method, bits, budget = mapped.get("method", method), mapped.get("bits", bits), mapped.get("budget", budget)
    return _measure(
        model,
        calibration,
        method=method,
        bits=bits,
        budget=budget,
        quantizer=quantizer,
        cost=cost,
        pins=pins,
        ties=ties,
        seed=seed,
        metric=metric,
        loss=loss,
        act_bits=act_bits,
        method_options=method_options,
        quantizer_options=quantizer_options,
        cost_options=cost_options,
        cost_models=cost_models,
        device=device,
        progress=progress,
        plugins=plugins,
        exclude=exclude,
        bias_correction=bias_correction,
        cache=cache,
        cache_max_bytes=cache_max_bytes,
        inplace=inplace,
        workers=workers,
        ray_address=ray_address,
        weight_cache_bytes=weight_cache_bytes,
        budgets_together=True,
    )


@closed_on_failure
def _measure(
    model: nn.Module,
    calibration: Iterable[Any],
    *,
    method: str | SensitivityMethod,
    bits: Sequence[int],
    budget: Budget | Sequence[Budget] | None,
    quantizer: str | Quantizer,
    cost: str,
    pins: Mapping[str, int] | None,
    ties: Sequence[Sequence[str]] | None,
    seed: int,
    metric: Callable[[nn.Module], float] | None,
    loss: Callable[[Any, Any], torch.Tensor] | None,
    act_bits: int | Mapping[str, int] | None,
    method_options: Mapping[str, Any] | None,
    quantizer_options: Mapping[str, Any] | None,
    cost_options: Mapping[str, Mapping[str, Any]] | None,
    cost_models: Mapping[str, CostModel] | None,
    device: str | torch.device | None,
    progress: bool,
    plugins: PluginSet | None,
    exclude: Sequence[str] | None,
    budgets_together: bool,
    bias_correction: bool | str = False,
    cache: bool | str | os.PathLike[str] | MeasurementCache | None = None,
    cache_max_bytes: int | str | None = None,
    inplace: bool = False,
    workers: int | None = None,
    ray_address: str | None = None,
    weight_cache_bytes: int | None = None,
) -> Measurement:
    """:func:`measure`'s work; ``budgets_together=False`` (a sweep) checks each budget alone before measuring."""
    plugins = plugins or get_plugins()
    model = check_model(model)
    bits = check_bits(bits)
    budgets = _budgets(budget)
    seed = check_seed(seed)
    act_bits = check_act_bits(act_bits)
    device = check_device(device)
    check_policy(bias_correction)
    check_callable(loss, "loss", "(outputs, batch) -> Tensor")
    metric = checked_metric(metric)
    method_name, method_impl = plugins.methods.resolve(method, method_options)
    quantizer_name, quantizer_impl = plugins.quantizers.resolve(quantizer, quantizer_options)
    cost_names = list(dict.fromkeys(["size", cost] + [b.cost for b in budgets]))
    models: dict[str, Any] = {}
    for name in cost_names:
        given_model = (cost_models or {}).get(name)
        if given_model is not None:
            models[name] = plugins.cost_models.check(given_model, head=f"cost model {name!r} given")
        else:
            models[name] = plugins.cost_models.create(name, **dict((cost_options or {}).get(name, {})))
    models = bind_quantizer(models, quantizer_impl)  # sizes count the quantizer's scales and zero points
    timings: dict[str, float] = {}
    check_workers(workers, ray_address)
    check_weight_cache_bytes(weight_cache_bytes)
    max_bytes = check_cache_max_bytes(cache_max_bytes)
    store = open_cache(cache, model, max_bytes=max_bytes)  # a directory that cannot be used is said before any work

    t0 = time.perf_counter()
    evaluator = Evaluator(
        model, calibration, None, quantizer_impl, loss=loss, metric=metric, act_bits=act_bits, device=device,
        exclude=exclude, plugins=plugins, cache=store, inplace=inplace, workers=workers, ray_address=ray_address,
        bias_correction=bias_correction, weight_cache_bytes=weight_cache_bytes,
    )  # fmt: skip
    spec = evaluator.spec
    fixed = _resolve_pins(pins, spec, bits)
    user_ties = _check_ties(ties, spec)
    decision = tuple(f for f in spec.fqns if f not in fixed)
    models = with_activation_widths(models, cost_options, evaluator.act_bits_of)
    tables = {name: cost_table(m, spec, bits, name=name) for name, m in models.items()}
    if budgets:  # an impossible budget, or a tie against a pin, is found before measuring
        unmeasured = _full_problem(None, spec, bits, tables, fixed, user_ties)
        if budgets_together:
            _check_feasible(attrs.evolve(unmeasured, budgets=_budget_limits(budgets, spec, unmeasured, models)))
        else:
            _check_any_feasible(unmeasured, budgets, spec, models)
    timings["introspect"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    # Run the float model on every calibration batch before the method does, so a
    # batch the model cannot take is reported as the user's data problem, by index.
    evaluator.float_outputs()
    rows = [spec.fqns.index(f) for f in decision]
    ctx = MeasureContext(
        evaluator=evaluator, spec=spec, layers=decision, bits=bits, fixed=fixed, seed=seed, progress=_progress(progress),
        costs={name: t[rows] for name, t in tables.items()}, cost=budgets[0].cost if budgets else cost,
    )  # fmt: skip
    plugin = plugins.methods.get(method_name).plugin if method_name in plugins.methods else type(method_impl).__module__
    passes_before = evaluator.forward_passes
    torch.manual_seed(seed)
    objective: Objective | None = None
    objective_key = _objective_key(evaluator, method_name, method_impl, ctx) if store is not None else ""
    cached = store.get(objective_key) if store is not None and decision else None
    if isinstance(cached, Objective):
        objective = cached
    elif decision:
        try:
            objective = method_impl.measure(ctx)
        except PluginError:
            raise  # a plugin's fault, already named (the method's, or a quantizer's it called)
        except Exception as exc:
            what = str(exc) if isinstance(exc, MpqError) else f"raised {type(exc).__name__}: {exc}"
            raise MethodError(f"method {method_name!r} (plugin {plugin!r}) {what}", plugin=plugin) from exc
        objective = _check_objective(objective, ctx, method_name, plugin)
        if store is not None:
            store.put(objective_key, objective)
    # else every layer is pinned: nothing to measure
    timings["measure"] = time.perf_counter() - t0

    problem = _full_problem(objective, spec, bits, tables, fixed, user_ties)
    measurement = Measurement(
        problem=problem,
        spec=spec,
        objective=objective if objective is not None else problem.objective,
        evaluator=evaluator,
        budgets=tuple(budgets),
        pins=fixed,
        method=method_name,
        method_options=dict(method_options or {}),
        quantizer=quantizer_name,
        quantizer_options=dict(quantizer_options or {}),
        cost=cost,
        seed=seed,
        timings=timings,
        cost_models=models,
        measure_forward_passes=evaluator.forward_passes - passes_before,
        quantizer_impl=quantizer_impl,
        bias_correction=evaluator.bias_correction,
        objective_from_cache=cached is not None,
    )
    if budgets and budgets_together:
        problem = measurement.with_budgets(budgets, models)
        measurement = attrs.evolve(measurement, problem=problem)
    return measurement


_MEASURE_DEFAULTS: dict[str, Any] = {
    name: p.default for name, p in inspect.signature(measure).parameters.items() if p.kind is p.KEYWORD_ONLY
}


def _objective_key(evaluator: Evaluator, method: str, impl: Any, ctx: MeasureContext) -> str:
    """The cache key of a method's objective: the evaluator's settings, the method (name,
    settings, its package's code and version, installed versions), and what it is asked (layers, bits, pins, seed, and the
    budget's cost table, which a method may scale by: eagl's ``scale="cost"``)."""
    table = ctx.costs.get(ctx.cost)
    return evaluator.cache_key(
        "objective",
        dict(ctx.fixed),
        method=method,
        settings=settings_digest(impl),
        code=code_digest(impl),
        layers=list(ctx.layers),
        bits=list(ctx.bits),
        seed=ctx.seed,
        versions=versions(),
        cost=[ctx.cost, None if table is None else table.tolist()],
    )


def _check_objective(objective: Any, ctx: MeasureContext, method: str, plugin: str) -> Objective:
    where = f"method {method!r} (plugin {plugin!r})"
    if not isinstance(objective, Objective):
        raise MethodError(f"{where} returned {type(objective).__name__}, expected mpqcore.Objective", plugin=plugin)
    if set(objective.layers) != set(ctx.layers) or len(objective.layers) != len(ctx.layers):
        extra = sorted(set(objective.layers) - set(ctx.layers))
        lacking = sorted(set(ctx.layers) - set(objective.layers))
        raise MethodError(
            f"{where} returned an objective over the wrong layers: missing {lacking[:5]}, unexpected {extra[:5]}",
            plugin=plugin,
        )
    if tuple(objective.bits) != tuple(ctx.bits):
        raise MethodError(f"{where} returned bits {list(objective.bits)}, expected {list(ctx.bits)}", plugin=plugin)
    try:
        objective.validate(source=where)
    except ConfigError as exc:
        raise MethodError(str(exc), plugin=plugin) from exc
    if tuple(objective.layers) != tuple(ctx.layers):  # reorder to forward order
        order = [objective.layers.index(f) for f in ctx.layers]
        objective = attrs.evolve(
            objective,
            layers=ctx.layers,
            unary=objective.unary[order],
            stderr=None if objective.stderr is None else objective.stderr[order],
        )
    return objective


def _full_problem(objective: Objective | None, spec: ModelSpec, bits, tables, fixed, user_ties) -> Problem:
    """The objective over every layer (pinned ones contribute 0) plus costs, pins and ties."""
    unary = np.zeros((len(spec.layers), len(bits)))
    pairs: dict = {}
    method_ties: tuple = ()
    info: dict = {}
    stderr = None
    if objective is not None:
        row = {f: i for i, f in enumerate(objective.layers)}
        for i, f in enumerate(spec.fqns):
            if f in row:
                unary[i] = objective.unary[row[f]]
        if objective.stderr is not None:
            stderr = np.zeros_like(unary)
            for i, f in enumerate(spec.fqns):
                if f in row:
                    stderr[i] = objective.stderr[row[f]]
        pairs = dict(objective.pairs)
        method_ties = objective.ties
        info = dict(objective.info)
    full = Objective(layers=spec.fqns, bits=bits, unary=unary, pairs=pairs, stderr=stderr, ties=method_ties, info=info)
    return Problem(objective=full, costs=tables, budgets={}, pins=fixed, ties=user_ties)


def search_problem(model: nn.Module, calibration: Iterable[Any], *args: Any, **kwargs: Any) -> Problem:
    """The measured allocation problem (the problem file's content) of :func:`measure`."""
    return measure(model, calibration, *args, **kwargs).problem


def apply(
    model: nn.Module,
    allocation: Allocation | Mapping[str, int],
    quantizer: str | Quantizer = DEFAULT_QUANTIZER,
    *,
    inplace: bool = False,
    quantizer_options: Mapping[str, Any] | None = None,
    exclude: Sequence[str] | None = None,
    plugins: PluginSet | None = None,
    bias_correction: BiasCorrection | None = None,
    act_bits: int | Mapping[str, int] | None = None,
) -> nn.Module:
    """The model with each layer's weight fake-quantized at its allocated bits.

    Returns a quantized copy unless ``inplace=True``. Layers absent from the allocation
    stay in float, and so do those ``exclude`` matches (fnmatch patterns, each matching
    some layer). A layer may be named by any of its aliases; two names of one tied
    tensor given different bits are an error. Each weight is quantized along its
    output-channel axis (its layer kind says which); one computed by a parametrization
    or a weight_norm hook becomes a plain Parameter holding its quantized value (see
    :func:`mpqcore.layer_kinds.bake`). Every weight is quantized before the first is
    written, so a bad allocation or a failing quantizer leaves the model as it was.

    ``bias_correction`` (a :class:`mpqcore.BiasCorrection`, e.g. ``report.bias_correction``)
    also writes each corrected layer's bias: the float bias minus the expected output
    shift of its quantized weight (a layer without a bias gets one under the policy
    ``"add"``), exactly the biases the search measured with.
    ``act_bits`` (as in :func:`search`) also fake-quantizes the inputs of the quantized
    layers, as the evaluator did (:mod:`mpqcore.activations`: a forward pre-hook).
    """
    plugins = plugins or get_plugins()
    _, impl = plugins.quantizers.resolve(quantizer, quantizer_options)
    # an Allocation checks every width (the one rule), also for a plain mapping
    bits_of = (allocation if isinstance(allocation, Allocation) else Allocation(allocation, 0.0)).bits
    chosen = _allocated_layers(find_layers(model, plugins)[0], bits_of, exclude)
    if bias_correction is not None:
        if not isinstance(bias_correction, BiasCorrection):
            raise ConfigError(
                f"apply(bias_correction=...) takes the mpqcore.BiasCorrection a measurement made "
                f"(report.bias_correction), got {type(bias_correction).__name__}"
            )
        bias_correction.check_model({fqn: f.module for fqn, f in find_layers(model, plugins)[0].items()})
    act_of = activations.act_bits_per_layer(act_bits, chosen)
    target = model if inplace else copy.deepcopy(model)
    found = find_layers(target, plugins)[0]
    with torch.no_grad():
        quantized, biases = {}, {}
        for fqn, b in chosen.items():
            w = found[fqn].tensor().detach()
            quantized[fqn] = quantize_along(impl, w, b, found[fqn].ref.axis).dequantize().reshape(w.shape).to(w.dtype)
            if bias_correction is not None:
                module = found[fqn].module
                bias = getattr(module, "bias", None)
                biases[fqn] = bias_correction.corrected_bias(fqn, module, w, quantized[fqn], bias)
        for fqn, q in quantized.items():  # copied in: the Parameter (and every name tied to it) stays
            bake(found[fqn].module, found[fqn].ref.name).copy_(q)
        for fqn, bias in biases.items():
            if bias is not None:
                write_bias(found[fqn].module, bias)
    activations.install({fqn: found[fqn].modules for fqn in act_of}, act_of)
    return target


def _allocated_layers(
    found: Mapping[str, Any], bits_of: Mapping[str, Any], exclude: Sequence[str] | None
) -> dict[str, int]:
    """``{fqn: bits}`` of the layers to quantize: names resolved through aliases, exclusions dropped."""
    by_name = {name: f.fqn for f in found.values() for name in f.names}
    unknown = [n for n in bits_of if n not in by_name]
    if unknown:
        raise ConfigError(
            f"allocation names layers the model does not have: {unknown[:5]}{suggest(unknown[0], by_name)}"
        )
    chosen: dict[str, int] = {}
    named: dict[str, str] = {}
    for name, b in bits_of.items():
        fqn, bits = by_name[name], int(b)
        if chosen.get(fqn, bits) != bits:
            raise ConfigError(
                f"allocation gives {named[fqn]!r} {chosen[fqn]} bits and {name!r} {bits}, but they are one tied "
                "weight tensor (one layer); give every name of a tied layer the same bits, or name it once"
            )
        chosen[fqn], named[fqn] = bits, name
    skipped = excluded_layers(dict(found), () if exclude is None else exclude)
    return {fqn: b for fqn, b in chosen.items() if fqn not in skipped}


def _apply_all_or_nothing(
    model: nn.Module,
    allocation: Allocation,
    quantizer: str | Quantizer,
    quantizer_options: Mapping[str, Any] | None,
    plugins: PluginSet,
    act_bits: Mapping[str, int] | None = None,
    bias_correction: BiasCorrection | None = None,
) -> nn.Module:
    """:func:`apply` in place; on any failure every tensor of ``model`` is restored and the error re-raised.

    Only the weights apply writes are saved (not a copy of the whole model), unless a
    weight is computed (a parametrization): baking it changes more than that tensor.
    """
    by_name = {name: f for f in find_layers(model, plugins)[0].values() for name in f.names}
    state = model.state_dict(keep_vars=True)
    chosen = [by_name[n] for n in allocation.bits if n in by_name]
    if all(f.form == "parameter" and f.path in state for f in chosen):
        saved = {f.path: state[f.path].detach().clone() for f in chosen}
    else:
        saved = {name: t.detach().clone() for name, t in state.items()}
    try:
        return apply(
            model, allocation, quantizer, inplace=True, quantizer_options=quantizer_options, plugins=plugins,
            act_bits=act_bits, bias_correction=bias_correction,
        )  # fmt: skip
    except BaseException:
        with torch.no_grad():
            for name, tensor in model.state_dict(keep_vars=True).items():
                if name in saved:
                    tensor.copy_(saved[name])
        raise


def _uniform_reference(
    problem: Problem, bits: tuple[int, ...], pins: Mapping[str, int], allocation: Mapping[str, int] | None = None
) -> tuple[int, dict[str, int]]:
    """The highest uniform bit-width (pins kept) meeting every budget, else the lowest.

    Without budgets, the allocation's own size is the budget: uniform precision at the
    nearest cost not above it.
    """
    fitting = uniform_candidates(attrs.evolve(problem, pins=pins), allocation)  # dearest first
    if fitting:
        return fitting[0]
    b = bits[0]
    return b, {f: pins.get(f, b) for f in problem.layers}


def _on_device_of(model: nn.Module, reference: nn.Module) -> nn.Module:
    """``model`` moved to where ``reference``'s parameters are (the returned model stays where the user's was)."""
    first = next(iter(reference.parameters()), None)
    return model if first is None else model.to(first.device)


def _bias_trial_of(bias_correction: Any, guard: bool, measured: BiasCorrection | None = None) -> tuple[bool, Any]:
    """``(trial, what to measure with)`` for search's/sweep's ``bias_correction``, checked before any work.

    ``"guard"`` asks for the guard's trial (refused without the guard, or on a corrected
    measurement); ``"auto"`` (the default) is the trial when the guard is on and the measurement
    is uncorrected (``measured`` is a given measurement's correction), otherwise no correction
    beyond what a given measurement has.
    """
    choice = check_choice(bias_correction)
    if choice == AUTO:
        trial = guard and measured is None
        return trial, False
    if choice != GUARD:
        return False, bias_correction
    if not guard:
        raise ConfigError(
            "bias_correction='guard' lets the guard choose between the allocation with and without bias "
            "correction, so it needs guard=True; pass bias_correction=True (always) or False (never) without the guard"
        )
    if measured is not None:
        raise ConfigError(
            f"bias_correction='guard' needs a measurement made without bias correction (this one has policy "
            f"{measured.policy!r}); leave bias_correction out to keep the measurement's correction"
        )
    return True, False


def _bias_record(correction: BiasCorrection | None, asked: Any = False) -> dict[str, Any]:
    """``results["bias_correction"]`` when the guard did not try it: always on, or off."""
    if correction is None:
        why = (
            "bias_correction='auto' without the guard: off (nothing measures whether it helps)"
            if check_choice(asked) == AUTO
            else "bias_correction=False"
        )
        return {"mode": "off", "tried": False, "chosen": False, "why": why}
    return {"mode": "always", "tried": False, "chosen": True, "why": f"bias_correction={correction.policy!r}: always"}


def _held_out_of(meas: Measurement, split: Any, plugins: PluginSet) -> Any:
    """The guard's evaluator over the held-out batches, on the measuring evaluator's model (no copy)."""
    if split is None:
        return None
    ev = meas.evaluator
    return held_out_evaluator(
        ev.model, split, ev.quantizer, spec=meas.spec, loss=ev.user_loss, act_bits=ev.act_bits, device=ev.device,
        plugins=plugins, bias_correction=ev.bias_correction,  # the biases apply writes: one value for all
        weights_from=ev,  # one cache of quantized weights (and the user's bound on it) for both
    )  # fmt: skip


def _solve(problem: Problem, name: str, impl: Solver, plugins: PluginSet) -> Allocation:
    """Solve with ``impl``; its answer is checked (layers, widths, budgets, pins, ties) before use."""
    entry = plugins.solvers.get(name) if name in plugins.solvers else None
    where = entry.where if entry is not None else f"the solver given ({type(impl).__module__})"
    return run_solver(problem, impl, solver=name, where=where, plugin=entry.plugin if entry is not None else None)


def _evaluate(meas: Measurement, allocation: Allocation, uniform_reference: bool = True) -> dict[str, Any]:
    ev = meas.evaluator
    out: dict[str, Any] = {"loss": ev.loss(allocation.bits), "predicted": meas.problem.objective.value(allocation.bits)}
    if ev.has_metric:
        out["float_metric"] = ev.metric({})
        out["metric"] = ev.metric(allocation.bits)
        out["metric_higher_is_better"] = ev.metric_higher_is_better
    if uniform_reference:
        ub, assign = _uniform_reference(meas.problem, meas.problem.bits, meas.pins, allocation.bits)
        out["uniform_bits"] = ub
        out["uniform_costs"] = allocation_costs(meas.problem, assign)
        out.update(uniform_costs_compared(meas.problem, meas.spec, allocation.bits, ub, assign))
        out["uniform_loss"] = ev.loss(assign)
        if ev.has_metric:
            out["uniform_metric"] = ev.metric(assign)
    return out


@closed_on_failure
def search(
    model: nn.Module | None = None,
    calibration: Iterable[Any] | None = None,
    *legacy: Any,
    method: str | SensitivityMethod = "hawq",
    bits: Sequence[int] = (2, 4, 8),
    budget: Budget | Sequence[Budget] | None = _DEFAULT_BUDGET,
    metric: Callable[[nn.Module], float] | None = None,
    quantizer: str | Quantizer = DEFAULT_QUANTIZER,
    cost: str = "size",
    solver: str | Solver = "auto",
    pins: Mapping[str, int] | None = None,
    ties: Sequence[Sequence[str]] | None = None,
    seed: int = 0,
    inplace: bool = False,
    loss: Callable[[Any, Any], torch.Tensor] | None = None,
    act_bits: int | Mapping[str, int] | None = None,
    method_options: Mapping[str, Any] | None = None,
    solver_options: Mapping[str, Any] | None = None,
    quantizer_options: Mapping[str, Any] | None = None,
    cost_options: Mapping[str, Mapping[str, Any]] | None = None,
    cost_models: Mapping[str, CostModel] | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
    exclude: Sequence[str] | None = None,
    plugins: PluginSet | None = None,
    measurement: Measurement | None = None,
    bias_correction: bool | str = AUTO,
    cache: bool | str | os.PathLike[str] | MeasurementCache | None = None,
    cache_max_bytes: int | str | None = None,
    workers: int | None = None,
    ray_address: str | None = None,
    weight_cache_bytes: int | None = None,
    guard: bool = True,
    guard_candidates: int = 3,
    verify_on: str = "held-out",
    held_out: float = HELD_OUT_FRACTION,
    refine: int = 0,
    refine_evaluations: int | None = None,
) -> Report:
    """Choose per-layer weight bit-widths for ``model`` under ``budget``.

    Everything after ``model, calibration`` is keyword-only (the same names as
    :func:`measure`). ``method``, ``quantizer`` and ``solver`` are registered names or
    ready instances. Given ``measurement=`` (from :func:`measure`), nothing is measured
    again: the measured problem is solved under ``budget``, applied and evaluated;
    measuring options then must be left out or match the measurement's.

    The user's ``model`` comes back bit-for-bit unchanged unless ``inplace=True``, in
    which case its weights are replaced by their quantized copies at the end.
    ``report.model`` is the quantized model (a copy, or ``model`` itself when in place),
    with the corrected biases when ``bias_correction`` is on (``report.bias_correction``
    is the value that reproduces them through :func:`apply`).

    With ``guard=True`` (the default) the method measures on all but a ``held_out``
    share of the calibration, and the solved allocation is measured on that share
    against every uniform allocation within the budget and ``guard_candidates``
    neighbours along the budget; the best measured one is returned, so the result is
    never worse than uniform there (:mod:`mpqcore.verify`; ``verify_on="metric"``
    measures with the user's metric instead, ``"calibration"`` on the method's data).
    ``refine=N`` first corrects the objective with measured losses and re-solves, for
    up to ``N`` rounds and ``refine_evaluations`` evaluations. ``results["guard"]`` and
    ``results["refine"]`` say what was measured.
    """
    given: dict[str, Any] = {
        "method": method, "bits": bits, "budget": budget, "metric": metric, "quantizer": quantizer, "cost": cost,
        "solver": solver, "pins": pins, "ties": ties, "seed": seed, "inplace": inplace,
    }  # fmt: skip
    if legacy:
        explicit = {k: v for k, v in given.items() if v is not _SEARCH_DEFAULTS[k]}
        given.update(_legacy("search", legacy, _LEGACY_SEARCH, explicit))
        method, bits, budget, metric, quantizer, cost, solver, pins, ties, seed, inplace = (
            given[k] for k in _LEGACY_SEARCH
        )
    plugins = plugins or get_plugins()
    # No budget is allowed: a solver with its own rule needs none, and the
    # others then simply minimise the objective.
    budgets = _budgets(budget)
    check_guard_options(
        guard=guard, guard_candidates=guard_candidates, verify_on=verify_on, held_out=held_out, refine=refine,
        refine_evaluations=refine_evaluations,
    )  # fmt: skip
    trial, measure_bias = _bias_trial_of(
        bias_correction, guard, None if measurement is None else measurement.bias_correction
    )
    check_cache_max_bytes(cache_max_bytes)  # before the guard's held-out check runs the model
    solver_name, solver_impl = plugins.solvers.resolve(solver, solver_options)  # before measuring
    owned = measurement is None
    if (
        guard
        and verify_on == "metric"
        and metric is None
        and (measurement is None or not measurement.evaluator.has_metric)
    ):
        raise ConfigError(
            "verify_on='metric' needs a metric; pass metric=callable(model) -> float, or verify_on='held-out'"
        )
    split = None
    if measurement is None:
        if model is None or calibration is None:
            raise ConfigError("search needs a model and its calibration batches, or measurement= from mpqcore.measure")
        if guard and verify_on == "held-out":  # the method never sees the batches the guard measures on
            split = split_calibration(calibration, held_out)
            calibration = list(split.measure)
            check_held_out(
                check_model(model), split, plugins.quantizers.resolve(quantizer, quantizer_options)[1], loss=loss,
                act_bits=check_act_bits(act_bits), device=check_device(device), exclude=exclude, plugins=plugins,
            )  # fmt: skip
        meas = measure(
            model, calibration, method=method, bits=bits, budget=budgets, quantizer=quantizer, cost=cost, pins=pins,
            ties=ties, seed=seed, metric=metric, loss=loss, act_bits=act_bits, method_options=method_options,
            quantizer_options=quantizer_options, cost_options=cost_options, cost_models=cost_models, device=device,
            progress=progress, plugins=plugins, exclude=exclude, cache=cache, cache_max_bytes=cache_max_bytes,
            inplace=inplace, workers=workers,
            ray_address=ray_address, weight_cache_bytes=weight_cache_bytes,
            bias_correction=measure_bias,
        )  # fmt: skip
        timings = dict(meas.timings)
    else:
        _check_reuse(measurement, {
            "method": method, "bits": bits, "quantizer": quantizer, "cost": cost, "pins": pins, "ties": ties,
            "seed": seed, "metric": metric, "loss": loss, "act_bits": act_bits, "method_options": method_options,
            "quantizer_options": quantizer_options, "cost_options": cost_options, "device": device,
            "exclude": exclude, "bias_correction": bias_correction,
        })  # fmt: skip
        meas = attrs.evolve(measurement, problem=measurement.with_budgets(budgets, cost_models), budgets=tuple(budgets))
        timings = {"measure": 0.0}
        if inplace and model is None:
            raise ConfigError("inplace=True needs the model to quantize in place; pass it as the first argument")
    t0 = time.perf_counter()
    allocation = _solve(meas.problem, solver_name, solver_impl, plugins)
    timings["solve"] = time.perf_counter() - t0
    held = _held_out_of(meas, split, plugins)
    bias_trial = BiasTrial(meas, split, plugins=plugins) if trial else None
    try:
        allocation, verified, verify_timings = verify(
            meas, allocation, lambda p: _solve(p, solver_name, solver_impl, plugins), split=split, held=held,
            guard_on=guard, candidates=guard_candidates, verify_on=verify_on, rounds=refine,
            max_evaluations=refine_evaluations, bias_trial=bias_trial,
        )  # fmt: skip
    finally:
        if held is not None:  # before the measuring evaluator lets go of the model it works on
            held.close()
    timings.update(verify_timings)
    verified.setdefault("bias_correction", _bias_record(meas.bias_correction, bias_correction))
    correction = meas.bias_correction
    scorer = meas
    if bias_trial is not None and verified["bias_correction"]["chosen"]:
        correction = bias_trial.value
        scorer = attrs.evolve(meas, evaluator=bias_trial.measuring, bias_correction=correction)
    source = model if model is not None else meas.evaluator.model
    quantizer_choice = meas.quantizer_impl or meas.quantizer
    quantizer_options = None if meas.quantizer_impl is not None else meas.quantizer_options
    # Evaluate first, then apply: in place, the user's model is changed last (and put
    # back as it was if applying fails midway); otherwise a search that measured hands
    # its working copy over to be quantized, so no second copy of the model is made.
    t0 = time.perf_counter()
    try:
        results = _evaluate(scorer, allocation)
    finally:
        if bias_trial is not None:  # before the measuring evaluator lets go of the model
            bias_trial.close()
    timings["evaluate"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if inplace:
        if owned:
            meas.evaluator.release()  # its kept quantized weights go before applying
        quantized = _apply_all_or_nothing(
            source,
            allocation,
            quantizer_choice,
            quantizer_options,
            plugins,
            meas.evaluator.act_bits_of,
            correction,
        )
    elif owned:
        working = _on_device_of(meas.evaluator.release(), source)
        quantized = apply(
            working, allocation, quantizer_choice, inplace=True, quantizer_options=quantizer_options, plugins=plugins,
            act_bits=meas.evaluator.act_bits_of, bias_correction=correction,
        )  # fmt: skip
    else:
        quantized = apply(
            source, allocation, quantizer_choice, quantizer_options=quantizer_options, plugins=plugins,
            act_bits=meas.evaluator.act_bits_of, bias_correction=correction,
        )  # fmt: skip
    timings["apply"] = time.perf_counter() - t0
    results = {**results, **verified}
    return Report(
        allocation=allocation,
        spec=meas.spec,
        problem=meas.problem,
        budgets=tuple(budgets),
        method=meas.method,
        method_options=meas.method_options,
        solver=solver_name,
        quantizer=meas.quantizer,
        cost=meas.cost,
        results=results,
        objective_info=dict(meas.problem.objective.info),
        forward_passes=meas.evaluator.forward_passes,
        measure_forward_passes=meas.measure_forward_passes,
        evaluations=meas.evaluator.evaluations,
        cache=meas.cache_info(),
        timings=timings,
        seed=meas.seed,
        versions=versions(),
        model=quantized,
        bias_correction=correction,
        quantizer_options=meas.quantizer_options,
        act_bits=meas.evaluator.act_bits_of,
        cost_units={name: str(getattr(m, "unit", "") or "") for name, m in meas.cost_models.items()},
    )


_SEARCH_DEFAULTS: dict[str, Any] = {
    name: p.default for name, p in inspect.signature(search).parameters.items() if p.kind is p.KEYWORD_ONLY
}


def _check_reuse(meas: Measurement, given: Mapping[str, Any]) -> None:
    """Refuse measuring options that disagree with a measurement being reused."""
    measured = {
        "method": meas.method, "bits": tuple(meas.problem.bits), "quantizer": meas.quantizer, "cost": meas.cost,
        "seed": meas.seed, "method_options": meas.method_options, "quantizer_options": meas.quantizer_options,
        "bias_correction": None if meas.bias_correction is None else meas.bias_correction.policy,
    }  # fmt: skip
    clash = []
    metric = meas.evaluator.user_metric
    own = {"metric": getattr(metric, "__wrapped__", metric), "loss": meas.evaluator.user_loss}
    for name, value in given.items():
        if value is _SEARCH_DEFAULTS[name] or value is None:
            continue
        if name in own:
            if value is not own[name]:
                clash.append(f"{name}={value!r} (the measurement has {own[name]!r})")
            continue
        if name == "bits":
            value = check_bits(value)
        if name == "bias_correction" and check_choice(value) in (GUARD, AUTO):  # checked by _bias_trial_of
            continue
        if name == "bias_correction":
            value = check_policy(value)
        if name in ("method", "quantizer") and not isinstance(value, str):
            value = type(value).__name__ if value is not getattr(meas, f"{name}_impl", None) else measured[name]
        if name in ("method_options", "quantizer_options") and not value:
            continue
        if name not in measured or value != measured[name]:
            clash.append(f"{name}={value!r}" + (f" (measured with {measured[name]!r})" if name in measured else ""))
    if clash:
        raise ConfigError(
            f"search(measurement=...) solves the measured problem again; these measuring options would need a new "
            f"measurement: {', '.join(clash)}. Leave them out, or call mpqcore.measure with them"
        )


@attrs.frozen(eq=False)
class SweepPoint:
    """One budget of a sweep: its allocation and the measured results."""

    budget: Budget
    #: ``None`` when the budget cannot be met; ``error`` then says why.
    allocation: Allocation | None
    results: Mapping[str, Any] = attrs.field(converter=freeze)
    error: str = ""
    #: The bias correction the point's allocation is applied with (``mpqcore.apply(...,
    #: bias_correction=point.bias_correction)``); ``None`` when uncorrected.
    bias_correction: BiasCorrection | None = None


def sweep(
    model: nn.Module | None = None,
    calibration: Iterable[Any] | None = None,
    *legacy: Any,
    method: str | SensitivityMethod = "hawq",
    bits: Sequence[int] = (2, 4, 8),
    budgets: Sequence[Budget] = (),
    metric: Callable[[nn.Module], float] | None = None,
    solver: str | Solver = "auto",
    solver_options: Mapping[str, Any] | None = None,
    plugins: PluginSet | None = None,
    measurement: Measurement | None = None,
    guard: bool = True,
    guard_candidates: int = 3,
    verify_on: str = "held-out",
    held_out: float = HELD_OUT_FRACTION,
    **measure_options: Any,
) -> tuple[Measurement, list[SweepPoint]]:
    """Measure once (or reuse ``measurement=``), then solve and evaluate for each budget (a Pareto sweep).

    Keyword-only after ``model, calibration``; ``measure_options`` are :func:`measure`'s
    other keywords (quantizer, cost, pins, ...). The guard (as in :func:`search`) checks
    each point on the held-out calibration share; ``point.results["guard"]`` says what it measured.
    """
    if legacy:
        given = {"method": method, "bits": bits, "budgets": budgets, "metric": metric}
        explicit = {k: v for k, v in given.items() if v is not _SWEEP_DEFAULTS[k]}
        mapped = _legacy("sweep", legacy, _LEGACY_SWEEP, explicit)
        method, bits = mapped.get("method", method), mapped.get("bits", bits)
        budgets, metric = mapped.get("budgets", budgets), mapped.get("metric", metric)
    plugins = plugins or get_plugins()
    budget_list = _budgets(list(budgets))
    if not budget_list:
        raise ConfigError("sweep needs at least one budget")
    check_guard_options(
        guard=guard, guard_candidates=guard_candidates, verify_on=verify_on, held_out=held_out, refine=0,
        refine_evaluations=None,
    )  # fmt: skip
    asked = measure_options.get("bias_correction", AUTO)
    trial, measure_bias = _bias_trial_of(asked, guard, None if measurement is None else measurement.bias_correction)
    check_cache_max_bytes(measure_options.get("cache_max_bytes"))
    measure_options = {**measure_options, "bias_correction": measure_bias}
    solver_name, solver_impl = plugins.solvers.resolve(solver, solver_options)
    split = None
    if measurement is None:
        if model is None or calibration is None:
            raise ConfigError("sweep needs a model and its calibration batches, or measurement= from mpqcore.measure")
        # measured with every budget, so each budget's cost is tabled; each point then takes one
        unknown = sorted(set(measure_options) - set(_MEASURE_DEFAULTS) - {"budget"})
        if unknown:
            raise ConfigError(f"sweep got unknown options {unknown}; valid: {sorted(_MEASURE_DEFAULTS)}")
        options = {**_MEASURE_DEFAULTS, **measure_options}
        options.update(method=method, bits=bits, budget=budget_list, metric=metric, plugins=plugins)
        if guard and verify_on == "metric" and metric is None:
            raise ConfigError("verify_on='metric' needs a metric; pass metric=callable(model) -> float")
        if guard and verify_on == "held-out":
            split = split_calibration(calibration, held_out)
            calibration = list(split.measure)
            check_held_out(
                check_model(model), split, plugins.quantizers.resolve(options["quantizer"], options["quantizer_options"])[1],
                loss=options["loss"], act_bits=check_act_bits(options["act_bits"]), device=check_device(options["device"]),
                exclude=options["exclude"], plugins=plugins,
            )  # fmt: skip
        # every budget's cost is tabled; each is checked alone, so one impossible budget loses only its point
        meas = _measure(model, calibration, budgets_together=False, **options)
    else:
        meas = measurement
    held = _held_out_of(meas, split, plugins)
    bias_trial = BiasTrial(meas, split, plugins=plugins) if trial else None
    try:
        points = _sweep_points(meas, budget_list, solver_name, solver_impl, plugins, split, held, bias_trial, asked,
                               guard=guard, candidates=guard_candidates, verify_on=verify_on)  # fmt: skip
    finally:
        if bias_trial is not None:
            bias_trial.close()
        if held is not None:
            held.close()
    return meas, points


def _sweep_points(
    meas: Measurement, budget_list: Sequence[Budget], solver_name: str, solver_impl: Solver, plugins: PluginSet,
    split: Any, held: Any, bias_trial: BiasTrial | None, asked: Any, *, guard: bool, candidates: int, verify_on: str,
) -> list[SweepPoint]:  # fmt: skip
    """Each budget of :func:`sweep` solved, verified and evaluated on the one measurement."""
    points = []
    for b in budget_list:
        try:
            problem = meas.with_budgets([b])
            allocation = _solve(problem, solver_name, solver_impl, plugins)
        except InfeasibleError as exc:
            points.append(SweepPoint(b, None, {}, error=str(exc)))
            continue
        point_meas = attrs.evolve(meas, problem=problem)
        allocation, verified, _ = verify(
            point_meas, allocation, lambda p: _solve(p, solver_name, solver_impl, plugins), split=split, held=held,
            guard_on=guard, candidates=candidates, verify_on=verify_on, rounds=0, max_evaluations=None,
            bias_trial=bias_trial,
        )  # fmt: skip
        verified.setdefault("bias_correction", _bias_record(meas.bias_correction, asked))
        correction, scorer = meas.bias_correction, point_meas
        if bias_trial is not None and verified["bias_correction"]["chosen"]:
            correction = bias_trial.value
            scorer = attrs.evolve(point_meas, evaluator=bias_trial.measuring, bias_correction=correction)
        results = {**_evaluate(scorer, allocation, uniform_reference=False), **verified}
        points.append(SweepPoint(b, allocation, results, bias_correction=correction))
    return points


_SWEEP_DEFAULTS: dict[str, Any] = {
    name: p.default for name, p in inspect.signature(sweep).parameters.items() if p.kind is p.KEYWORD_ONLY
}
