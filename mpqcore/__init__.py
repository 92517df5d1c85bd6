"""mpq: mixed-precision quantization, from sensitivity to allocation to report.

report = mpqcore.search(model, calibration, method="hawq", bits=(2, 4, 8),
                        budget=mpqcore.Budget.average_bits(4.0))
"""

from typing import Any

from mpqcore.batches import Supervised, supervised
from mpqcore.bias_correction import BiasCorrection
from mpqcore.context import MeasureContext
from mpqcore.errors import ConfigError, InfeasibleError, MethodError, MpqError, PluginError, ProblemTooLargeError
from mpqcore.evaluate import Evaluator
from mpqcore.exports import ExportResult, export, load_packed
from mpqcore.hookspecs import hookimpl
from mpqcore.introspect import introspect
from mpqcore.layout import Layout, layout_of
from mpqcore.metrics import lower_is_better
from mpqcore.plugins import PluginSet, get_plugins
from mpqcore.problem import dump_problem, load_problem, problem_from_dict, problem_to_dict, run_solver
from mpqcore.protocols import Solver, TaskLike
from mpqcore.quantizers import DEFAULT_QUANTIZER, QuantizedTensor
from mpqcore.report import Report
from mpqcore.search import Measurement, SweepPoint, apply, measure, search, search_problem, sweep
from mpqcore.tasks import Task
from mpqcore.types import Allocation, Budget, LayerInfo, ModelSpec, Objective, Problem


def solve(
    problem: Problem, solver: str | Solver = "auto", *, plugins: PluginSet | None = None, **options: Any
) -> Allocation:
    """Solve an allocation problem with the named solver or a solver instance (names from ``plugins``).

    The answer is checked before it is returned (:func:`mpqcore.problem.check_allocation`):
    a solver that misses a layer, uses a width that is not a candidate, breaks a budget,
    pin or tie, or returns no :class:`Allocation` is a :class:`PluginError` naming its plugin.
    """
    if not isinstance(problem, Problem):
        raise ConfigError(
            f"solve() takes an mpqcore.Problem, got {type(problem).__name__}; "
            "build one with mpqcore.load_problem(path) or mpqcore.problem_from_dict(data)"
        )
    registry = (plugins or get_plugins()).solvers
    name, impl = registry.resolve(solver, options)
    if name in registry and (isinstance(solver, str) or registry.get(name).factory is type(impl)):
        entry = registry.get(name)
        where, plugin = entry.where, entry.plugin
    else:
        where, plugin = f"the {type(impl).__module__}.{type(impl).__qualname__} given", None
    return run_solver(problem, impl, solver=name, where=where, plugin=plugin)


def load_task(name: str, *, plugins: PluginSet | None = None, **options: Any) -> TaskLike:
    """Build a registered task (``digits-cnn``, ...) by name (from ``plugins``, default the installed set)."""
    return (plugins or get_plugins()).tasks.create(name, **options)


__all__ = [
    "DEFAULT_QUANTIZER",
    "Allocation",
    "BiasCorrection",
    "Budget",
    "ConfigError",
    "Evaluator",
    "ExportResult",
    "InfeasibleError",
    "LayerInfo",
    "Layout",
    "MeasureContext",
    "Measurement",
    "MethodError",
    "ModelSpec",
    "MpqError",
    "Objective",
    "PluginError",
    "PluginSet",
    "Problem",
    "ProblemTooLargeError",
    "QuantizedTensor",
    "Report",
    "Supervised",
    "SweepPoint",
    "Task",
    "apply",
    "dump_problem",
    "export",
    "get_plugins",
    "hookimpl",
    "introspect",
    "layout_of",
    "load_packed",
    "load_problem",
    "load_task",
    "lower_is_better",
    "measure",
    "problem_from_dict",
    "problem_to_dict",
    "search",
    "search_problem",
    "solve",
    "supervised",
    "sweep",
]
