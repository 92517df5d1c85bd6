"""Which way a metric is better.

A metric is ``metric(model) -> float``. It is higher-is-better (accuracy, cosine
similarity) unless it says otherwise with an attribute ``higher_is_better = False``
(perplexity, word error rate); :func:`lower_is_better` wraps any callable so. Every
comparison the framework makes (a method scoring by metric drop, ``Evaluator.score``)
turns the metric into a score, higher is better, with :func:`as_score`; reports print
the metric as measured and say which way is better.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from mpqcore.errors import ConfigError

__all__ = ["DirectedMetric", "as_score", "direction_words", "higher_is_better", "lower_is_better"]


class DirectedMetric:
    """``metric(model) -> float`` with its direction: ``higher_is_better`` (read-only)."""

    def __init__(self, metric: Callable[[Any], float], *, higher_is_better: bool):
        if not callable(metric):
            raise ConfigError(f"a metric must be callable(model) -> float, got {type(metric).__name__}")
        self._metric = metric
        self._higher = bool(higher_is_better)
        functools.update_wrapper(self, metric)  # its name and docstring; __wrapped__

    @property
    def higher_is_better(self) -> bool:
        return self._higher

    def __call__(self, model: Any) -> float:
        return self._metric(model)

    def __repr__(self) -> str:
        return f"{'higher' if self._higher else 'lower'}_is_better({self._metric!r})"


def lower_is_better(metric: Callable[[Any], float]) -> DirectedMetric:
    """``metric`` declared lower-is-better (``metric.higher_is_better`` is ``False``)."""
    return DirectedMetric(metric, higher_is_better=False)


def higher_is_better(metric: Callable[[Any], float] | None) -> bool:
    """The direction ``metric`` declares: its ``higher_is_better`` attribute, ``True`` without one.

    A wrapper that keeps the wrapped callable as ``__wrapped__`` (functools' convention)
    without declaring a direction itself has the wrapped callable's.
    """
    seen: set[int] = set()
    while metric is not None and not hasattr(metric, "higher_is_better") and id(metric) not in seen:
        seen.add(id(metric))
        metric = getattr(metric, "__wrapped__", None)
    flag = getattr(metric, "higher_is_better", True)
    if not isinstance(flag, bool):
        raise ConfigError(
            f"the metric's higher_is_better must be True or False, got {flag!r}; "
            "wrap a lower-is-better metric with mpqcore.lower_is_better(metric)"
        )
    return flag


def as_score(value: float, higher: bool) -> float:
    """``value`` as a score where higher is better: itself, or minus a lower-is-better value."""
    return value if higher else -value


def direction_words(higher: bool) -> str:
    return "higher is better" if higher else "lower is better"
