"""The evaluator's quantized weights kept for reuse, within a memory bound.

Two kinds of entry per (layer, bit-width): the quantizer's result with its integer codes
stored in one byte each (every candidate width is at most 8 bits; quantizers may return
them as int32, four times the size), and the dequantized float tensor an evaluation swaps
in. The codes are the expensive part to recompute (an MSE quantizer searches its clipping
range), the dequantized tensor is one multiply-add away from them; so, over a bound, the
least recently used dequantized tensors go first and codes only when the codes alone
exceed it. ``None``: no bound, everything is kept. The values never change, only the time
and memory spent. The bound holds between calls; while an entry is added the store holds
it and the older ones for a moment (:attr:`WeightCache.peak` counts that moment), and the
newest entry is always kept, so a bound below the largest layer keeps just that layer.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from mpqcore.lazy_imports import lazy_module

if TYPE_CHECKING:
    import torch

    from mpqcore.quantizers import QuantizedTensor
else:
    torch = lazy_module("torch")

__all__ = ["WeightCache", "compact_codes"]

Key = tuple[str, str, int]  # (kind, layer, bits); kind "codes" or "dequantized"


def compact_codes(q: QuantizedTensor) -> QuantizedTensor:
    """``q`` with its codes as uint8 when they fit (widths up to 8 bits): same values, a quarter
    of int32's memory."""
    if q.bits <= 8 and q.codes.dtype != torch.uint8 and not q.codes.is_floating_point():
        return attrs.evolve(q, codes=q.codes.to(torch.uint8))
    return q


def _nbytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    return sum(_nbytes(t) for t in (value.codes, value.scale, value.zero_point))


class WeightCache:
    """Least-recently-used store of codes and dequantized weights under ``bound`` bytes."""

    def __init__(self, bound: int | None):
        self.bound = bound
        self._entries: collections.OrderedDict[Key, tuple[Any, int]] = collections.OrderedDict()
        self.held = 0
        #: The most bytes held at once so far.
        self.peak = 0

    def get(self, key: Key, compute: Callable[[], Any]) -> Any:
        """The value under ``key``, computed by ``compute()`` and kept when absent."""
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key][0]
        value = compute()
        size = _nbytes(value)
        self._entries[key] = (value, size)
        self.held += size
        self.peak = max(self.peak, self.held)
        self._evict()
        return value

    def _evict(self) -> None:
        if self.bound is None:
            return
        while self.held > self.bound and len(self._entries) > 1:
            newest = next(reversed(self._entries))
            victim = next((k for k in self._entries if k[0] == "dequantized" and k != newest), None)
            if victim is None:
                victim = next(iter(self._entries))
            self.held -= self._entries.pop(victim)[1]

    def values(self, kind: str) -> list[Any]:
        """The entries of one kind (``"codes"`` or ``"dequantized"``) held now."""
        return [v for (k, _, _), (v, _) in self._entries.items() if k == kind]

    def clear(self) -> None:
        self._entries.clear()
        self.held = 0
