"""Checks that run before any work: a bad argument is refused before minutes of measuring.

Each function takes what the user passed and returns it normalized, or raises
:class:`~mpqcore.errors.ConfigError` naming what was wrong and what would be valid.
:func:`checked_metric` wraps the user's metric so that a metric that raises or returns
something other than a number is reported as the metric's fault, wherever it is called.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from mpqcore import activations
from mpqcore.errors import ConfigError, MpqError
from mpqcore.metrics import higher_is_better

__all__ = [
    "MAX_SEED",
    "check_act_bits",
    "check_callable",
    "check_device",
    "check_model",
    "check_seed",
    "checked_metric",
]

#: Seeds go to torch.manual_seed and numpy's Generator; both take any integer below this.
MAX_SEED = 2**63 - 1


def _is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_model(model: Any) -> nn.Module:
    """An eager ``nn.Module`` whose weights hold data (not TorchScript, not on the meta device)."""
    if isinstance(model, torch.jit.ScriptModule):
        raise ConfigError(
            "model is a TorchScript module; mpq needs the eager nn.Module (it hooks and swaps weights "
            "layer by layer, which scripted modules do not allow): pass the model before torch.jit.script/trace"
        )
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    meta = [name for name, p in model.named_parameters() if p.is_meta]
    if meta:
        raise ConfigError(
            f"model has parameters on the meta device (no data), e.g. {meta[:3]}; load its weights first "
            "(model.to_empty(device=...) and a state dict, or load_state_dict(..., assign=True))"
        )
    return model


def check_seed(seed: Any) -> int:
    """An integer in ``0..MAX_SEED`` (a bool or 2.5 is not a seed)."""
    if not _is_integer(seed) or not 0 <= int(seed) <= MAX_SEED:
        raise ConfigError(f"seed must be an integer between 0 and 2**63 - 1, got {seed!r}")
    return int(seed)


def check_weight_cache_bytes(value: Any) -> int | None:
    """``None`` (keep every quantized weight) or a number of bytes, ``>= 0``."""
    if value is not None and (not _is_integer(value) or int(value) < 0):
        raise ConfigError(
            f"weight_cache_bytes must be None (keep every quantized weight) or a number of bytes >= 0, got {value!r}"
        )
    return None if value is None else int(value)


def check_act_bits(act_bits: Any) -> int | dict[str, int] | None:
    """``None`` (weights only), an integer activation width in 2..16, or ``{layer or pattern: bits}``."""
    return activations.check_act_bits(act_bits)


def check_callable(value: Any, what: str, shape: str) -> Any:
    """``None`` or a callable; ``shape`` says what it is called with, for the message."""
    if value is not None and not callable(value):
        raise ConfigError(f"{what} must be a callable {shape} or None, got {type(value).__name__}")
    return value


def check_device(device: Any) -> torch.device | None:
    """``None`` (the model's device) or a device torch has here."""
    if device is None:
        return None
    if not isinstance(device, (str, torch.device)):
        raise ConfigError(f"device must be None, a str such as 'cpu' or 'cuda:0', or a torch.device; got {device!r}")
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"device {device!r} is not a torch device; valid: 'cpu', 'cuda', 'cuda:N', 'mps'") from exc
    available = _available_devices()
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device {device!r}: no CUDA device on this machine; available: {', '.join(available)}")
        if parsed.index is not None and parsed.index >= count:
            raise ConfigError(f"device {device!r}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r}: MPS is not available here; available: {', '.join(available)}")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device {device!r}: mpq runs on cpu, cuda or mps; available here: {', '.join(available)}")
    return parsed


def _available_devices() -> list[str]:
    out = ["cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        out.append("mps")
    return out


def metric_value(value: Any, *, what: str = "the metric") -> float:
    """A metric's return as a finite float (a number, a one-element tensor or array)."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        if value.size == 1 if isinstance(value, np.ndarray) else value.numel() == 1:
            value = value.item()
        else:
            shape = tuple(value.shape)
            raise ConfigError(f"{what} returned a tensor of shape {shape}; it must return one number (a float)")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{what} returned {type(value).__name__} {value!r}; it must return a number (a float)")
    out = float(value)
    if not math.isfinite(out):
        raise ConfigError(f"{what} returned {out}; it must return a finite number")
    return out


def checked_metric(metric: Callable[[nn.Module], Any] | None) -> Callable[[nn.Module], float] | None:
    """``metric`` wrapped so that its faults are reported as the metric's (``None`` stays ``None``)."""
    if metric is None:
        return None
    check_callable(metric, "metric", "(model) -> float")
    if getattr(metric, "_mpq_checked", False):
        return metric

    def checked(model: nn.Module) -> float:
        try:
            value = metric(model)
        except MpqError:
            raise
        except Exception as exc:
            name = getattr(metric, "__qualname__", type(metric).__name__)
            raise ConfigError(f"the metric {name} raised {type(exc).__name__}: {exc}") from exc
        return metric_value(value)

    checked._mpq_checked = True  # type: ignore[attr-defined]  # marks a function already wrapped
    checked.__wrapped__ = metric  # type: ignore[attr-defined]  # functools' convention, for introspection
    # the direction the metric declares travels with it (mpqcore.metrics reads this attribute)
    checked.higher_is_better = higher_is_better(metric)  # type: ignore[attr-defined]
    return checked
