"""mpq: mixed-precision quantization, from sensitivity to allocation to report.

report = mpqcore.search(model, calibration, method="hawq", bits=(2, 4, 8),
                        budget=mpqcore.Budget.average_bits(4.0))
"""

from __future__ import annotations

import sys as _sys
import types as _types
from typing import TYPE_CHECKING, Any

from mpqcore.errors import ConfigError, InfeasibleError, MethodError, MpqError, PluginError, ProblemTooLargeError
from mpqcore.hookspecs import hookimpl

if TYPE_CHECKING:
    from mpqcore.batches import Supervised, supervised
    from mpqcore.bias_correction import BiasCorrection
    from mpqcore.context import MeasureContext
    from mpqcore.evaluate import Evaluator
    from mpqcore.exports import ExportResult, export, load_packed
    from mpqcore.introspect import introspect
    from mpqcore.layout import Layout, layout_of
    from mpqcore.metrics import lower_is_better
    from mpqcore.plugins import PluginSet, get_plugins
    from mpqcore.problem import dump_problem, load_problem, problem_from_dict, problem_to_dict
    from mpqcore.protocols import Solver, TaskLike
    from mpqcore.quantizers import DEFAULT_QUANTIZER, QuantizedTensor
    from mpqcore.report import Report
    from mpqcore.search import Measurement, SweepPoint, apply, measure, search, search_problem, sweep
    from mpqcore.tasks import Task
    from mpqcore.types import Allocation, Budget, LayerInfo, ModelSpec, Objective, Problem

#: Public name -> the module that defines it. Imported on first use (PEP 562), so that
#: ``import mpqcore`` (and ``mpq --help``, ``mpq plugins``, ``mpq solve``) does not pay
#: for torch; ``from mpqcore import search`` works as before.
_LAZY: dict[str, str] = {
    "Supervised": "mpqcore.batches",
    "supervised": "mpqcore.batches",
    "BiasCorrection": "mpqcore.bias_correction",
    "MeasureContext": "mpqcore.context",
    "Evaluator": "mpqcore.evaluate",
    "ExportResult": "mpqcore.exports",
    "export": "mpqcore.exports",
    "load_packed": "mpqcore.exports",
    "introspect": "mpqcore.introspect",
    "Layout": "mpqcore.layout",
    "layout_of": "mpqcore.layout",
    "lower_is_better": "mpqcore.metrics",
    "PluginSet": "mpqcore.plugins",
    "get_plugins": "mpqcore.plugins",
    "dump_problem": "mpqcore.problem",
    "load_problem": "mpqcore.problem",
    "problem_from_dict": "mpqcore.problem",
    "problem_to_dict": "mpqcore.problem",
    "DEFAULT_QUANTIZER": "mpqcore.quantizers",
    "QuantizedTensor": "mpqcore.quantizers",
    "Report": "mpqcore.report",
    "Measurement": "mpqcore.search",
    "SweepPoint": "mpqcore.search",
    "apply": "mpqcore.search",
    "measure": "mpqcore.search",
    "search": "mpqcore.search",
    "search_problem": "mpqcore.search",
    "sweep": "mpqcore.search",
    "Task": "mpqcore.tasks",
    "Allocation": "mpqcore.types",
    "Budget": "mpqcore.types",
    "LayerInfo": "mpqcore.types",
    "ModelSpec": "mpqcore.types",
    "Objective": "mpqcore.types",
    "Problem": "mpqcore.types",
}


#: Public functions named as the module that defines them: importing the module must
#: not rebind ``mpqcore.search`` from the function to the module (as Python's import
#: system does for a submodule), so the package keeps the function.
_FUNCTION_OVER_MODULE = frozenset({"introspect", "search"})


class _Package(_types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        if name in _FUNCTION_OVER_MODULE and isinstance(value, _types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mpqcore' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def solve(
    problem: Problem, solver: str | Solver = "auto", *, plugins: PluginSet | None = None, **options: Any
) -> Allocation:
    """Solve an allocation problem with the named solver or a solver instance (names from ``plugins``).

    The answer is checked before it is returned (:func:`mpqcore.problem.check_allocation`):
    a solver that misses a layer, uses a width that is not a candidate, breaks a budget,
    pin or tie, or returns no :class:`Allocation` is a :class:`PluginError` naming its plugin.
    """
    from mpqcore.plugins import get_plugins
    from mpqcore.problem import run_solver
    from mpqcore.types import Problem

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
    from mpqcore.plugins import get_plugins

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
