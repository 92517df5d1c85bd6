"""Activation quantization: one implementation for the evaluator, the returned model and exports.

``act_bits`` is ``None`` (weights only), an integer (the inputs of every quantized layer
at that width) or a mapping from layer names or fnmatch patterns to widths (an exact
name wins over a pattern; patterns are tried in the mapping's order, so ``"*"`` last is
the global default; a layer no key matches keeps float inputs).

The inputs of a module that computes with a quantized weight are fake-quantized by
:func:`quantize_inputs` (dynamic asymmetric min-max per tensor,
:func:`mpqcore.quantizers.fake_quantize_activation`). The evaluator calls it from its
own forward pre-hook while an assignment is applied; :func:`install` puts the same
computation on a model for good, as a picklable :class:`InputQuantizer` pre-hook, so
``report.model`` computes exactly what the search scored.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import torch
from torch import nn

from mpqcore.errors import ConfigError
from mpqcore.naming import suggest
from mpqcore.quantizers import fake_quantize_activation

__all__ = ["InputQuantizer", "act_bits_per_layer", "check_act_bits", "install", "module_act_bits", "quantize_inputs"]

_WIDTHS = range(2, 17)


def _width(value: Any, what: str) -> int:
    if isinstance(value, bool) or (
        not isinstance(value, int) and not (isinstance(value, float) and value.is_integer())
    ):
        raise ConfigError(f"{what} must be an integer between 2 and 16, got {value!r}")
    if int(value) not in _WIDTHS:
        raise ConfigError(f"{what} must be an integer between 2 and 16, got {value!r}")
    return int(value)


def check_act_bits(act_bits: Any) -> int | dict[str, int] | None:
    """``None``, an integer width in 2..16, or ``{layer or pattern: width}`` (checked, copied)."""
    if act_bits is None:
        return None
    if isinstance(act_bits, Mapping):
        out = {}
        for key, value in act_bits.items():
            if not isinstance(key, str) or not key:
                raise ConfigError(f"act_bits keys are layer names or fnmatch patterns (str), got {key!r}")
            out[key] = _width(value, f"act_bits[{key!r}]")
        return out
    try:
        return _width(act_bits, "act_bits")
    except ConfigError:
        raise ConfigError(
            f"act_bits must be None or an integer between 2 and 16 (or a mapping {{layer or pattern: bits}}), "
            f"got {act_bits!r}"
        ) from None


def act_bits_per_layer(act_bits: Any, layers: Iterable[str]) -> dict[str, int]:
    """``{layer: width}`` of the layers whose inputs are quantized (see the module docstring).

    An exact key (no ``*?[``) that names no layer is an error naming the valid ones.
    """
    layers = list(layers)
    checked = check_act_bits(act_bits)
    if checked is None:
        return {}
    if isinstance(checked, int):
        return dict.fromkeys(layers, checked)
    exact = {k: v for k, v in checked.items() if not any(c in k for c in "*?[")}
    unknown = [k for k in exact if k not in layers]
    if unknown:
        raise ConfigError(
            f"act_bits names layers the model does not quantize: {unknown[:5]}{suggest(unknown[0], layers)}"
        )
    out = {}
    for fqn in layers:
        if fqn in exact:
            out[fqn] = exact[fqn]
            continue
        for pattern, width in checked.items():
            if pattern not in exact and fnmatch.fnmatchcase(fqn, pattern):
                out[fqn] = width
                break
    return out


def module_act_bits(modules_of: Mapping[str, list[nn.Module]], per_layer: Mapping[str, int]) -> list[tuple[Any, ...]]:
    """``(module, width, layers)`` for every module computing with a layer of ``per_layer``.

    A module holding several layers (an LSTM) quantizes its inputs once: its layers
    must then share one width, else a :class:`ConfigError` names them.
    """
    users: dict[int, tuple[nn.Module, dict[str, int]]] = {}
    for fqn, width in per_layer.items():
        for m in modules_of[fqn]:
            users.setdefault(id(m), (m, {}))[1][fqn] = width
    out = []
    for m, widths in users.values():
        if len(set(widths.values())) > 1:
            raise ConfigError(
                f"act_bits gives layers computed by one module different widths {widths}; one module quantizes "
                "its inputs once, so give them one width"
            )
        out.append((m, next(iter(widths.values())), tuple(widths)))
    return out


def quantize_inputs(inputs: tuple[Any, ...], bits: int) -> tuple[Any, ...]:
    """Every tensor among a module's positional ``inputs`` fake-quantized at ``bits``."""
    return tuple(fake_quantize_activation(x, bits) if isinstance(x, torch.Tensor) else x for x in inputs)


@attrs.frozen
class InputQuantizer:
    """A forward pre-hook fake-quantizing a module's inputs at ``bits`` (picklable, so the model saves)."""

    bits: int

    def __call__(self, module: nn.Module, inputs: tuple[Any, ...]) -> tuple[Any, ...]:
        return quantize_inputs(inputs, self.bits)


def install(modules_of: Mapping[str, list[nn.Module]], per_layer: Mapping[str, int]) -> dict[str, int]:
    """Put an :class:`InputQuantizer` on every module computing with a layer of ``per_layer``.

    Returns ``per_layer``; a module already carrying one is left as it is (installing twice
    would quantize twice).
    """
    for m, width, _ in module_act_bits(modules_of, per_layer):
        if not any(isinstance(h, InputQuantizer) for h in m._forward_pre_hooks.values()):
            m.register_forward_pre_hook(InputQuantizer(width))
    return dict(per_layer)


def installed(model: nn.Module) -> dict[str, int]:
    """``{module name: width}`` of the :class:`InputQuantizer` hooks on ``model``'s modules."""
    out = {}
    for name, m in model.named_modules():
        for h in m._forward_pre_hooks.values():
            if isinstance(h, InputQuantizer):
                out[name] = h.bits
    return out
