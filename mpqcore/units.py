"""Figures in their unit and at human scale: the one place that formats a cost.

Every writer (report JSON, allocation CSV, CLI summary, plots, HTML) formats through
here, so a size reads ``4.19 MB`` everywhere and not ``3.35161e+07`` in one place and
``33516100`` in another. A cost model names its unit (``unit``: ``size`` counts
``bits``, ``bops`` counts ``BOPs``, a latency table the unit its user gave); the raw
number is always kept beside the human string (:func:`quantity`).

Scales are decimal (1 kB = 1000 bytes, 1 G = 1e9), as storage and BOPs papers count.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = [
    "BUILTIN_UNITS",
    "axis_scale",
    "cost_label",
    "human",
    "human_bytes",
    "human_count",
    "quantity",
]

#: The units of the built-in cost models (a registered name cannot be taken twice, so
#: ``size`` and ``bops`` always mean these); other models say theirs in ``unit``.
BUILTIN_UNITS: Mapping[str, str] = {"size": "bits", "bops": "BOPs"}

_PREFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))
_TIME_UNITS = {"s": 1e3, "ms": 1.0, "us": 1e-3, "µs": 1e-3, "ns": 1e-6}


def _number(value: float, digits: int = 3) -> str:
    """``value`` with ``digits`` significant digits, never in scientific notation below 1e15."""
    if value == 0:
        return "0"
    if abs(value) >= 10**digits:
        return f"{value:,.0f}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}"


def human_bytes(n_bytes: float) -> str:
    """``4.19 MB``, ``812 kB``, ``96 B``."""
    for scale, prefix in _PREFIXES:
        if abs(n_bytes) >= scale:
            return f"{_number(n_bytes / scale)} {prefix}B"
    return f"{_number(n_bytes)} B"


def human_count(value: float, unit: str) -> str:
    """``1.23 G BOPs``: a count with a decimal prefix and its unit."""
    for scale, prefix in _PREFIXES:
        if abs(value) >= scale:
            return f"{_number(value / scale)} {prefix} {unit}".rstrip()
    return f"{_number(value)} {unit}".rstrip()


def human(value: float | None, unit: str) -> str:
    """``value`` (in ``unit``) as a person reads it: bits as bytes, BOPs as G, times in ms."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    value = float(value)
    if unit == "bits":
        return human_bytes(value / 8.0)
    if unit == "bytes":
        return human_bytes(value)
    if unit in _TIME_UNITS:
        return f"{_number(value * _TIME_UNITS[unit])} ms"
    if unit == "average bits":
        return f"{value:.3g} bits/weight"
    return human_count(value, unit)


def quantity(value: float | None, unit: str) -> dict[str, Any]:
    """``{"value": raw, "unit": unit, "human": "4.19 MB"}``: what the JSON keeps of a figure."""
    raw = None if value is None or not math.isfinite(float(value)) else float(value)
    return {"value": raw, "unit": unit, "human": human(raw, unit)}


def axis_scale(values: list[float], unit: str) -> tuple[float, str]:
    """A divisor and an axis label unit for plotting ``values`` (in ``unit``) at one human scale."""
    top = max((abs(v) for v in values if v is not None and math.isfinite(v)), default=0.0)
    if unit in ("bits", "bytes"):
        top_bytes = top / 8.0 if unit == "bits" else top
        per_byte = 8.0 if unit == "bits" else 1.0
        for scale, prefix in _PREFIXES:
            if top_bytes >= scale:
                return per_byte * scale, f"{prefix}B"
        return per_byte, "B"
    if unit in _TIME_UNITS:
        return 1.0 / _TIME_UNITS[unit], "ms"
    for scale, prefix in _PREFIXES:
        if top >= scale:
            return scale, f"{prefix} {unit}".strip()
    return 1.0, unit


def cost_label(name: str, unit: str) -> str:
    """An axis or column title for a cost: ``weight size`` for ``size``, else the cost's name."""
    return {"size": "weight size", "bops": "bit operations", "latency": "latency"}.get(name, name)
