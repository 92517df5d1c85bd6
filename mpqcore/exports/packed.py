"""The ``packed`` export: one safetensors file, each layer's integer codes bit-packed at its width.

The file holds, per quantized layer ``L`` (its name in the manifest):

- ``L::codes``: the unsigned codes of every element, ``bits`` bits each, least
  significant bit first, packed into bytes with :func:`numpy.packbits` (8-bit codes are
  plain ``uint8``), in the order of the quantizer's ``codes`` tensor;
- ``L::scale``: the scales at the layout's ``scale_dtype``, in their own shape;
- ``L::zero_point``: the zero points at the layout's ``zero_point_dtype`` (the next
  integer container up when a width's zero points do not fit, as the manifest says),
  unless the layout is symmetric and every zero point is the same number: that one
  number is in the manifest instead;

every other tensor of the fake-quantized model's state dict at its own dtype (a tensor
reached under two names is stored once), and in the safetensors metadata under ``mpq``
the manifest: format version, mpq version, quantizer and options, layout, activation
widths, per layer its width, shapes, axis, group size and the dtypes stored, and the
bias correction (``bias_correction``: its policy and, per corrected layer, its module
and whether the correction ``added`` the bias: the float model has none there). The
corrected biases are stored as the float tensors they are.
:func:`load_packed` rebuilds from it a model whose outputs equal the fake-quantized
model's exactly.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
from torch import nn

from mpqcore import activations
from mpqcore.errors import ConfigError
from mpqcore.exports.plan import ExportPlan, PlannedLayer, dequantized
from mpqcore.introspect import find_layers
from mpqcore.layer_kinds import bake
from mpqcore.plugins import PluginSet, get_plugins

__all__ = ["FORMAT_VERSION", "PackedFormat", "load_packed", "pack_codes", "unpack_codes"]

FORMAT_VERSION = 1
_KEY = "mpq"
_DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int32": torch.int32,
    "uint8": torch.uint8,
    "int8": torch.int8,
    "int16": torch.int16,
    "uint16": torch.uint16,
}
_NAMES = {v: k for k, v in _DTYPES.items()}
#: integer containers for zero points, smallest first, with the range each holds.
_INT_CONTAINERS = (("uint8", 0, 255), ("int8", -128, 127), ("uint16", 0, 65535), ("int32", -(2**31), 2**31 - 1))


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Unsigned integer ``codes`` (each below ``2**bits``) as ``ceil(n * bits / 8)`` bytes, LSB first."""
    flat = codes.reshape(-1).to(torch.int64).numpy().astype(np.uint32)
    if bits == 8:
        return torch.from_numpy(flat.astype(np.uint8))
    planes = np.empty((flat.size, bits), dtype=np.uint8)
    for i in range(bits):
        planes[:, i] = (flat >> np.uint32(i)) & np.uint32(1)
    return torch.from_numpy(np.packbits(planes.reshape(-1), bitorder="little"))


