"""The value classes every arrow of a search carries.

All are frozen ``attrs`` classes: a layer's description, a model's description, a
budget, a measured objective, an allocation problem and its solution. They are
immutable all the way down: numeric tables are read-only numpy arrays indexed
``[layer, bits]`` in the order of ``layers`` and ``bits``, mappings are
:class:`~mpqcore.frozen.FrozenDict` (item assignment raises ``TypeError``), sequences are
tuples. Each class validates itself when it is built (``attrs.evolve`` builds anew), so a
value that exists is a valid one. Change one with ``attrs.evolve``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
import numpy as np

from mpqcore.constraints import BITS_RANGE, Ties, check_ties, check_width, expand_pins, normalize_ties
from mpqcore.errors import ConfigError
from mpqcore.frozen import FrozenDict, freeze
from mpqcore.naming import suggest

__all__ = [
    "BITS_RANGE",
    "FLOAT_REASONS",
    "Allocation",
    "Budget",
    "Coverage",
    "FloatWeight",
    "FrozenDict",
    "LayerInfo",
    "ModelSpec",
    "Objective",
    "PairKey",
    "Problem",
    "check_bits",
    "check_width",
]

#: A pair term's key: (layer, bits, other layer, other bits).
PairKey = tuple[str, int, str, int]


def _frozen_array(value: Any, *, dtype: type = float) -> np.ndarray:
    arr: np.ndarray = np.array(value, dtype=dtype, copy=True)
    arr.flags.writeable = False
    return arr


def _as_tuple(values: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(values)


def _optional_frozen_array(value: Any) -> np.ndarray | None:
    return None if value is None else _frozen_array(value)


def check_bits(bits: Iterable[Any], *, what: str = "bits") -> tuple[int, ...]:
    """Candidate bit-widths as a sorted tuple, or a :class:`ConfigError` naming the bad item.

    The one check of a set of candidates: a sequence (not a string: ``"248"`` is not
    ``(2, 4, 8)``, nor a mapping), non-empty, no repeats, and each item a bit-width by
    :func:`mpqcore.constraints.check_width` (an integer 1..16; ``2.5`` and ``True`` are refused).
    """
    valid = f"integers {BITS_RANGE.start}..{BITS_RANGE.stop - 1}"
    if isinstance(bits, (str, bytes)):
        raise ConfigError(f"{what} = {bits!r} is a string, not a sequence of bit-widths; write e.g. (2, 4, 8)")
    if isinstance(bits, Mapping) or not isinstance(bits, Iterable):
        raise ConfigError(f"{what} must be a sequence of bit-widths ({valid}), e.g. (2, 4, 8); got {bits!r}")
    items = list(bits)
    if not items:
        raise ConfigError(f"{what} is empty; give at least one bit-width ({valid})")
    out = tuple(check_width(b, what=f"{what}[{i}]") for i, b in enumerate(items))
    if len(set(out)) != len(out):
        repeated = sorted({b for b in out if out.count(b) > 1})
        raise ConfigError(f"{what} = {list(out)} repeats {repeated}; give each bit-width once")
    return tuple(sorted(out))


#: The old private name, still imported by callers.
_check_bits = check_bits


# ---------------------------------------------------------------------------
# Layers and models
# ---------------------------------------------------------------------------


@attrs.frozen
class LayerInfo:
    """One quantizable layer (one weight tensor, one bit-width decision), named by its fqn.

    ``kind`` is the class of the module holding the weight (``Conv2d``, ``LSTM``);
    ``layer_kind`` the registered layer kind that found it (``conv``, ``rnn``; see
    :mod:`mpqcore.layer_kinds`). ``params`` counts the weight elements that get quantized
    (bias excluded); ``macs`` the multiply-accumulates of one forward pass over one
    example batch divided by its batch size, from every module that uses the weight;
    ``macs_measured`` says whether a forward pass counted them (then 0 means the layer
    multiplies nothing, as an embedding lookup). ``aliases`` lists the other fqns under
    which the same tensor is reachable (a module registered twice, tied weights): shared
    layers are one decision, reported once. ``weights`` are the tensor's parameter
    paths under every name (its own first), ``axis`` its output-channel axis.
    """

    fqn: str = attrs.field(validator=attrs.validators.instance_of(str))
    kind: str = attrs.field(validator=attrs.validators.instance_of(str))
    params: int = attrs.field(converter=int)
    macs: int = attrs.field(converter=int, default=0)
    weight_shape: tuple[int, ...] = attrs.field(converter=lambda s: tuple(int(n) for n in s), default=())
    aliases: tuple[str, ...] = attrs.field(converter=lambda a: tuple(str(n) for n in a), default=())
    layer_kind: str = attrs.field(default="", validator=attrs.validators.instance_of(str))
    weights: tuple[str, ...] = attrs.field(converter=lambda a: tuple(str(n) for n in a), default=())
    axis: int = attrs.field(converter=int, default=0)
    macs_measured: bool = attrs.field(default=False, converter=bool)

    @params.validator
    def _check_params(self, _attr, value):
        if value <= 0:
            raise ConfigError(f"layer {self.fqn!r}: params must be positive, got {value}")

    @macs.validator
    def _check_macs(self, _attr, value):
        if value < 0:
            raise ConfigError(f"layer {self.fqn!r}: macs must be >= 0, got {value}")

    @property
    def names(self) -> tuple[str, ...]:
        """The layer's fqn and its aliases."""
        return (self.fqn, *self.aliases)


