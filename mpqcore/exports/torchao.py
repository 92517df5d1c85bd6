"""The ``torchao`` export: the allocation as a torchao ``FqnToConfig`` plan (``pip install mpqcore[torchao]``).

Each quantized layer gets ``IntxWeightOnlyConfig(weight_dtype=torch.int<b>,
granularity=PerAxis(0) or PerGroup(g), mapping_type=SYMMETRIC or ASYMMETRIC)`` from
its quantizer's :class:`~mpqcore.Layout`, applied with
``torchao.quantization.quantize_(model, FqnToConfig(plan), filter_fn=None)``; the
integers torchao stores (``IntxUnpackedToInt8Tensor``: ``qdata``, ``scale``,
``zero_point``, signed) are then set to mpq's codes, shifted by ``2**(b-1)``, so the
export computes the integers mpq measured. Written with ``torch.save`` (load it with
``torch.load(path, weights_only=False)``; its ``"model"`` entry is the module).

torchao's own parameter choice would not give the same integers: its symmetric mapping
uses the full range ``[-2**(b-1), 2**(b-1)-1]`` (mpq's symmetric quantizers the narrow
one) and its v2 weight-only config has no per-tensor granularity. Mapped: layers of the
``linear`` kind at 1-8 bits with a per-channel or per-group layout (the built-in
``symmetric-per-channel`` and ``mse-per-channel``); anything else is a
:class:`~mpqcore.ConfigError` naming the layers and what maps. On CPU, torchao's
sub-8-bit weight-only layout stores one int8 per weight and dequantizes at run time: it
is no smaller in memory than int8 and runs slower than float.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from mpqcore.errors import ConfigError
from mpqcore.exports.plan import ExportPlan

__all__ = ["TorchaoFormat", "torchao_plan"]


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
        kinds = [f"{p.fqn} ({p.layer_kind})" for p in plan.layers if p.layer_kind != "linear" or p.axis != 0]
        if kinds:
            problems.append(f"layers of kinds torchao's weight-only config does not take: {kinds[:5]}")
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
                + ". It maps linear layers at 1-8 bits with a per-channel or per-group layout (quantizers "
                "symmetric-per-channel, mse-per-channel); use exclude= for other layers, or format 'packed'/'onnx'"
            )

    def write(self, plan: ExportPlan, path: Path) -> dict[str, Any]:
        tq = _require()
        model = copy.deepcopy(plan.fake)
        configs = torchao_plan(plan)
        tq.quantize_(model, tq.FqnToConfig(configs), filter_fn=None)
        modules = dict(model.named_modules())
        with torch.no_grad():
            for p in plan.layers:
                w = modules[p.module_name].weight
                q = p.quantized
                half = 2 ** (p.bits - 1)
                w.qdata.copy_((q.codes.reshape(w.qdata.shape) - half).to(w.qdata.dtype))
                w.scale.copy_(q.scale.reshape(w.scale.shape).to(w.scale.dtype))
                w.zero_point.copy_((q.zero_point - half).reshape(w.zero_point.shape).to(w.zero_point.dtype))
        manifest = {
            "format": "mpq-torchao",
            "quantizer": plan.quantizer,
            "layers": {p.fqn: {"bits": p.bits, "config": repr(configs[p.module_name])} for p in plan.layers},
            "act_bits": dict(plan.act_bits),
            "storage": "IntxUnpackedToInt8Tensor: one int8 per weight",
        }
        torch.save({"manifest": manifest, "state_dict": model.state_dict()}, str(path))
        return manifest

    def load(self, plan: ExportPlan, path: Path) -> nn.Module:
        tq = _require()
        try:
            saved = torch.load(str(path), weights_only=False)
            state = saved["state_dict"]
        except Exception as exc:
            raise ConfigError(f"{str(path)!r} is not an mpq torchao export (truncated or corrupted?): {exc}") from None
        model = copy.deepcopy(plan.fake)  # the architecture (and its activation hooks); every tensor from the file
        tq.quantize_(model, tq.FqnToConfig(torchao_plan(plan)), filter_fn=None)
        model.load_state_dict(state, assign=True)
        return model
