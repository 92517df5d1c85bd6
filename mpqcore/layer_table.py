"""The per-layer table of a report: what each layer got, what it costs, what the method measured.

One row per quantizable layer, in forward order: its kind, parameters, MACs, the
allocated bits, every tabled cost at those bits (in the cost model's unit), the
method's sensitivity ``c[l, b]`` at every candidate width, and the layer's share of the
predicted loss (its ``c[l, b_l]`` over the objective of the whole allocation). The JSON,
the CSV and the HTML report all read these rows, so they agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np

from mpqcore.types import Allocation, ModelSpec, Problem
from mpqcore.units import BUILTIN_UNITS

__all__ = ["OBJECTIVE_MEANINGS", "cost_units", "layer_rows", "objective_meaning"]

#: What a method's objective ``c[l, b]`` is, in words: the predicted loss increase the
#: solver minimizes, and its unit. A method may say so itself with an ``objective_meaning``
#: entry in its objective's ``info``; these are the methods of this repository.
OBJECTIVE_MEANINGS: Mapping[str, str] = {
    "hawq": "predicted increase of the calibration loss (divergence from the float model): Hessian trace x "
    "||Q_b(W) - W||^2, in loss units (second-order estimate)",
    "uniform": "no measurement: a preference for more bits (all layers tied to one width); not a loss",
    "eagl": "information lost: code entropy below the highest candidate width, in bits, scaled by parameters",
    "mixquant": "weight quantization error: mean squared error of Q_b(W) against W (weight units squared)",
    "alps": "measured drop of the metric (or rise of the loss) when this layer alone takes b bits",
    "clado": "measured change of the calibration loss when this layer takes b bits (pairs: the interaction)",
    "smpq": "Shapley value of the bit-width upgrades: each choice's average contribution to the loss or metric",
}


def objective_meaning(method: str, info: Mapping[str, Any] | None = None) -> str:
    """What the objective values of ``method`` mean (its own ``info['objective_meaning']`` first)."""
    own = (info or {}).get("objective_meaning")
    if isinstance(own, str) and own:
        return own
    return OBJECTIVE_MEANINGS.get(
        method, "the method's predicted quality loss of each (layer, bits) choice; lower is better (unit not declared)"
    )


def cost_units(names: Any, declared: Mapping[str, str] | None = None) -> dict[str, str]:
    """The unit of every cost in ``names``: declared by its cost model, else the built-in one, else ''."""
    declared = declared or {}
    return {name: str(declared.get(name) or BUILTIN_UNITS.get(name, "")) for name in names}


def layer_rows(spec: ModelSpec, problem: Problem, allocation: Allocation) -> list[dict[str, Any]]:
    """One dict per layer: fields of :class:`~mpqcore.types.LayerInfo` plus bits, costs, sensitivity, share."""
    objective = problem.objective
    index = {fqn: i for i, fqn in enumerate(objective.layers)}
    bits = [int(b) for b in objective.bits]
    total = float(objective.value(allocation.bits))
    rows = []
    for layer in spec.layers:
        b = int(allocation.bits[layer.fqn])
        i = index.get(layer.fqn)
        row: dict[str, Any] = attrs.asdict(layer)
        row["bits"] = b
        if i is None or b not in bits:  # not a decision of the problem (cannot happen for a search's report)
            row.update(costs={}, sensitivity={}, predicted=None, predicted_share=None)
            rows.append(row)
            continue
        j = bits.index(b)
        row["costs"] = {name: float(np.asarray(table)[i, j]) for name, table in problem.costs.items()}
        row["sensitivity"] = {str(w): float(objective.unary[i, k]) for k, w in enumerate(bits)}
        row["predicted"] = float(objective.unary[i, j])
        row["predicted_share"] = row["predicted"] / total if total != 0 else None
        rows.append(row)
    return rows