#: Why a weight stays in float, the keys of :attr:`FloatWeight.reason`.
FLOAT_REASONS: Mapping[str, str] = FrozenDict(
    {
        "unknown-kind": "no layer kind claims its module",
        "excluded": "excluded by the user",
        "default-excluded": "position embedding or class token (left float by default)",
        "tied": "tied to an excluded layer",
        "refused": "its layer kind cannot put a quantized weight in",
    }
)


@attrs.frozen
class FloatWeight:
    """A weight parameter that stays in float: its name, element count and why (a key of :data:`FLOAT_REASONS`)."""

    name: str = attrs.field(validator=attrs.validators.instance_of(str))
    params: int = attrs.field(converter=int)
    reason: str = attrs.field(validator=attrs.validators.in_(tuple(FLOAT_REASONS)))
    detail: str = ""


def _float_weights(values: Iterable[FloatWeight]) -> tuple[FloatWeight, ...]:
    out = tuple(values)
    for v in out:
        if not isinstance(v, FloatWeight):
            raise ConfigError(f"ModelSpec.float_weights holds FloatWeight values, got {type(v).__name__}")
    return out


@attrs.frozen
class Coverage:
    """How much of a model's weights an allocation quantizes (see :meth:`ModelSpec.coverage`).

    ``weight_params``: every weight parameter (a tensor with two or more axes: matrices,
    kernels, embedding tables; biases and normalization scales are not weights), each
    tied tensor once. ``average_bits`` is over the quantized layers,
    ``average_bits_all`` over every weight with float ones at 32 bits.
    """

    quantized_params: int
    weight_params: int
    average_bits: float
    average_bits_all: float
    float_weights: tuple[FloatWeight, ...] = ()

    @property
    def share(self) -> float:
        """The share of weight parameters quantized (1.0 for a model without weights left float)."""
        return self.quantized_params / self.weight_params if self.weight_params else 1.0

    def float_by_reason(self) -> dict[str, int]:
        """Parameters left float, per reason."""
        out: dict[str, int] = {}
        for w in self.float_weights:
            out[w.reason] = out.get(w.reason, 0) + w.params
        return out

    def line(self) -> str:
        """One line of text: the share quantized, both averages and what stays float why."""
        text = (
            f"coverage: {100 * self.share:.1f}% of {self.weight_params:,} weight parameters quantized; "
            f"average {self.average_bits:.2f} bits over the quantized layers, "
            f"{self.average_bits_all:.2f} over all weights (float = 32)"
        )
        by_reason = self.float_by_reason()
        if by_reason:
            parts = ", ".join(f"{FLOAT_REASONS[r]}: {n:,}" for r, n in sorted(by_reason.items(), key=lambda kv: -kv[1]))
            text += f"; float: {parts}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "quantized_params": self.quantized_params,
            "weight_params": self.weight_params,
            "share": self.share,
            "average_bits": self.average_bits,
            "average_bits_all": self.average_bits_all,
            "float": [attrs.asdict(w) for w in self.float_weights],
        }


