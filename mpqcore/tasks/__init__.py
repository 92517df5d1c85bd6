"""Built-in tasks: a trained model, calibration batches and a held-out metric.

A task is what the demo, the tests and the benchmarks search on. Every built-in task
is real (real data, a real trained or pretrained model) and downloads nothing at run
time: trained models are cached in the user cache directory after the first run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from mpqcore.hookspecs import hookimpl

__all__ = ["Task", "mpq_register_tasks"]


@attrs.frozen(eq=False)
class Task:
    """A model with calibration batches and a metric (higher is better).

    ``calibration`` is a list of input batches, each a Tensor, a tuple/list of
    positional inputs, or a dict of keyword inputs. ``metric(model) -> float`` scores a
    model on held-out data kept apart from the calibration batches. ``loss`` is an
    optional ``loss(outputs, batch) -> Tensor`` that replaces the evaluator's default
    divergence from the float model.
    """

    name: str
    model: Any
    calibration: list
    metric: Callable[[Any], float]
    metric_name: str = "accuracy"
    description: str = ""
    loss: Callable | None = None
    info: dict = attrs.field(factory=dict)


@hookimpl
def mpq_register_tasks(registry) -> None:
    from mpqcore.tasks import digits_cnn

    registry.add("digits-cnn", digits_cnn.build, description="small CNN trained on scikit-learn's handwritten digits")
