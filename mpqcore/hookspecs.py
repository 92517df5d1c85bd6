"""The hooks a plugin implements. Bodies are docstrings only.

Every hook receives a typed :class:`~mpqcore.registry.Registry` and adds named factories
to it; the registry checks each product against the kind's Protocol when it is created.
Hooks are called through pluggy, so ``wrapper=True``, ``tryfirst`` and ``trylast``
implementations behave as pluggy documents. The user then picks an implementation by name, so the choice never depends on the
order in which plugins load. The interfaces the factories must return are in
:mod:`mpqcore.protocols`; ``docs/hooks/`` has a page per hook with a working example.

Hooks grow only by new keyword arguments: pluggy lets an implementation accept fewer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from mpqcore.protocols import (
        CostModel,
        ExportFormat,
        LayerKind,
        Quantizer,
        SensitivityMethod,
        Solver,
        TaskLike,
    )
    from mpqcore.registry import Registry

#: The pluggy project name, also the entry point group.
NAME = "mpqcore"

hookspec = pluggy.HookspecMarker(NAME)
hookimpl = pluggy.HookimplMarker(NAME)


@hookspec
def mpq_register_methods(registry: Registry[SensitivityMethod]) -> None:
    """Register sensitivity methods.

    Call ``registry.add(name, factory)``; ``factory(**options)`` returns an object with
    ``measure(ctx: MeasureContext) -> Objective`` (see
    :class:`mpqcore.protocols.SensitivityMethod`). A method reaches the model only
    through ``ctx.evaluator``; it never copies or quantizes the model itself.
    """


@hookspec
def mpq_register_solvers(registry: Registry[Solver]) -> None:
    """Register allocation solvers.

    ``factory(**options)`` returns an object with ``solve(problem: Problem) ->
    Allocation`` (see :class:`mpqcore.protocols.Solver`). It must honour every budget,
    pin and tie of the problem, or raise :class:`mpqcore.InfeasibleError`.
    """


@hookspec
def mpq_register_quantizers(registry: Registry[Quantizer]) -> None:
    """Register weight quantizers.

    ``factory(**options)`` returns an object with ``quantize(weight: Tensor, bits: int)
    -> QuantizedTensor`` (see :class:`mpqcore.protocols.Quantizer`).
    """


@hookspec
def mpq_register_cost_models(registry: Registry[CostModel]) -> None:
    """Register cost models.

    ``factory(**options)`` returns an object with ``cost(layer: LayerInfo, bits: int)
    -> float`` and a ``unit`` string (see :class:`mpqcore.protocols.CostModel`).
    """


@hookspec
def mpq_register_tasks(registry: Registry[TaskLike]) -> None:
    """Register tasks: a model, its calibration batches and a metric.

    ``factory(**options)`` returns a :class:`mpqcore.tasks.Task`. Tasks make demos,
    tests and benchmarks reproducible; they must not download anything at run time.
    """


@hookspec
def mpq_register_layer_kinds(registry: Registry[LayerKind]) -> None:
    """Register layer kinds: families of modules whose weights mpq quantizes.

    ``factory(**options)`` returns an object with ``matches(module) -> bool``,
    ``weights(module) -> Sequence[WeightRef]`` and ``macs(module, args, kwargs, output)
    -> Mapping[str, int]`` (see :class:`mpqcore.protocols.LayerKind`). Every registered
    kind is active; a module two kinds claim is an error naming both plugins.
    """


@hookspec
def mpq_register_export_formats(registry: Registry[ExportFormat]) -> None:
    """Register export formats: files a runtime loads, written from a quantized model.

    ``factory(**options)`` returns an object with ``suffix``, ``check(plan)``,
    ``write(plan, path) -> manifest`` and ``load(plan, path) -> module`` (see
    :class:`mpqcore.protocols.ExportFormat`); :func:`mpqcore.export` builds the
    :class:`~mpqcore.exports.plan.ExportPlan` and checks every export on reload.
    """