@attrs.frozen
class ModelSpec:
    """The quantizable layers of a model, in forward (registration) order, and its weights left float.

    ``float_weights`` lists every weight parameter that is not one of ``layers``, with
    its reason (:data:`FLOAT_REASONS`); :meth:`coverage` turns an allocation into the
    share of weights quantized and the average bits over all of them.
    """

    layers: tuple[LayerInfo, ...] = attrs.field(converter=_as_tuple)
    float_weights: tuple[FloatWeight, ...] = attrs.field(default=(), converter=_float_weights)

    @layers.validator
    def _check(self, _attr: Any, value: tuple[LayerInfo, ...]) -> None:
        seen: set[str] = set()
        dup: set[str] = set()
        for layer in value:
            for name in layer.names:
                (dup if name in seen else seen).add(name)
        if dup:
            raise ConfigError(f"ModelSpec: duplicate layer names {sorted(dup)}")

    @property
    def fqns(self) -> tuple[str, ...]:
        return tuple(layer.fqn for layer in self.layers)

    @property
    def total_params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def total_macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def weight_params(self) -> int:
        """Every weight parameter of the model: the layers' and those left float."""
        return self.total_params + sum(w.params for w in self.float_weights)

    def layer(self, fqn: str) -> LayerInfo:
        """The layer named ``fqn`` or having it as an alias."""
        for layer in self.layers:
            if fqn in layer.names:
                return layer
        raise ConfigError(f"no quantizable layer named {fqn!r}{suggest(fqn, self.fqns)}")

    def coverage(self, bits: Mapping[str, int]) -> Coverage:
        """The coverage of allocation ``bits`` (``{fqn: bits}``; a layer it does not name stays float)."""
        params = {layer.fqn: layer.params for layer in self.layers}
        quantized = {f: int(b) for f, b in bits.items() if f in params}
        q_params = sum(params[f] for f in quantized)
        q_bits = sum(params[f] * b for f, b in quantized.items())
        total = self.weight_params
        left = [FloatWeight(f, n, "excluded", "not in the allocation") for f, n in params.items() if f not in quantized]
        return Coverage(
            quantized_params=q_params,
            weight_params=total,
            average_bits=q_bits / q_params if q_params else 32.0,
            average_bits_all=(q_bits + 32 * (total - q_params)) / total if total else 32.0,
            float_weights=(*self.float_weights, *left),
        )

    def __len__(self) -> int:
        return len(self.layers)


# ---------------------------------------------------------------------------
# Budgets
# ---------------------------------------------------------------------------

_BUDGET_KINDS = ("absolute", "average_bits", "relative")


