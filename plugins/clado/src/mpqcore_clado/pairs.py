"""Which layer pairs CLADO measures: all of them, a window in forward order, or blocks.

Measuring every pair costs ``C(L, 2)·|B|²`` evaluations. Interactions between distant
layers are usually weaker, so two cheaper patterns are offered:

* ``window``: layers at most ``k`` positions apart in forward order;
* ``block``: layers of the same repeated block. A layer's block is its parent module
  path up to and including the first purely numeric component (the index into a
  ``Sequential``/``ModuleList`` of repeated blocks): ``layer1.0.conv2`` and
  ``layer1.0.downsample.0`` share ``layer1.0``; ``encoder.layer.3.attention.self.query``
  is in ``encoder.layer.3``. Layers without such an index (a stem, a head, a plain CNN)
  form one block together.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

__all__ = ["PAIR_MODES", "block_of", "expected_evaluations", "layer_pairs"]

PAIR_MODES = ("all", "window", "block")


def block_of(fqn: str) -> str:
    """The repeated block a layer belongs to ("" for layers outside any)."""
    parent = fqn.split(".")[:-1]
    for n, part in enumerate(parent):
        if part.isdigit():
            return ".".join(parent[: n + 1])
    return ""


def layer_pairs(layers: Sequence[str], mode: str = "all", window: int = 1) -> list[tuple[int, int]]:
    """Index pairs ``(i, m)``, ``i < m``, into ``layers`` (forward order) to measure."""
    n = len(layers)
    if mode == "all":
        return list(itertools.combinations(range(n), 2))
    if mode == "window":
        return [(i, m) for i in range(n) for m in range(i + 1, min(n, i + window + 1))]
    if mode == "block":
        blocks = [block_of(f) for f in layers]
        return [(i, m) for i, m in itertools.combinations(range(n), 2) if blocks[i] == blocks[m]]
    raise ValueError(f"unknown pair mode {mode!r}; valid: {', '.join(PAIR_MODES)}")


def expected_evaluations(n_layers: int, n_bits: int, n_pairs: int | None = None) -> int:
    """``L·|B| + P·|B|² + 1`` loss evaluations (``P = C(L, 2)`` when not given)."""
    if n_pairs is None:
        n_pairs = math.comb(n_layers, 2)
    return n_layers * n_bits + n_pairs * n_bits * n_bits + 1
