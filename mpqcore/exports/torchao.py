"""The ``torchao`` export: the allocation as a torchao ``FqnToConfig`` plan (``pip install mpqcore[torchao]``).

Each quantized layer's weight becomes the tensor torchao's
``IntxWeightOnlyConfig(weight_dtype=torch.int<b>, granularity=PerAxis(0) or
PerGroup(g), mapping_type=SYMMETRIC or ASYMMETRIC)`` makes (its quantizer's
:class:`~mpqcore.Layout` picks the config; :func:`torchao_plan` is the ``FqnToConfig``
plan, recorded per layer in the manifest): an ``IntxUnpackedToInt8Tensor`` with the
config's dtype and block size whose ``qdata``, ``scale`` and ``zero_point`` are mpq's
codes and zero points shifted by ``2**(b-1)`` into torchao's signed range and mpq's
scales (:func:`torchao_weight`), so the export computes the integers mpq measured. It
is built directly rather than by ``quantize_`` followed by overwriting: ``quantize_``
runs torchao's own parameter choice first, which in 0.18 fails on a convolution with
one input channel per group (a ResNet's first layer on grey images, depthwise
convolutions). Written with ``torch.save`` as ``{"manifest", "state_dict"}`` (load it
with ``torch.load(path, weights_only=False)`` and ``model.load_state_dict(state,
assign=True)``).

torchao's own parameter choice would not give the same integers: its symmetric scale is
``absmax / (2**(b-1) - 0.5)`` (``mse-per-channel`` searches a clipped one per channel;
``symmetric-per-channel`` keeps the narrow range unless ``narrow_range=False``) and its v2
weight-only config has no per-tensor granularity.

What torchao 0.18 expresses (its ``IntxWeightOnlyConfig`` handler takes 2-d and 4-d
weights; ``IntxUnpackedToInt8Tensor`` dispatches ``linear``, ``conv2d`` and
``embedding``), at 1-8 bits with a per-channel or per-group layout (the built-in
``symmetric-per-channel`` and ``mse-per-channel``):

- ``linear`` layers (``nn.Linear``): per channel or per group of input features (not
  ``nn.MultiheadAttention``'s ``out_proj``: attention transposes it with ``aten.t``,
  which torchao's tensor does not implement);
- ``embedding`` layers (``nn.Embedding``): per row (mpq's channel) or per group of a row;
- ``conv`` layers that are ``nn.Conv2d``: per output channel only. torchao blocks a
  4-d weight per (output channel, kernel tap), ``scale`` ``[O, 1, kh, kw]``; mpq's one
  scale per channel is written into each of its taps (``kh * kw`` copies: the file
  stores more scales than the size cost counts), so the integers and values are mpq's.
  A grouped layout is refused: torchao groups input channels within one tap, mpq the
  channel's flattened ``in x kh x kw`` elements.

Everything else (``Conv1d``/``Conv3d``, transposed convolutions, attention's packed
projections, recurrent weights, transformers' ``Conv1D``, per-tensor layouts, widths
above 8, groups that do not divide a row) is a :class:`~mpqcore.ConfigError` naming the
layers and listing what maps. On CPU, torchao's sub-8-bit weight-only layout stores one
int8 per weight and dequantizes the whole weight at every call: it is no smaller in
memory than int8 and runs slower than float.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear

from mpqcore.errors import ConfigError
from mpqcore.exports.plan import ExportPlan, PlannedLayer

__all__ = ["MAPPED", "TorchaoFormat", "torchao_plan", "torchao_weight"]

#: the layers torchao's IntxWeightOnlyConfig takes, in words (see the module docstring).
MAPPED = "nn.Linear and nn.Embedding layers (per channel or per group) and nn.Conv2d layers (per channel)"


def _why_not(p: PlannedLayer, module: nn.Module) -> str:
    """Why torchao cannot hold layer ``p`` (its ``module``) with mpq's integers (empty when it can)."""
    if isinstance(module, NonDynamicallyQuantizableLinear):
        return "the out_proj of nn.MultiheadAttention, which transposes it with aten.t (torchao lacks it)"
    classes = {"linear": nn.Linear, "embedding": nn.Embedding, "conv": nn.Conv2d}
    kind = classes.get(p.layer_kind)
    if kind is None or not isinstance(module, kind) or p.axis != 0 or p.param != "weight":
        return f"{p.layer_kind}, {p.module_class}.{p.param}"
    if p.group_size is not None:
        if p.layer_kind == "conv":
            return "conv with grouped scales: torchao groups input channels within one kernel tap"
        if p.weight_shape[1] % p.group_size:
            return f"groups of {p.group_size} do not divide its {p.weight_shape[1]} inputs"
    return ""


def _require() -> Any:
    try:
        import torchao.quantization as tq
    except ImportError as exc:
        raise ConfigError(f"export format 'torchao' needs torchao: pip install 'mpqcore[torchao]' ({exc})") from None
    return tq


def torchao_plan(plan: ExportPlan) -> dict[str, Any]:
    """``{module fqn: IntxWeightOnlyConfig}`` for the plan's layers (see the module docstring)."""
    tq = _require()
    from torchao.quantization.granularity import PerAxis, PerGroup
    from torchao.quantization.quant_primitives import MappingType

    layout = plan.layout
    assert layout is not None
    out = {}
    for p in plan.layers:
        granularity = PerGroup(p.group_size) if p.group_size is not None else PerAxis(0)
        mapping = MappingType.SYMMETRIC if layout.symmetric else MappingType.ASYMMETRIC
        out[p.module_name] = tq.IntxWeightOnlyConfig(
            weight_dtype=getattr(torch, f"int{p.bits}"), granularity=granularity, mapping_type=mapping
        )
    return out