def _budget_value(value: Any) -> float:
    # bool is an int in Python, and a string is text: neither is a limit (float("4") would take it)
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise ConfigError(f"a budget's value must be a positive number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigError(f"a budget's value must be a positive number, got {value!r}") from exc


@attrs.frozen
class Budget:
    """An upper bound on the sum over layers of one cost model's cost.

    Build one with a constructor: :meth:`absolute`, :meth:`average_bits`,
    :meth:`size_bytes` or :meth:`relative`. :meth:`resolve` turns it into a number in
    the cost model's unit once the layers' cost table is known.
    """

    cost: str = attrs.field(validator=attrs.validators.instance_of(str))
    kind: str = attrs.field(validator=attrs.validators.in_(_BUDGET_KINDS))
    value: float = attrs.field(converter=_budget_value)
    reference_bits: int = attrs.field(converter=lambda b: check_width(b, what="reference_bits"), default=8)

    @cost.validator
    def _check_cost(self, _attr, value):
        if not value.strip():
            raise ConfigError("a budget needs the name of a cost model, e.g. 'size' or 'bops'; got ''")

    @value.validator
    def _check_value(self, _attr, value):
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(f"budget on {self.cost!r}: value must be a positive finite number, got {value}")
        if self.kind == "relative" and value > 1e6:
            raise ConfigError(
                f"relative budget fraction {value:g} is not a fraction; give e.g. 0.6 for 60% of the "
                f"{self.reference_bits}-bit cost (at most 1e6)"
            )

    @classmethod
    def absolute(cls, cost: str, limit: float) -> Budget:
        """At most ``limit`` in the cost model's own unit (bits for ``size``)."""
        return cls(cost=cost, kind="absolute", value=limit)

    @classmethod
    def average_bits(cls, bits: float) -> Budget:
        """A parameter-weighted average weight bit-width of at most ``bits``."""
        return cls(cost="size", kind="average_bits", value=bits)

    @classmethod
    def size_bytes(cls, n: float) -> Budget:
        """At most ``n`` bytes of quantized weights."""
        return cls(cost="size", kind="absolute", value=float(n) * 8.0)

    @classmethod
    def relative(cls, cost: str, fraction: float, reference_bits: int = 8) -> Budget:
        """At most ``fraction`` of the cost of every layer at ``reference_bits``."""
        return cls(cost=cost, kind="relative", value=fraction, reference_bits=reference_bits)

    @classmethod
    def parse(cls, text: str) -> Budget:
        """Parse the command line's ``NAME=VALUE`` form.

        ``avg-bits=4``, ``size-bytes=6e6``, ``size-mb=6``, ``bops=0.6x`` (relative to
        8 bits), ``COST=N`` (absolute).
        """
        if "=" not in text:
            raise ConfigError(
                f"budget {text!r} is not NAME=VALUE; valid: avg-bits=4, size-bytes=N, size-mb=N, "
                "COST=N (absolute) or COST=0.6x (fraction of the 8-bit cost)"
            )
        name, raw = (part.strip() for part in text.split("=", 1))
        if not name:
            raise ConfigError(f"budget {text!r} names no cost model; write COST=VALUE, e.g. size=4e6 or avg-bits=4")
        relative = raw.endswith("x") and name not in ("avg-bits", "average-bits", "size-bytes", "size-mb")
        try:
            number = float(raw[:-1] if relative else raw)
        except ValueError as exc:
            raise ConfigError(f"budget {text!r}: {raw!r} is not a number") from exc
        # The constructors' own errors (a negative or non-finite value) pass through as they are.
        if name in ("avg-bits", "average-bits"):
            return cls.average_bits(number)
        if name == "size-bytes":
            return cls.size_bytes(number)
        if name == "size-mb":
            return cls.size_bytes(number * 1e6)
        if relative:
            return cls.relative(name, number)
        return cls.absolute(name, number)

    def resolve(
        self,
        table: np.ndarray,
        bits: Sequence[int],
        params: Sequence[int] | None = None,
        *,
        cost_at: Callable[[int], float] | None = None,
        fixed: float = 0.0,
    ) -> float:
        """The limit in cost units: the one rule that turns a budget into a number.

        ``table[layer, j]`` is every layer's cost at ``bits[j]`` under this budget's
        cost model. ``absolute`` is its value; ``average_bits`` is its value times the
        layers' parameter count ``params`` (the ``size`` cost of a layer at ``b`` bits is
        ``params * b``); ``relative`` is its value times the cost of every layer at
        ``reference_bits``, read from the table when those bits are tabulated, else from
        ``cost_at(reference_bits)`` (the cost model's total at that bit-width).
        ``fixed`` is the part of the table that no width changes (the scales and zero
        points the ``size`` cost counts): average bits count the codes per weight, so
        it is added to an average-bits limit, while an absolute budget (bytes) counts
        everything stored. :meth:`mpqcore.Measurement.with_budgets` resolves through here.
        """
        if self.kind == "absolute":
            return self.value
        if self.kind == "average_bits":
            if params is None:
                raise ConfigError("an average-bits budget needs the layers' parameter counts")
            return self.value * float(np.sum(params)) + float(fixed)
        bits = [int(b) for b in bits]
        if self.reference_bits in bits:
            reference = float(np.asarray(table)[:, bits.index(self.reference_bits)].sum())
        elif cost_at is not None:
            reference = float(cost_at(self.reference_bits))
        else:
            raise ConfigError(
                f"relative budget on {self.cost!r} refers to {self.reference_bits} bits, "
                f"which is not among the tabulated bits {bits}; tabulate them or give the cost model"
            )
        return self.value * reference

    def describe(self) -> str:
        if self.kind == "average_bits":
            return f"average {self.value:g} bits per weight"
        if self.kind == "relative":
            return f"{self.cost} <= {self.value:g} x its {self.reference_bits}-bit cost"
        return f"{self.cost} <= {self.describe_limit()}"

    def describe_limit(self, unit: str | None = None) -> str:
        """The absolute limit at human scale in the cost's ``unit`` (built-in costs know theirs): ``4.19 MB``."""
        from mpqcore.units import BUILTIN_UNITS, human

        unit = unit if unit is not None else BUILTIN_UNITS.get(self.cost)
        return human(self.value, unit) if unit else f"{self.value:g}"

    def to_dict(self) -> dict:
        return attrs.asdict(self)


# ---------------------------------------------------------------------------
# Objectives
# ---------------------------------------------------------------------------


def _pairs_converter(pairs: Mapping[PairKey, float] | Sequence | None) -> FrozenDict[PairKey, float]:
    if pairs is None:
        return FrozenDict()
    items = pairs.items() if isinstance(pairs, Mapping) else ((tuple(p[:4]), p[4]) for p in pairs)
    out: dict[PairKey, float] = {}
    for key, value in items:
        a, ba, c, bc = key
        key = (str(a), int(ba), str(c), int(bc))
        if (key[2], key[3]) < (key[0], key[1]):  # canonical order, summing duplicates
            key = (key[2], key[3], key[0], key[1])
        out[key] = out.get(key, 0.0) + float(value)
    return FrozenDict(out)


@attrs.frozen(eq=False)
class Objective:
    """What a solver minimizes: per-(layer, bits) terms plus optional pair terms.

    ``unary[l, j]`` is the cost (e.g. a loss increase) of giving ``layers[l]``
    ``bits[j]``. ``pairs[(a, ba, c, bc)]`` is added when layer ``a`` takes ``ba``
    bits *and* layer ``c`` takes ``bc``; keys are stored with ``(a, ba) < (c, bc)``
    and ``a != c``. ``stderr`` (same shape as ``unary``) is the estimate's standard
    error where the method reports one. ``ties`` are groups of layers the method
    requires to share a bit-width (the ``uniform`` method ties all layers).
    ``info`` carries method diagnostics (forward passes, spreads, ...), frozen too
    (dicts become read-only mappings, lists tuples).
    """

    layers: tuple[str, ...] = attrs.field(converter=lambda x: tuple(str(n) for n in x))
    bits: tuple[int, ...] = attrs.field(converter=_as_tuple)  # checked, not coerced: 2.5 is an error
    unary: np.ndarray = attrs.field(converter=_frozen_array)
    pairs: Mapping[PairKey, float] = attrs.field(factory=FrozenDict, converter=_pairs_converter)
    stderr: np.ndarray | None = attrs.field(default=None, converter=_optional_frozen_array)
    ties: Ties = attrs.field(default=(), converter=normalize_ties)
    info: Mapping[str, Any] = attrs.field(factory=FrozenDict, converter=freeze)

    def __attrs_post_init__(self):
        self.validate()

    def validate(self, *, source: str = "objective") -> None:
        """Raise :class:`ConfigError` naming ``source`` when the objective is malformed."""
        bits = list(self.bits)
        if not bits or any(b not in BITS_RANGE for b in bits):
            raise ConfigError(f"{source}: bits {bits} must be non-empty and within 1..16")
        if any(a >= b for a, b in itertools.pairwise(bits)):
            # value() and the solvers index columns by bit-width; a repeat would alias two columns.
            raise ConfigError(f"{source}: bits {bits} must be distinct and ascending (columns of unary follow bits)")
        shape = (len(self.layers), len(self.bits))
        if self.unary.shape != shape:
            raise ConfigError(f"{source}: unary has shape {self.unary.shape}, expected {shape} (layers x bits)")
        if not np.all(np.isfinite(self.unary)):
            bad = [(self.layers[i], self.bits[j]) for i, j in zip(*np.nonzero(~np.isfinite(self.unary)), strict=True)]
            raise ConfigError(f"{source}: non-finite values (NaN or inf) at {bad[:5]}")
        if self.stderr is not None and self.stderr.shape != shape:
            raise ConfigError(f"{source}: stderr has shape {self.stderr.shape}, expected {shape}")
        names = set(self.layers)
        if len(names) != len(self.layers):
            raise ConfigError(f"{source}: duplicate layer names")
        bitset = set(self.bits)
        for (a, ba, c, bc), value in self.pairs.items():
            if a not in names or c not in names:
                raise ConfigError(f"{source}: pair term names unknown layer {a if a not in names else c!r}")
            if ba not in bitset or bc not in bitset:
                raise ConfigError(f"{source}: pair term ({a},{ba},{c},{bc}) uses bits outside {sorted(bitset)}")
            if a == c:
                raise ConfigError(f"{source}: pair term ({a},{ba},{c},{bc}) pairs a layer with itself")
            if not math.isfinite(value):
                raise ConfigError(f"{source}: pair term ({a},{ba},{c},{bc}) is not finite")
        check_ties(self.ties, self.layers, source=source)

    @classmethod
    def from_dict(cls, table: Mapping[str, Mapping[Any, float]], pairs: Any = None, **kwargs: Any) -> Objective:
        """Build from ``{fqn: {bits: value}}``; every layer must list the same bits."""
        layers = list(table)
        if not layers:
            raise ConfigError("objective has no layers")
        bits = sorted(int(b) for b in table[layers[0]])
        unary = np.empty((len(layers), len(bits)))
        for i, name in enumerate(layers):
            row = {int(b): float(v) for b, v in table[name].items()}
            if sorted(row) != bits:
                raise ConfigError(f"objective: layer {name!r} lists bits {sorted(row)}, expected {bits}")
            unary[i] = [row[b] for b in bits]
        return cls(layers=layers, bits=bits, unary=unary, pairs=pairs, **kwargs)

    def as_dict(self) -> dict[str, dict[int, float]]:
        return {
            name: {b: float(self.unary[i, j]) for j, b in enumerate(self.bits)} for i, name in enumerate(self.layers)
        }

    @property
    def has_pairs(self) -> bool:
        return bool(self.pairs)

    def value(self, allocation: Mapping[str, int]) -> float:
        """The objective of a complete ``{fqn: bits}`` assignment."""
        index = {name: i for i, name in enumerate(self.layers)}
        bpos = {b: j for j, b in enumerate(self.bits)}
        total = 0.0
        for name, b in allocation.items():
            if name in index:
                total += float(self.unary[index[name], bpos[int(b)]])
        for (a, ba, c, bc), value in self.pairs.items():
            if allocation.get(a) == ba and allocation.get(c) == bc:
                total += value
        return total

    def without_pairs(self) -> Objective:
        """The separable (diagonal-only) ablation of this objective."""
        return attrs.evolve(self, pairs=FrozenDict())


# ---------------------------------------------------------------------------
# The allocation problem (the problem file) and its solution
# ---------------------------------------------------------------------------


def _costs_converter(costs: Mapping[str, Any] | None) -> FrozenDict[str, np.ndarray]:
    return FrozenDict({str(k): _frozen_array(v) for k, v in dict(costs or {}).items()})


def _budgets_converter(budgets: Mapping[str, Any] | None) -> FrozenDict[str, float]:
    return FrozenDict({str(k): float(v) for k, v in dict(budgets or {}).items()})


def _pins_converter(pins: Mapping[str, Any] | None) -> FrozenDict[str, int]:
    # checked, not truncated: a pin to 4.5 is an error, not a pin to 4
    return FrozenDict({str(k): check_width(v, what=f"pin {k!r}") for k, v in dict(pins or {}).items()})


def _allocation_bits(bits: Mapping[str, Any]) -> FrozenDict[str, int]:
    if not isinstance(bits, Mapping):
        raise ConfigError(f"Allocation.bits must map each layer to its bit-width, got {type(bits).__name__}")
    return FrozenDict({str(k): check_width(v, what=f"Allocation.bits[{k!r}]") for k, v in bits.items()})


@attrs.frozen(eq=False)
class Problem:
    """One allocation problem: minimize the objective subject to budgets, pins, ties.

    ``costs[name][l, j]`` is layer ``l``'s cost at ``bits[j]`` under cost model
    ``name``; ``budgets[name]`` bounds the sum of that table's chosen entries.
    ``pins`` maps fqns or fnmatch patterns to a bit-width; ``ties`` are groups of
    layers forced to the same bit-width. See :mod:`mpqcore.problem` for the JSON form.
    """

    objective: Objective = attrs.field(validator=attrs.validators.instance_of(Objective))
    costs: Mapping[str, np.ndarray] = attrs.field(factory=FrozenDict, converter=_costs_converter)
    budgets: Mapping[str, float] = attrs.field(factory=FrozenDict, converter=_budgets_converter)
    pins: Mapping[str, int] = attrs.field(factory=FrozenDict, converter=_pins_converter)
    ties: Ties = attrs.field(default=(), converter=normalize_ties)

    def __attrs_post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` when a table, budget, pin or tie does not fit the objective."""
        layers, bits = self.layers, self.bits
        shape = (len(layers), len(bits))
        for name, arr in self.costs.items():
            if arr.shape != shape:
                raise ConfigError(f"cost table {name!r} has shape {arr.shape}, expected {shape} (layers x bits)")
            if not np.all(np.isfinite(arr)):
                raise ConfigError(f"cost table {name!r} has non-finite entries")
        for name, limit in self.budgets.items():
            if name not in self.costs:
                raise ConfigError(
                    f"budget {name!r} names no cost table{suggest(name, self.costs)}; "
                    f"tables: {sorted(self.costs) or '(none)'}"
                )
            if not math.isfinite(limit):
                raise ConfigError(f"budget {name!r} = {limit} is not finite")
        self.pinned()
        check_ties(self.ties, layers)

    @property
    def layers(self) -> tuple[str, ...]:
        return self.objective.layers

    @property
    def bits(self) -> tuple[int, ...]:
        return self.objective.bits

    @property
    def all_ties(self) -> Ties:
        """The problem's ties and the objective's (a method's), which solvers honour alike."""
        return self.ties + self.objective.ties

    def pinned(self) -> dict[str, int]:
        """The pins expanded to ``{fqn: bits}`` (patterns matched against the layers)."""
        return expand_pins(self.pins, self.layers, self.bits)

    def with_budgets(self, budgets: Mapping[str, float]) -> Problem:
        return attrs.evolve(self, budgets=budgets)


@attrs.frozen
class Allocation:
    """A solver's answer: the bit-width of every layer and what it costs.

    ``status`` is one of ``optimal``, ``time_limit`` (feasible, not proven),
    ``heuristic``; ``gap`` the relative optimality gap (0 when proven), ``bound``
    the best proven lower bound on the objective where the solver has one.
    """

    bits: Mapping[str, int] = attrs.field(converter=_allocation_bits)
    objective: float = attrs.field(converter=float)
    costs: Mapping[str, float] = attrs.field(factory=FrozenDict, converter=_budgets_converter)
    status: str = "optimal"
    gap: float = attrs.field(default=0.0, converter=float)
    bound: float | None = None
    solver: str = ""
    solve_time: float = 0.0
    info: Mapping[str, Any] = attrs.field(factory=FrozenDict, converter=freeze)

    def to_dict(self) -> dict:
        return {
            "allocation": dict(self.bits),
            "objective": self.objective,
            "costs": dict(self.costs),
            "status": self.status,
            # strict JSON has no inf/nan: an unknown gap or bound is null
            "gap": self.gap if math.isfinite(self.gap) else None,
            "bound": self.bound if self.bound is not None and math.isfinite(self.bound) else None,
            "solver": self.solver,
            "solve_time": self.solve_time,
        }

    def average_bits(self, params: Mapping[str, int]) -> float:
        total = sum(params[name] for name in self.bits)
        return sum(params[name] * b for name, b in self.bits.items()) / total