def unpack_codes(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """The ``count`` codes :func:`pack_codes` packed, as int32."""
    raw = packed.numpy()
    if bits == 8:
        return torch.from_numpy(raw[:count].astype(np.int32))
    planes = np.unpackbits(raw, count=count * bits, bitorder="little").reshape(count, bits)
    out = np.zeros(count, dtype=np.uint32)
    for i in range(bits):
        out |= planes[:, i].astype(np.uint32) << np.uint32(i)
    return torch.from_numpy(out.astype(np.int32))


def packed_bytes(count: int, bits: int) -> int:
    return math.ceil(count * bits / 8)


def _zero_point_entry(layer: PlannedLayer, layout_zp: str, symmetric: bool) -> tuple[dict[str, Any], Any]:
    """The manifest entry for a layer's zero points and the tensor to store (``None``: in the manifest)."""
    zp = layer.quantized.zero_point
    entry: dict[str, Any] = {"dtype": _NAMES.get(zp.dtype, str(zp.dtype)), "shape": list(zp.shape)}
    values = zp.detach().reshape(-1)
    if symmetric and values.numel() and bool((values == values[0]).all()):
        entry["value"] = float(values[0])
        return entry, None
    integral = bool((values == values.round()).all())
    lo, hi = (float(values.min()), float(values.max())) if values.numel() else (0.0, 0.0)
    stored = None
    if integral:
        wanted = [c for c in _INT_CONTAINERS if c[0] == layout_zp] + list(_INT_CONTAINERS)
        stored = next((name for name, a, b in wanted if a <= lo and hi <= b), None)
    stored = stored or "float32"
    entry["stored"] = stored
    if stored != layout_zp:
        entry["note"] = f"zero points in [{lo:g}, {hi:g}] do not fit the layout's {layout_zp}; stored as {stored}"
    return entry, zp.detach().to(_DTYPES[stored]).contiguous()


@attrs.frozen
class PackedFormat:
    """A safetensors file: bit-packed codes, scales and zero points, float tensors and a manifest."""

    name = "packed"
    suffix = ".safetensors"

    def check(self, plan: ExportPlan) -> None:
        if plan.layers and plan.layout is None:
            raise ConfigError(
                f"export format 'packed' stores scales and zero points at the quantizer's declared layout; quantizer "
                f"{plan.quantizer!r} declares none (give it a `layout = mpqcore.Layout(...)` attribute)"
            )

    def write(self, plan: ExportPlan, path: Path) -> dict[str, Any]:
        from safetensors.torch import save_file

        assert plan.layout is not None or not plan.layers
        layout = plan.layout
        tensors: dict[str, torch.Tensor] = {}
        layers: dict[str, Any] = {}
        quantized_keys: set[str] = set()
        for layer in plan.layers:
            q = layer.quantized
            assert layout is not None
            zp_entry, zp = _zero_point_entry(layer, layout.zero_point_dtype, layout.symmetric)
            tensors[f"{layer.fqn}::codes"] = pack_codes(q.codes, layer.bits)
            tensors[f"{layer.fqn}::scale"] = q.scale.detach().to(_DTYPES[layout.scale_dtype]).contiguous()
            if zp is not None:
                tensors[f"{layer.fqn}::zero_point"] = zp
            layers[layer.fqn] = {
                "bits": layer.bits,
                "kind": layer.layer_kind,
                "module_class": layer.module_class,
                "weight_shape": list(layer.weight_shape),
                "codes_shape": list(q.codes.shape),
                "axis": layer.axis,
                "group_size": layer.group_size,
                "scale_dtype": _NAMES.get(q.scale.dtype, str(q.scale.dtype)),
                "scale_stored": layout.scale_dtype,
                "zero_point": zp_entry,
                "state_keys": list(layer.state_keys),
            }
            quantized_keys.update(layer.state_keys)
        tied: dict[str, str] = {}
        seen: dict[tuple[int, int, tuple[int, ...]], str] = {}
        dtypes: dict[str, str] = {}
        for key, value in plan.fake.state_dict().items():
            if key in quantized_keys:
                continue
            ident = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape))
            if ident in seen and value.numel():
                tied[key] = seen[ident]
                continue
            seen[ident] = key
            dtypes[key] = _NAMES.get(value.dtype, str(value.dtype))
            tensors[key] = value.detach().contiguous().clone()
        manifest = {
            "format": "mpq-packed",
            "format_version": FORMAT_VERSION,
            "mpq_version": _mpq_version(),
            "quantizer": plan.quantizer,
            "quantizer_options": dict(plan.quantizer_options),
            "layout": attrs.asdict(layout) if layout is not None else None,
            "act_bits": dict(plan.act_bits),
            "layers": layers,
            "tied": tied,
            "bias_correction": plan.bias_manifest(),
        }
        save_file(tensors, str(path), metadata={_KEY: json.dumps(manifest, separators=(",", ":"))})
        return manifest

    def load(self, plan: ExportPlan, path: Path) -> nn.Module:
        return load_packed(plan.model, path)


def _mpq_version() -> str:
    from mpqcore.report import versions

    return versions().get("mpqcore", "0+unknown")


def _open(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    from safetensors import safe_open

    if not path.is_file():
        raise ConfigError(f"packed file {str(path)!r} does not exist (or is not a file)")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except Exception as exc:  # safetensors' own error type varies by version
        raise ConfigError(
            f"packed file {str(path)!r} cannot be read as safetensors (truncated or corrupted?): "
            f"{type(exc).__name__}: {exc}"
        ) from None
    if _KEY not in meta:
        raise ConfigError(f"{str(path)!r} is a safetensors file without an mpq manifest; it was not written by mpq")
    try:
        manifest = json.loads(meta[_KEY])
        if manifest.get("format") != "mpq-packed":
            raise ValueError(f"format {manifest.get('format')!r}")
    except (ValueError, AttributeError) as exc:
        raise ConfigError(f"packed file {str(path)!r} has a damaged mpq manifest: {exc}") from None
    if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise ConfigError(
            f"packed file {str(path)!r} has format version {manifest['format_version']}; this mpq reads "
            f"{FORMAT_VERSION} and older: upgrade mpqcore"
        )
    return manifest, tensors


def _layer_weight(fqn: str, entry: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], path: Path) -> torch.Tensor:
    codes_shape = tuple(entry["codes_shape"])
    count, bits = math.prod(codes_shape), int(entry["bits"])
    packed = tensors.get(f"{fqn}::codes")
    scale = tensors.get(f"{fqn}::scale")
    if packed is None or scale is None or packed.numel() != packed_bytes(count, bits):
        raise ConfigError(
            f"packed file {str(path)!r}: layer {fqn!r} lacks its codes or scales, or holds "
            f"{0 if packed is None else packed.numel()} code bytes where {count} codes at {bits} bits need "
            f"{packed_bytes(count, bits)} (corrupted?)"
        )
    codes = unpack_codes(packed, bits, count).reshape(codes_shape)
    scale = scale.to(_DTYPES[entry["scale_dtype"]])
    zp_entry = entry["zero_point"]
    if "value" in zp_entry:
        zp = torch.full(tuple(zp_entry["shape"]), zp_entry["value"], dtype=_DTYPES[zp_entry["dtype"]])
    else:
        stored = tensors.get(f"{fqn}::zero_point")
        if stored is None:
            raise ConfigError(f"packed file {str(path)!r}: layer {fqn!r} lacks its zero points (corrupted?)")
        zp = stored.to(_DTYPES[zp_entry["dtype"]])
    shape = tuple(entry["weight_shape"])
    return dequantized(codes, scale, zp, shape, int(entry["axis"]), entry.get("group_size"))