def _blocks(values: torch.Tensor, blocks: tuple[int, ...]) -> torch.Tensor:
    """mpq's scales or zero points in torchao's block shape: per group as they are, per channel spread over a
    convolution's kernel taps (torchao's ``[O, 1, kh, kw]``)."""
    if values.numel() == 1:  # a symmetric quantizer's one zero point
        return values.reshape(()).expand(blocks).contiguous()
    if values.numel() == math.prod(blocks):
        return values.reshape(blocks).contiguous()
    return values.reshape(blocks[0], *[1] * (len(blocks) - 1)).expand(blocks).contiguous()


def torchao_weight(p: PlannedLayer) -> Any:
    """Layer ``p``'s weight as the ``IntxUnpackedToInt8Tensor`` its ``IntxWeightOnlyConfig`` makes, holding mpq's
    integers: codes shifted by ``2**(b-1)`` into torchao's signed range, zero points likewise, mpq's scales."""
    from torchao.quantization import IntxUnpackedToInt8Tensor

    q, shape = p.quantized, p.weight_shape
    width = p.group_size if p.group_size is not None else shape[1]
    block = (1, width, *[1] * (len(shape) - 2))  # a conv: one block per (output channel, kernel tap)
    blocks = tuple(n // b for n, b in zip(shape, block, strict=True))
    half = 2 ** (p.bits - 1)
    dtype = q.scale.dtype if q.scale.is_floating_point() else torch.float32
    return IntxUnpackedToInt8Tensor(
        qdata=(q.codes.reshape(shape) - half).to(torch.int8),
        scale=_blocks(q.scale, blocks).to(dtype),
        zero_point=_blocks(q.zero_point - half, blocks).round().to(torch.int8),
        target_dtype=getattr(torch, f"int{p.bits}"),
        block_size=block,
        dtype=dtype,
        activation_quantization=None,
    )


@attrs.frozen
class TorchaoFormat:
    """torchao IntxWeightOnlyConfig per layer (FqnToConfig), holding mpq's integers; saved with torch.save."""

    name = "torchao"
    suffix = ".pt"

    def check(self, plan: ExportPlan) -> None:
        _require()
        problems = []
        if plan.layout is None or plan.layout.granularity == "tensor":
            problems.append(
                f"quantizer {plan.quantizer!r} has a per-tensor (or undeclared) layout; torchao's "
                "IntxWeightOnlyConfig has PerAxis and PerGroup granularity only"
            )
        modules = dict(plan.model.named_modules())
        kinds = [f"{p.fqn} ({why})" for p in plan.layers if (why := _why_not(p, modules[p.module_name]))]
        if kinds:
            problems.append(f"layers torchao's weight-only config does not take: {kinds[:5]}")
        wide = [f"{p.fqn} ({p.bits} bits)" for p in plan.layers if p.bits > 8]
        if wide:
            problems.append(f"widths above 8 bits (torch.int1..int8 only): {wide[:5]}")
        fractional = [
            f"{p.fqn} ({p.bits} bits)"
            for p in plan.layers
            if not bool((p.quantized.zero_point == p.quantized.zero_point.round()).all())
        ]
        if fractional:
            problems.append(f"zero points that are not integers: {fractional[:5]}")
        if problems:
            raise ConfigError(
                "export format 'torchao' cannot express "
                + "; ".join(problems)
                + f". It maps {MAPPED} at 1-8 bits with a per-channel or per-group layout (quantizers "
                "symmetric-per-channel, mse-per-channel); use exclude= for other layers, or format 'packed'/'onnx'"
            )

    def write(self, plan: ExportPlan, path: Path) -> dict[str, Any]:
        model = copy.deepcopy(plan.fake)
        configs = torchao_plan(plan)
        modules = dict(model.named_modules())
        for p in plan.layers:
            module = modules[p.module_name]
            module.register_parameter("weight", nn.Parameter(torchao_weight(p), requires_grad=False))
        manifest = {
            "format": "mpq-torchao",
            "quantizer": plan.quantizer,
            "layers": {p.fqn: {"bits": p.bits, "config": repr(configs[p.module_name])} for p in plan.layers},
            "act_bits": dict(plan.act_bits),
            "storage": "IntxUnpackedToInt8Tensor: one int8 per weight",
            "scales_per_tap": sorted(p.fqn for p in plan.layers if p.layer_kind == "conv"),
            "bias_correction": plan.bias_manifest(),  # corrected biases: the modules' float biases
        }
        torch.save({"manifest": manifest, "state_dict": model.state_dict()}, str(path))
        return manifest

    def load(self, plan: ExportPlan, path: Path) -> nn.Module:
        _require()
        try:
            saved = torch.load(str(path), weights_only=False)
            state = saved["state_dict"]
        except Exception as exc:
            raise ConfigError(f"{str(path)!r} is not an mpq torchao export (truncated or corrupted?): {exc}") from None
        model = copy.deepcopy(plan.fake)  # the architecture (and its activation hooks); every tensor from the file
        model.load_state_dict(state, assign=True)
        return model
