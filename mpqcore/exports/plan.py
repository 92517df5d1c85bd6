"""What an export format receives and returns: the plan of one export and its checked result.

An :class:`ExportPlan` holds everything a format writes: the float model, the
fake-quantized model :func:`mpqcore.apply` built from it (activation quantization
included), and per quantized layer its integer codes, scale and zero point from
:func:`mpqcore.layer_kinds.quantize_along` (:class:`PlannedLayer`). A format turns it into
files and loads them back as a runnable module; :func:`mpqcore.export` compares that
module with the fake-quantized one and returns an :class:`ExportResult`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from mpqcore.frozen import freeze
from mpqcore.layout import Layout
from mpqcore.quantizers import QuantizedTensor

__all__ = ["ExportPlan", "ExportResult", "PlannedLayer", "dequantized", "group_size_of"]


def group_size_of(q: QuantizedTensor) -> int | None:
    """The group size of a grouped result (codes ``[C, K]``, scales ``[C, ceil(K/g)]``), else ``None``."""
    g = getattr(q, "group_size", None)
    return None if g is None else int(g)


def dequantized(
    codes: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    weight_shape: tuple[int, ...],
    axis: int,
    group_size: int | None,
) -> torch.Tensor:
    """``(codes - zero_point) * scale`` in the weight's shape: what :meth:`QuantizedTensor.dequantize` computes.

    A grouped result (``group_size``) holds the channel-first view ``[C, K]`` of the weight
    with its output-channel ``axis`` moved first; its per-group scales are spread over
    their ``group_size`` elements before the same two operations.
    """
    if group_size is None:
        return ((codes.to(scale.dtype) - zero_point) * scale).reshape(weight_shape)
    k = int(codes.shape[1])

    def spread(t: torch.Tensor) -> torch.Tensor:
        return t if t.dim() == 0 else t.repeat_interleave(group_size, dim=1)[:, :k]

    flat = (codes.to(scale.dtype) - spread(zero_point)) * spread(scale)
    moved = (weight_shape[axis], *(n for i, n in enumerate(weight_shape) if i != axis))
    return flat.reshape(moved).movedim(0, axis)


@attrs.frozen(eq=False)
class PlannedLayer:
    """One quantized weight: where it lives, its width and its quantization."""

    fqn: str
    #: the module holding it (dotted name) and the weight's attribute there.
    module_name: str
    param: str
    layer_kind: str
    module_class: str
    axis: int
    bits: int
    weight_shape: tuple[int, ...]
    quantized: QuantizedTensor
    #: every state-dict key of the fake-quantized model that holds this tensor (tied names too).
    state_keys: tuple[str, ...]

    @property
    def params(self) -> int:
        return math.prod(self.weight_shape)

    @property
    def group_size(self) -> int | None:
        return group_size_of(self.quantized)


@attrs.frozen(eq=False)
class ExportPlan:
    """Everything one export writes (built by :func:`mpqcore.export`; formats only read it)."""

    model: nn.Module
    fake: nn.Module
    layers: tuple[PlannedLayer, ...]
    quantizer: str
    quantizer_options: Mapping[str, Any] = attrs.field(converter=freeze)
    layout: Layout | None
    #: ``{layer: activation bits}`` of the layers whose inputs are quantized.
    act_bits: Mapping[str, int] = attrs.field(converter=freeze)
    #: one input batch (as the calibration batches are), or ``None``.
    example: Any = None
    #: ``{layer: {"module": name, "added": bool}}`` of the layers whose bias the bias correction wrote into
    #: ``fake`` (``added``: the float model has no bias there); empty without bias correction.
    biases: Mapping[str, Any] = attrs.field(factory=dict, converter=freeze)
    #: the bias correction's policy (``"add"``/``"existing"``), or ``None`` without one.
    bias_policy: str | None = None

    def layer(self, fqn: str) -> PlannedLayer:
        return next(p for p in self.layers if p.fqn == fqn)

    def bias_manifest(self) -> dict[str, Any] | None:
        """What every format's manifest says of the bias correction: its policy and the corrected layers
        (``{layer: {"module", "added"}}``), stored as the float biases of the exported model; ``None`` without."""
        if self.bias_policy is None:
            return None
        return {"policy": self.bias_policy, "layers": {f: dict(e) for f, e in self.biases.items()}}


@attrs.frozen(eq=False)
class ExportResult:
    """A written export, checked on reload.

    ``bytes`` on disk against ``predicted_bytes`` (the quantized weights at their widths
    plus their scales and zero points at the layout's dtypes, :meth:`Layout.metadata_bits`,
    plus every tensor left float at its dtype); ``max_abs_diff`` between the reloaded
    model's outputs and the fake-quantized model's on the example (``None`` without one);
    ``metric`` of the reloaded model and ``reference_metric`` of the fake-quantized one
    when a metric was given. ``manifest`` is what the format recorded (widths, containers).
    """

    format: str
    path: Path
    bytes: int
    predicted_bytes: int
    max_abs_diff: float | None
    exact: bool | None
    metric: float | None
    reference_metric: float | None
    manifest: Mapping[str, Any] = attrs.field(converter=freeze)
    model: Any = attrs.field(default=None, repr=False)

    @property
    def size_ratio(self) -> float:
        """Bytes on disk over predicted bytes."""
        return self.bytes / self.predicted_bytes if self.predicted_bytes else math.inf