def _add_corrected_biases(
    target: nn.Module, manifest: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], path: Path
) -> None:
    """Give each module the bias correction added a bias to (the float model has none) a Parameter to read it into."""
    corrected = (manifest.get("bias_correction") or {}).get("layers", {})
    for fqn, entry in corrected.items():
        if not entry.get("added"):
            continue
        name = entry["module"]
        value = tensors.get(f"{name}.bias")
        if value is None:
            raise ConfigError(
                f"packed file {str(path)!r}: layer {fqn!r}'s corrected bias {name + '.bias'!r} is missing (corrupted?)"
            )
        module = target.get_submodule(name)
        if getattr(module, "bias", None) is None:
            weight = module.weight
            assert isinstance(weight, torch.Tensor)  # a Linear's or a convolution's (bias correction's kinds)
            param = nn.Parameter(torch.zeros_like(value, dtype=weight.dtype), requires_grad=weight.requires_grad)
            module.register_parameter("bias", param)


def load_packed(model: nn.Module, path: str | Path, *, plugins: PluginSet | None = None) -> nn.Module:
    """A copy of ``model`` with every tensor read from the packed file at ``path``.

    Quantized weights are rebuilt from their codes, scales and zero points exactly as the
    quantizer dequantizes them, the other tensors are read as stored, and the activation
    quantization the manifest records is installed (:mod:`mpqcore.activations`), and so
    are the corrected biases (a bias Parameter is added where the correction added one): the
    outputs equal those of the fake-quantized model the file was written from. ``model``
    is the float model of the same architecture (it is not changed). A file written
    from another model is a :class:`ConfigError` naming the layers and tensors that do
    not match; a truncated or corrupted file is one too.
    """
    path = Path(path)
    manifest, tensors = _open(path)
    target = copy.deepcopy(model)
    found = find_layers(target, plugins or get_plugins())[0]
    layers: Mapping[str, Any] = manifest["layers"]
    problems = []
    missing = [f for f in layers if f not in found]
    if missing:
        problems.append(f"layers the model does not have: {missing[:5]}")
    for fqn, entry in layers.items():
        if fqn in found and tuple(found[fqn].tensor().shape) != tuple(entry["weight_shape"]):
            problems.append(
                f"layer {fqn!r} has shape {tuple(found[fqn].tensor().shape)} in the model and "
                f"{tuple(entry['weight_shape'])} in the file"
            )
    if not problems:
        for fqn in layers:
            bake(found[fqn].module, found[fqn].ref.name)  # a parametrized weight becomes the Parameter it is stored as
        _add_corrected_biases(target, manifest, tensors, path)
    state = target.state_dict()
    quantized_keys = {k for e in layers.values() for k in e["state_keys"]}
    stored = {k for k in tensors if "::" not in k} | set(manifest.get("tied", {}))
    absent = sorted(k for k in state if k not in stored and k not in quantized_keys)
    extra = sorted(k for k in stored if k not in state)
    if absent:
        problems.append(f"tensors of the model the file lacks: {absent[:5]}")
    if extra:
        problems.append(f"tensors in the file the model lacks: {extra[:5]}")
    for key in sorted(stored & set(state)):
        value = tensors[manifest["tied"].get(key, key)]
        if tuple(value.shape) != tuple(state[key].shape):
            problems.append(
                f"tensor {key!r} has shape {tuple(state[key].shape)} in the model, {tuple(value.shape)} in the file"
            )
    if problems:
        raise ConfigError(
            f"packed file {str(path)!r} was written from another model ({manifest.get('quantizer')!r} quantizer, "
            f"{len(layers)} quantized layers): " + "; ".join(problems[:6])
        )
    with torch.no_grad():
        for fqn, entry in layers.items():
            weight = _layer_weight(fqn, entry, tensors, path)
            param = found[fqn].tensor()
            param.copy_(weight.to(param.dtype))
        for key in stored & set(state):
            state[key].copy_(tensors[manifest["tied"].get(key, key)])
    act_of = {f: int(b) for f, b in manifest.get("act_bits", {}).items() if f in found}
    activations.install({f: found[f].modules for f in act_of}, act_of)
    return target
