"""Built-in cost models: weight memory, bit operations, and a latency table.

- ``size``: weight memory in bits as stored: ``params x bits`` for the integer codes plus
  the quantizer's metadata (its scales and zero points per tensor, channel or group, at
  their stored dtypes: :meth:`mpqcore.Layout.metadata_bits`). :func:`bind_quantizer`
  (called by :func:`mpqcore.measure`, the one place) tells it the measuring quantizer's
  layout; a quantizer that declares none, or a ``size`` never bound, counts the codes
  only (the former with a warning that says so).
- ``bops``: bit operations, ``MACs x weight bits x activation bits`` (activation bits
  the search's ``act_bits`` when it has them, else an option, 8 by default), as HAWQ-V3 and the BOPs literature count them. The MACs
  come from each layer's kind (:mod:`mpqcore.layer_kinds`); a lookup (an embedding, a
  position embedding) multiplies nothing and costs 0 BOPs at any width.
- ``latency``: a user table, from a JSON object ``{key: {bits: value}}`` or a CSV with
  columns ``layer,bits,latency``; a key is a layer's fqn, its module class (``Conv2d``,
  ``Linear``, ``LSTM``) or its layer kind (``conv``, ``rnn``); an fqn entry wins over a
  class entry, which wins over a layer-kind entry.
"""

from __future__ import annotations

import csv
import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from mpqcore.errors import ConfigError
from mpqcore.hookspecs import hookimpl
from mpqcore.layout import Layout, layout_of
from mpqcore.options import option
from mpqcore.types import LayerInfo, ModelSpec

__all__ = ["BitOperations", "LatencyTable", "WeightSize", "bind_quantizer", "cost_table", "with_activation_widths"]


@attrs.frozen
class WeightSize:
    """Weight memory in bits as stored: codes (parameters x bit-width) plus the layout's metadata.

    ``layout`` is the measuring quantizer's (see :func:`bind_quantizer`); ``None``
    counts the codes only. The metadata does not depend on the width (one scale per
    tensor, channel or group whatever the bits), so it is a fixed cost per layer:
    :meth:`metadata` gives it, and an average-bits budget, which counts code bits per
    weight, adds it to its limit (:meth:`mpqcore.Budget.resolve`).
    """

    layout: Layout | None = attrs.field(default=None, init=False)
    unit = "bits"

    def with_layout(self, layout: Layout | None) -> WeightSize:
        """This cost model counting what ``layout`` stores beside the codes."""
        bound = WeightSize()
        object.__setattr__(bound, "layout", layout)
        return bound

    def metadata(self, layer: LayerInfo) -> float:
        """Bits of scales and zero points ``layer``'s weight stores (0 without a layout)."""
        if self.layout is None:
            return 0.0
        return float(self.layout.metadata_bits(layer.weight_shape, layer.axis))

    def cost(self, layer: LayerInfo, bits: int) -> float:
        return float(layer.params) * bits + self.metadata(layer)


def bind_quantizer(models: Mapping[str, Any], quantizer: Any) -> dict[str, Any]:
    """``models`` with every cost model that counts stored metadata (it has ``with_layout``) bound to
    ``quantizer``'s layout: the one place where a cost learns the measurement's quantizer.

    A quantizer that declares no layout leaves such a model counting the codes only,
    with a :class:`UserWarning` saying so.
    """
    layout = layout_of(quantizer)
    takers = [name for name, m in models.items() if callable(getattr(m, "with_layout", None))]
    if takers and layout is None:
        name = getattr(quantizer, "name", type(quantizer).__name__)
        warnings.warn(
            f"quantizer {name!r} declares no layout (mpqcore.Layout), so the {', '.join(map(repr, takers))} cost "
            "counts the integer codes only, not its scales and zero points; declare `layout` on the quantizer",
            UserWarning,
            stacklevel=3,
        )
    return {name: m.with_layout(layout) if name in takers else m for name, m in models.items()}


