"""What a sensitivity method receives: the layers to decide, the bits, the evaluator."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import attrs
import numpy as np

from mpqcore.evaluate import Evaluator
from mpqcore.types import LayerInfo, ModelSpec

__all__ = ["MeasureContext"]

T = TypeVar("T")


@attrs.frozen(eq=False)
class MeasureContext:
    """The inputs of :meth:`SensitivityMethod.measure`.

    ``layers`` are the decision layers (pinned layers excluded), in forward order;
    ``bits`` the candidate bit-widths, ascending. ``fixed`` maps pinned layers to their
    bits: a data-driven method should keep them quantized at those bits while it
    measures (``evaluator`` calls take complete or partial assignments). ``seed`` seeds
    every random choice. ``progress(iterable, desc=..., total=...)`` wraps loops in a
    progress bar when the user wants one. ``costs`` holds each cost model's table
    ``[layer, bits]`` over ``layers`` (by cost name) and ``cost`` names the one the budget
    is on (the first budget's when several are given, else the search's ``cost``), for a
    method whose objective is scaled by what the budget counts.
    """

    evaluator: Evaluator
    spec: ModelSpec
    layers: tuple[str, ...]
    bits: tuple[int, ...]
    fixed: dict[str, int] = attrs.field(factory=dict)
    seed: int = 0
    progress: Callable[..., Iterable] = attrs.field(default=lambda it, **kw: it)
    costs: Mapping[str, np.ndarray] = attrs.field(factory=dict)
    cost: str = "size"

    def layer(self, fqn: str) -> LayerInfo:
        return self.spec.layer(fqn)

    @property
    def params(self) -> np.ndarray:
        """Parameter count of each decision layer, in ``layers`` order."""
        return np.array([self.spec.layer(f).params for f in self.layers], dtype=float)

    def rng(self, salt: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, salt])

    def with_fixed(self, assignment: dict[str, int]) -> dict[str, int]:
        """``assignment`` plus the pinned layers at their bits."""
        return {**self.fixed, **assignment}

    def option_info(self, **info: Any) -> dict[str, Any]:
        """Diagnostics for ``Objective.info``, with the evaluator's counters added."""
        return {"evaluations": self.evaluator.evaluations, "forward_passes": self.evaluator.forward_passes, **info}
