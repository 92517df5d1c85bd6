"""The export API (re-exported by :mod:`mpqcore.exports`, which loads it on first use)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mpqcore import activations
from mpqcore.batches import call_model
from mpqcore.bias_correction import BiasCorrection
from mpqcore.costs import WeightSize
from mpqcore.divergence import primary_output
from mpqcore.errors import ConfigError, PluginError
from mpqcore.exports.packed import load_packed
from mpqcore.exports.plan import ExportPlan, ExportResult, PlannedLayer
from mpqcore.files import atomic_path, check_output_dir
from mpqcore.introspect import find_layers
from mpqcore.layer_kinds import quantize_along
from mpqcore.layout import layout_of
from mpqcore.plugins import PluginSet, get_plugins
from mpqcore.protocols import Quantizer
from mpqcore.quantizers import DEFAULT_QUANTIZER
from mpqcore.report import Report
from mpqcore.search import _allocated_layers, apply
from mpqcore.types import Allocation, LayerInfo

__all__ = ["ExportPlan", "ExportResult", "PlannedLayer", "check_export_path", "export", "load_packed", "plan_export"]

_DTYPE_BYTES = {torch.bool: 1}


def check_export_path(path: str | Path) -> Path:
    """``path`` as a file mpq can write, checked before any work, or a :class:`ConfigError` saying why not."""
    if not str(path):
        raise ConfigError("export path is empty; give a file name such as model.safetensors")
    target = Path(path)
    if target.is_dir():
        raise ConfigError(f"export path {str(target)!r} is a folder; give a file name inside it")
    check_output_dir(target.parent if str(target.parent) else ".", what="export folder")
    return target


def _source(
    allocation: Any, quantizer: Any, quantizer_options: Any, act_bits: Any, bias_correction: Any
) -> tuple[Mapping[str, int], Any, Any, Any, Any]:
    """The allocation's widths, quantizer, options, activation widths and bias correction (a Report brings its own)."""
    if isinstance(allocation, Report):
        clash = [
            name
            for name, value, default in (
                ("quantizer", quantizer, DEFAULT_QUANTIZER),
                ("quantizer_options", quantizer_options, None),
                ("act_bits", act_bits, None),
                ("bias_correction", bias_correction, None),
            )
            if value is not default and value != default
        ]
        if clash:
            raise ConfigError(
                f"export(model, report) takes the quantizer, its options, act_bits and bias_correction from the "
                f"report; leave out {', '.join(clash)}, or pass report.allocation to choose them yourself"
            )
        return (
            allocation.allocation.bits,
            allocation.quantizer,
            dict(allocation.quantizer_options),
            dict(allocation.act_bits),
            allocation.bias_correction,
        )
    if isinstance(allocation, Allocation):
        return allocation.bits, quantizer, quantizer_options, act_bits, bias_correction
    if isinstance(allocation, Mapping):
        return Allocation(allocation, 0.0).bits, quantizer, quantizer_options, act_bits, bias_correction
    raise ConfigError(
        f"export takes an allocation (mpqcore.Allocation, {{layer: bits}} or a Report), got {type(allocation).__name__}"
    )


def _corrected_biases(
    fake: nn.Module, found: Mapping[str, Any], chosen: Mapping[str, int], bias_correction: Any
) -> dict:
    """``{layer: {"module", "added"}}`` of the layers whose bias the correction wrote (``added``: the float model
    had none, so the fake-quantized model's ``<module>.bias`` is a new tensor)."""
    if bias_correction is None:
        return {}
    fake_modules = dict(fake.named_modules())
    out = {}
    for fqn in chosen:
        f = found[fqn]
        if fqn not in bias_correction.means or getattr(fake_modules.get(f.module_name), "bias", None) is None:
            continue  # not corrected (skipped, or no bias under policy "existing")
        out[fqn] = {"module": f.module_name, "added": getattr(f.module, "bias", None) is None}
    return out


def plan_export(
    model: nn.Module,
    allocation: Allocation | Mapping[str, int] | Report,
    *,
    quantizer: str | Quantizer = DEFAULT_QUANTIZER,
    quantizer_options: Mapping[str, Any] | None = None,
    act_bits: int | Mapping[str, int] | None = None,
    example: Any = None,
    exclude: Sequence[str] | None = None,
    plugins: PluginSet | None = None,
    bias_correction: BiasCorrection | None = None,
    **apply_options: Any,
) -> ExportPlan:
    """The :class:`ExportPlan` :func:`export` hands its format (``model`` is not changed)."""
    plugins = plugins or get_plugins()
    bits_of, quantizer, quantizer_options, act_bits, bias_correction = _source(
        allocation, quantizer, quantizer_options, act_bits, bias_correction
    )
    name, impl = plugins.quantizers.resolve(quantizer, quantizer_options)
    found = find_layers(model, plugins)[0]
    chosen = _allocated_layers(found, bits_of, exclude)
    act_of = activations.act_bits_per_layer(act_bits, chosen)
    fake = apply(
        model, bits_of, impl, exclude=exclude, plugins=plugins, act_bits=act_of, bias_correction=bias_correction,
        **apply_options,
    )  # fmt: skip  # the float tensors of every export, corrected biases included
    keys = _state_keys(model, found)
    layers = []
    with torch.no_grad():
        for fqn, b in chosen.items():
            f = found[fqn]
            w = f.tensor().detach()
            layers.append(
                PlannedLayer(
                    fqn=fqn,
                    module_name=f.module_name,
                    param=f.ref.name,
                    layer_kind=f.kind,
                    module_class=type(f.module).__name__,
                    axis=f.ref.axis,
                    bits=b,
                    weight_shape=tuple(w.shape),
                    quantized=quantize_along(impl, w, b, f.ref.axis),
                    state_keys=keys[fqn],
                )
            )
    return ExportPlan(
        model=model,
        fake=fake,
        layers=tuple(layers),
        quantizer=name,
        quantizer_options=dict(quantizer_options or {}),
        layout=layout_of(impl),
        act_bits=act_of,
        example=example,
        biases=_corrected_biases(fake, found, chosen, bias_correction),
        bias_policy=None if bias_correction is None else bias_correction.policy,
    )


