"""How a quantizer stores a weight: granularity of its scales, symmetry, metadata dtypes.

A quantizer declares its :class:`Layout` (attribute ``layout``) so that the ``size``
cost can count what is stored beside the integer codes (scales and zero points per
tensor, per channel or per group) and an export can write it. :func:`layout_of` is the
one place that reads it; a quantizer that declares none has an unknown layout (its
metadata cannot be counted, and formats that need a layout refuse it by name).

Granularity, for a weight whose output-channel axis holds ``C`` channels and whose other
axes hold ``K`` elements per channel (the channel-first 2-D view ``[C, K]``):

- ``tensor``: one scale (and zero point) for the whole tensor;
- ``channel``: one per output channel, ``C``;
- ``group``: one per ``group_size`` consecutive elements along ``K`` within a channel,
  ``C * ceil(K / group_size)`` (the last group of a channel may be shorter).

A symmetric layout stores no zero point (it is implied by the width: ``2**(bits-1)``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import attrs

from mpqcore.errors import ConfigError

__all__ = ["GRANULARITIES", "Layout", "layout_of"]

GRANULARITIES = ("tensor", "channel", "group")
_DTYPE_BITS = {"float32": 32, "float16": 16, "bfloat16": 16, "int32": 32, "uint8": 8, "int8": 8}


def _check_dtype(_instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if value not in _DTYPE_BITS:
        raise ConfigError(f"layout {attribute.name} {value!r} is not one of {sorted(_DTYPE_BITS)}")


@attrs.frozen
class Layout:
    """The stored form of one quantized weight: see the module docstring."""

    granularity: str = attrs.field(validator=attrs.validators.in_(GRANULARITIES))
    symmetric: bool = attrs.field(converter=bool)
    group_size: int | None = None
    scale_dtype: str = attrs.field(default="float32", validator=_check_dtype)
    zero_point_dtype: str = attrs.field(default="uint8", validator=_check_dtype)

    def __attrs_post_init__(self) -> None:
        if (self.granularity == "group") != (self.group_size is not None):
            raise ConfigError(f"layout: group_size is given exactly for 'group' granularity, got {self}")
        if self.group_size is not None and self.group_size < 1:
            raise ConfigError(f"layout: group_size must be >= 1, got {self.group_size}")

    def groups(self, weight_shape: Sequence[int], axis: int = 0) -> int:
        """How many scales a weight of ``weight_shape`` (output channels on ``axis``) stores."""
        if self.granularity == "tensor" or not weight_shape:
            return 1
        channels = int(weight_shape[axis])
        per_channel = math.prod(int(n) for i, n in enumerate(weight_shape) if i != axis)
        if self.granularity == "channel":
            return channels
        assert self.group_size is not None
        return channels * math.ceil(per_channel / self.group_size)

    def metadata_bits(self, weight_shape: Sequence[int], axis: int = 0) -> int:
        """Bits stored beside the codes: scales, plus zero points unless symmetric."""
        per_group = _DTYPE_BITS[self.scale_dtype] + (0 if self.symmetric else _DTYPE_BITS[self.zero_point_dtype])
        return self.groups(weight_shape, axis) * per_group


def layout_of(quantizer: Any) -> Layout | None:
    """The quantizer's declared :class:`Layout`, or ``None`` when it declares none."""
    layout = getattr(quantizer, "layout", None)
    if layout is None:
        return None
    if not isinstance(layout, Layout):
        name = getattr(quantizer, "name", type(quantizer).__name__)
        raise ConfigError(f"quantizer {name!r} declares layout {layout!r}; it must be an mpqcore.Layout (or absent)")
    return layout
