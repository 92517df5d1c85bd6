"""The interfaces that registered factories return, one per hook.

These are :class:`typing.Protocol` classes: an implementation needs no base class,
only the attributes and methods below.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from mpqcore.context import MeasureContext
    from mpqcore.exports.plan import ExportPlan
    from mpqcore.layer_kinds import WeightRef
    from mpqcore.quantizers import QuantizedTensor
    from mpqcore.types import Allocation, LayerInfo, Objective, Problem

__all__ = ["CostModel", "ExportFormat", "LayerKind", "Quantizer", "SensitivityMethod", "Solver", "TaskLike"]


@runtime_checkable
class SensitivityMethod(Protocol):
    """Measures how much each (layer, bits) choice costs in task quality."""

    def measure(self, ctx: MeasureContext) -> Objective:
        """Return an objective over ``ctx.layers`` x ``ctx.bits`` (lower is better)."""
        ...


@runtime_checkable
class Solver(Protocol):
    """Chooses one bit-width per layer minimizing the objective under the budgets."""

    def solve(self, problem: Problem) -> Allocation:
        """Return an allocation meeting every budget, pin and tie, or raise InfeasibleError."""
        ...


@runtime_checkable
class Quantizer(Protocol):
    """Turns a float weight into integer codes plus the affine map back to floats."""

    def quantize(self, weight: torch.Tensor, bits: int) -> QuantizedTensor:
        """Quantize ``weight`` at ``bits``; ``.dequantize()`` gives the fake-quantized copy."""
        ...


@runtime_checkable
class CostModel(Protocol):
    """The cost of one layer at one weight bit-width, in ``unit``."""

    unit: str

    def cost(self, layer: LayerInfo, bits: int) -> float:
        """Non-negative cost of ``layer`` at ``bits``."""
        ...


@runtime_checkable
class LayerKind(Protocol):
    """A family of modules: which it claims, the weight tensors it owns, their MACs (see :mod:`mpqcore.layer_kinds`)."""

    def matches(self, module: torch.nn.Module) -> bool:
        """Whether this kind claims ``module`` (a module claimed by two kinds is an error)."""
        ...

    def weights(self, module: torch.nn.Module) -> Sequence[WeightRef]:
        """The weight tensors of ``module`` this kind owns: attribute names and output-channel axes."""
        ...

    def macs(
        self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: Mapping[str, Any], output: Any
    ) -> Mapping[str, int]:
        """Multiply-accumulates of one call of ``module`` (its forward hook's view), per weight name.

        Names are attributes of ``module`` or dotted paths below it (``out_proj.weight``);
        the MACs of the whole batch, mpq divides by its size.
        """
        ...


@runtime_checkable
class TaskLike(Protocol):
    """A model, its calibration batches and a metric; :class:`mpqcore.Task` is one.

    ``loss`` (``None`` for the evaluator's default), ``metric_name`` and
    ``higher_is_better`` (the metric's direction: ``False`` for a perplexity) are read by
    the command line, so a task has them too; building a :class:`mpqcore.Task` gives all.
    """

    name: str
    model: Any
    calibration: Any
    metric: Callable[[Any], float]
    metric_name: str
    description: str
    loss: Callable[[Any, Any], Any] | None
    higher_is_better: bool


@runtime_checkable
class ExportFormat(Protocol):
    """Writes an export plan to a file a runtime loads, and loads it back (see :mod:`mpqcore.exports`)."""

    #: the file suffix the format writes (``.safetensors``, ``.onnx``, ``.pt``).
    suffix: str

    def check(self, plan: ExportPlan) -> None:
        """Raise :class:`mpqcore.ConfigError` naming what the format cannot store, before anything is written."""
        ...

    def write(self, plan: ExportPlan, path: Path) -> Mapping[str, Any]:
        """Write the export to ``path``; return its manifest (widths, containers, what was recorded)."""
        ...

    def load(self, plan: ExportPlan, path: Path) -> Any:
        """The written export, loaded back as a callable module (compared with ``plan.fake``)."""
        ...