@attrs.frozen
class BitOperations:
    """Bit operations: MACs x weight bits x activation bits."""

    act_bits: int = option(int, default=8, minimum=1, help="activation bits of every layer's input")
    per_layer: Mapping[str, int] = attrs.field(
        factory=dict,
        converter=lambda m: {str(k): int(v) for k, v in dict(m).items()},
        metadata={"type": "mapping", "help": "activation bits by layer fqn, overriding act_bits"},
    )
    unit = "BOPs"

    def cost(self, layer: LayerInfo, bits: int) -> float:
        # A counted 0 is a layer that multiplies nothing (an embedding lookup): 0 BOPs.
        if layer.macs <= 0 and not layer.macs_measured:
            raise ConfigError(
                f"cost model 'bops': layer {layer.fqn!r} has no MAC count; introspect the model with an example batch"
            )
        return float(layer.macs) * bits * self.per_layer.get(layer.fqn, self.act_bits)


def with_activation_widths(
    models: Mapping[str, Any], cost_options: Mapping[str, Mapping[str, Any]] | None, act_bits_of: Mapping[str, int]
) -> dict[str, Any]:
    """``models`` with every :class:`BitOperations` counting the search's activation widths.

    ``act_bits_of`` is ``{layer: activation bits}`` (the evaluator's); a bops model whose
    ``act_bits`` or ``per_layer`` option the user gave keeps what the user said.
    """
    out = dict(models)
    for name, model in models.items():
        given = (cost_options or {}).get(name, {})
        if isinstance(model, BitOperations) and act_bits_of and not {"act_bits", "per_layer"} & set(given):
            out[name] = attrs.evolve(model, per_layer=act_bits_of)
    return out


def _read_table(table) -> dict[str, dict[int, float]]:
    if isinstance(table, Mapping):
        raw = table
    else:
        path = Path(table)
        if not path.exists():
            raise ConfigError(f"cost model 'latency': table file {str(path)!r} does not exist")
        if path.suffix.lower() == ".csv":
            raw = {}
            with path.open(newline="") as fh:
                reader = csv.DictReader(fh)
                need = {"layer", "bits", "latency"}
                if not reader.fieldnames or not need <= set(reader.fieldnames):
                    raise ConfigError(
                        f"latency table {str(path)!r} needs CSV columns {sorted(need)}, got {reader.fieldnames}"
                    )
                for row in reader:
                    raw.setdefault(row["layer"], {})[row["bits"]] = row["latency"]
        else:
            try:
                raw = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise ConfigError(f"latency table {str(path)!r} is neither CSV nor valid JSON: {exc}") from exc
    try:
        return {str(k): {int(b): float(v) for b, v in row.items()} for k, row in raw.items()}
    except (TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"latency table must map layer -> {{bits: latency}}: {exc}") from exc


@attrs.frozen
class LatencyTable:
    """A measured latency per layer (fqn or kind) and bit-width, from a JSON or CSV table."""

    table: dict = attrs.field(
        converter=_read_table,
        metadata={"type": "path or mapping", "help": "JSON or CSV file, or {layer or kind: {bits: latency}}"},
    )
    unit: str = option(str, default="latency", help="the unit the table's values are in")

    def cost(self, layer: LayerInfo, bits: int) -> float:
        for key in (k for k in (layer.fqn, layer.kind, layer.layer_kind) if k):
            row = self.table.get(key)
            if row is not None and bits in row:
                return row[bits]
        raise ConfigError(
            f"latency table has no entry for layer {layer.fqn!r} (kind {layer.kind}) at {bits} bits; "
            f"add a row keyed by {layer.fqn!r} or {layer.kind!r}"
        )


def cost_table(model, spec: ModelSpec, bits, *, name: str = "") -> np.ndarray:
    """``[layer, bits]`` table of ``model.cost`` for every layer of ``spec``."""
    out = np.empty((len(spec.layers), len(bits)))
    for i, layer in enumerate(spec.layers):
        for j, b in enumerate(bits):
            value = model.cost(layer, int(b))
            if not np.isfinite(value) or value < 0:
                raise ConfigError(
                    f"cost model {name!r} returned {value} for {layer.fqn!r} at {b} bits; costs must be finite and >= 0"
                )
            out[i, j] = value
    return out


@hookimpl
def mpq_register_cost_models(registry) -> None:
    registry.add("size", WeightSize)
    registry.add("bops", BitOperations)
    registry.add("latency", LatencyTable)