def _state_keys(model: nn.Module, found: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """Per layer, the state-dict keys of its weight once :func:`mpqcore.apply` has baked it (a plain Parameter)."""
    out = {}
    for fqn, f in found.items():
        paths = [f.path, *(a[1] for a in f.aliases)]
        out[fqn] = tuple(dict.fromkeys(paths))
    return out


def _predicted_bytes(plan: ExportPlan) -> int:
    """Quantized weights at their widths with their metadata at the layout's dtypes, plus the float tensors."""
    size = WeightSize().with_layout(plan.layout)  # the size cost's own rule: codes plus stored metadata
    bits = 0.0
    for layer in plan.layers:
        info = LayerInfo(layer.fqn, "", layer.params, weight_shape=layer.weight_shape, axis=layer.axis)
        bits += size.cost(info, layer.bits)
    quantized = {k for layer in plan.layers for k in layer.state_keys}
    seen = set()
    for key, value in plan.fake.state_dict().items():
        ident = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape))
        if key in quantized or ident in seen:
            continue
        seen.add(ident)
        bits += value.numel() * value.element_size() * 8
    return math.ceil(bits / 8)


def _compare(plan: ExportPlan, loaded: Any) -> tuple[float | None, bool | None]:
    if plan.example is None:
        return None, None
    plan.fake.eval()
    with torch.no_grad():
        want = primary_output(call_model(plan.fake, plan.example)).detach().float()
        got = primary_output(call_model(loaded, plan.example)).detach().float()
    if tuple(got.shape) != tuple(want.shape):
        raise PluginError(f"the reloaded export returns shape {tuple(got.shape)}, the model {tuple(want.shape)}")
    return float((got - want).abs().max()) if want.numel() else 0.0, bool(torch.equal(got, want))


def export(
    model: nn.Module,
    allocation: Allocation | Mapping[str, int] | Report,
    *,
    format: str,
    path: str | Path,
    quantizer: str | Quantizer = DEFAULT_QUANTIZER,
    quantizer_options: Mapping[str, Any] | None = None,
    act_bits: int | Mapping[str, int] | None = None,
    example: Any = None,
    metric: Callable[[Any], float] | None = None,
    format_options: Mapping[str, Any] | None = None,
    exclude: Sequence[str] | None = None,
    plugins: PluginSet | None = None,
    bias_correction: BiasCorrection | None = None,
    **apply_options: Any,
) -> ExportResult:
    """Write ``model`` quantized at ``allocation`` in export ``format`` to ``path``, and check it on reload.

    ``allocation`` is an :class:`~mpqcore.Allocation`, ``{layer: bits}`` or a
    :class:`~mpqcore.Report` (then its quantizer, options, activation widths and bias
    correction are used; with an allocation, ``bias_correction=`` takes a
    :class:`~mpqcore.BiasCorrection` as :func:`mpqcore.apply` does). Corrected biases are
    the exported model's float biases (``packed`` also adds the ones the correction
    created, as its manifest's ``bias_correction`` says).
    ``example`` is one input batch: the reloaded model's outputs on it are compared with
    the fake-quantized model's (``max_abs_diff``; a format that needs to trace the model,
    ``onnx``, requires it); ``metric(model)`` is evaluated on both when given. Extra
    keywords go to :func:`mpqcore.apply`. The format and the path are checked before any
    work; a width, layout or layer the format cannot store is a :class:`ConfigError`
    naming it and what the format does store. ``model`` is not changed.
    """
    plugins = plugins or get_plugins()
    fmt = plugins.export_formats.create(format, **dict(format_options or {})) if isinstance(format, str) else None
    if fmt is None:
        raise ConfigError(f"format is an export format's name; valid: {', '.join(plugins.export_formats.names())}")
    target = check_export_path(path)
    plan = plan_export(
        model, allocation, quantizer=quantizer, quantizer_options=quantizer_options, act_bits=act_bits,
        example=example, exclude=exclude, plugins=plugins, bias_correction=bias_correction, **apply_options,
    )  # fmt: skip
    fmt.check(plan)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        manifest = fmt.write(plan, tmp)
    loaded = fmt.load(plan, target)
    if isinstance(loaded, nn.Module):
        loaded.eval()
    diff, exact = _compare(plan, loaded)
    reference = got = None
    if metric is not None:
        reference, got = float(metric(plan.fake)), float(metric(loaded))
    return ExportResult(
        format=format,
        path=target,
        bytes=target.stat().st_size,
        predicted_bytes=_predicted_bytes(plan),
        max_abs_diff=diff,
        exact=exact,
        metric=got,
        reference_metric=reference,
        manifest=dict(manifest),
        model=loaded,
    )
