"""Your own model from the command line: ``--model pkg.module:factory --calibration pkg.module:batches``.

A reference is ``MODULE:NAME`` (an importable module, e.g. ``myproject.models:build``)
or ``PATH.py:NAME`` (a Python file, imported under a private name). The model
reference names an ``nn.Module`` or a callable returning one (called with no
arguments); the calibration reference an iterable of batches or a callable returning
one; the optional metric reference a callable ``metric(model) -> float`` (higher is
better unless it is marked with :func:`mpqcore.lower_is_better`).

Every failure is a :class:`~mpqcore.errors.ConfigError` naming the reference and
what went wrong, so the CLI exits 2 with one line, before any measurement.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from mpqcore.errors import ConfigError

__all__ = ["UserTask", "load_reference", "load_user_task"]

_FORM = "write MODULE:NAME (e.g. myproject.models:build) or path/to/file.py:NAME"


def _import_file(path: Path, ref: str, what: str) -> Any:
    if not path.is_file():
        raise ConfigError(f"{what} {ref!r}: file {str(path)!r} does not exist; {_FORM}")
    name = f"_mpq_user_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{what} {ref!r}: {str(path)!r} cannot be imported as Python; {_FORM}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)  # the file may import its neighbours
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise ConfigError(f"{what} {ref!r}: importing {str(path)!r} raised {type(exc).__name__}: {exc}") from exc
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    return module


def _import_module(module_name: str, ref: str, what: str) -> Any:
    if str(Path.cwd()) not in sys.path and "" not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # as `python -m` would: the user's own package in the folder
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        inside = missing != module_name and not module_name.startswith(missing + ".")
        hint = f" (it imports {missing!r}, which is not installed)" if inside else ""
        raise ConfigError(f"{what} {ref!r}: no module named {missing!r}{hint}; {_FORM}") from exc
    except Exception as exc:
        raise ConfigError(f"{what} {ref!r}: importing {module_name!r} raised {type(exc).__name__}: {exc}") from exc


def load_reference(ref: str, *, what: str = "reference") -> Any:
    """The object ``ref`` (``MODULE:NAME`` or ``PATH.py:NAME``) names; ``NAME`` may be dotted."""
    if not isinstance(ref, str) or ":" not in ref.strip(":") or ref.rsplit(":", 1)[1] == "":
        raise ConfigError(f"{what} {ref!r} is not MODULE:NAME; {_FORM}")
    source, name = ref.rsplit(":", 1)
    if source.endswith(".py") or "/" in source or "\\" in source:
        module = _import_file(Path(source), ref, what)
    else:
        module = _import_module(source, ref, what)
    obj: Any = module
    for part in name.split("."):
        if not hasattr(obj, part):
            public = sorted(n for n in vars(module) if not n.startswith("_"))[:12]
            raise ConfigError(
                f"{what} {ref!r}: {source!r} has no {name!r}; it defines {', '.join(public) or 'nothing'}"
            )
        obj = getattr(obj, part)
    return obj


def _call(obj: Any, ref: str, what: str) -> Any:
    try:
        return obj()
    except TypeError as exc:
        raise ConfigError(f"{what} {ref!r} must take no arguments: calling it raised TypeError: {exc}") from exc
    except Exception as exc:
        raise ConfigError(f"{what} {ref!r} raised {type(exc).__name__} when called: {exc}") from exc


def _model(ref: str) -> Any:
    from torch import nn

    obj = load_reference(ref, what="--model")
    if not isinstance(obj, nn.Module):
        if not callable(obj):
            raise ConfigError(f"--model {ref!r} is a {type(obj).__name__}, not an nn.Module or a factory returning one")
        obj = _call(obj, ref, "--model factory")
    if not isinstance(obj, nn.Module):
        raise ConfigError(f"--model factory {ref!r} returned a {type(obj).__name__}, expected a torch.nn.Module")
    return obj


def _calibration(ref: str) -> list[Any]:
    obj = load_reference(ref, what="--calibration")
    if callable(obj) and not hasattr(obj, "__iter__"):
        obj = _call(obj, ref, "--calibration")
    if isinstance(obj, (str, bytes)) or not hasattr(obj, "__iter__"):
        raise ConfigError(
            f"--calibration {ref!r} is of type {type(obj).__name__}, which is not an iterable of batches; give a list of "
            "input batches (tensors, tuples, dicts or (inputs, target) pairs) or a function returning one"
        )
    try:
        batches = list(obj)  # read once: a generator could not be iterated again by the evaluator
    except Exception as exc:
        raise ConfigError(f"--calibration {ref!r}: iterating it raised {type(exc).__name__}: {exc}") from exc
    if not batches:
        raise ConfigError(f"--calibration {ref!r} gave no batches; give at least one input batch")
    return batches


def _metric(ref: str) -> Callable[[Any], float]:
    obj = load_reference(ref, what="--metric")
    if not callable(obj):
        raise ConfigError(f"--metric {ref!r} is a {type(obj).__name__}, not a function metric(model) -> float")
    return obj


@attrs.frozen(eq=False)
class UserTask:
    """A task made of the user's own model, batches and (optional) metric: what ``mpq search`` needs."""

    model: Any
    calibration: list[Any]
    metric: Callable[[Any], float] | None = None
    loss: Any = None
    metric_name: str = "metric"
    higher_is_better: bool = True


def load_user_task(model: str, calibration: str | None, metric: str | None = None) -> UserTask:
    """The :class:`UserTask` from ``--model``, ``--calibration`` and ``--metric`` references."""
    from mpqcore.metrics import higher_is_better

    if not calibration:
        raise ConfigError(
            "--model needs --calibration MODULE:NAME too: the batches to measure the model on "
            "(e.g. --calibration myproject.data:calibration_batches)"
        )
    built = _model(model)
    batches = _calibration(calibration)
    fn = _metric(metric) if metric else None
    name = getattr(getattr(fn, "__wrapped__", fn), "__name__", "metric") if fn is not None else "metric"
    return UserTask(
        model=built,
        calibration=batches,
        metric=fn,
        metric_name=name if name != "<lambda>" else "metric",
        higher_is_better=higher_is_better(fn) if fn is not None else True,
    )
