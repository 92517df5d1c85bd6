"""Calibration batches: the shapes a batch may take, and calling a model on one.

The rule for which part of a batch is fed to the model (:data:`BATCH_RULE`, also in
docs/guide.md and in the error a failing call raises):

- a ``Tensor`` is the model's one input, ``model(batch)``;
- a ``dict`` (a Hugging Face tokenizer's or collator's output) holds keyword inputs,
  ``model(**batch)``; a ``labels`` key is passed on too (a Hugging Face model then adds
  its own loss to its output);
- a :class:`Supervised` ``(inputs, target)`` pair, made by :func:`supervised`: only
  ``inputs`` (a Tensor, a tuple of positional inputs or a dict of keyword inputs) goes
  to the model;
- a plain tuple/list holds positional inputs, ``model(*batch)``, except one case: a
  2-item tuple/list given to a model whose ``forward`` takes one positional argument
  is ``(inputs, target)``, as a ``DataLoader`` over ``(x, y)`` pairs yields it.

Whatever reaches the model, ``loss=`` is called with the outputs and the whole batch,
``loss(outputs, batch)``, so an ``(inputs, target)`` batch's target is ``batch[1]``
(or ``batch.target``). A metric, ``metric(model)``, scores held-out data of its own.
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import torch

from mpqcore.errors import ConfigError

__all__ = [
    "BATCH_RULE",
    "Supervised",
    "batch_size",
    "call_model",
    "check_not_empty",
    "materialize",
    "model_inputs",
    "supervised",
    "to_device",
]

#: The rule of the module docstring in one sentence, for error messages.
BATCH_RULE = (
    "a Tensor batch is model(batch), a dict is model(**batch), a tuple/list is model(*batch) "
    "except that a 2-item (inputs, target) tuple/list goes in as model(inputs) when forward takes one "
    "positional argument; mark (inputs, target) batches explicitly with mpqcore.supervised(calibration), "
    "and loss(outputs, batch) receives the whole batch"
)


class Supervised(NamedTuple):
    """An ``(inputs, target)`` batch: ``inputs`` is fed to the model, ``target`` only reaches ``loss=``.

    ``inputs`` is a Tensor, a tuple/list of positional inputs or a dict of keyword inputs.
    It is a tuple, so ``loss(outputs, batch)`` may read ``batch[1]`` or ``batch.target``.
    """

    inputs: Any
    target: Any


def supervised(calibration: Iterable[Any]) -> list[Supervised]:
    """Every batch of ``calibration`` as an explicit :class:`Supervised` ``(inputs, target)`` pair.

    For models whose ``forward`` takes several positional arguments, where the automatic
    rule would feed a plain ``(inputs, target)`` tuple to the model as two inputs. Each
    batch must be a 2-item tuple/list (a ``DataLoader`` over ``(x, y)`` pairs gives them).
    """
    out = []
    for i, batch in enumerate(calibration):
        if isinstance(batch, Supervised):
            out.append(batch)
        elif isinstance(batch, (tuple, list)) and len(batch) == 2:
            out.append(Supervised(batch[0], batch[1]))
        else:
            what = (
                f"a {len(batch)}-item {type(batch).__name__}"
                if isinstance(batch, (tuple, list))
                else type(batch).__name__
            )
            raise ConfigError(f"supervised(): batch {i} is {what}; each batch must be an (inputs, target) pair")
    return out


def materialize(calibration: Iterable[Any], *, limit: int | None = None) -> list[Any]:
    """The calibration batches as a list (a DataLoader is read once).

    A batch is a Tensor, a tuple/list of positional inputs, a dict of keyword inputs or
    a :class:`Supervised` ``(inputs, target)`` pair; see the module docstring for which
    part reaches the model.
    """
    if isinstance(calibration, (torch.Tensor, Mapping, Supervised)):
        batches = [calibration]
    else:
        try:
            batches = list(calibration if limit is None else itertools.islice(calibration, limit))
        except TypeError as exc:
            raise ConfigError(
                f"calibration must be an iterable of batches (Tensor, tuple or dict), got {type(calibration).__name__}"
            ) from exc
    if not batches:
        raise ConfigError("calibration is empty; give at least one batch of example inputs")
    for i, b in enumerate(batches):
        if not isinstance(b, (torch.Tensor, tuple, list, Mapping)):
            raise ConfigError(
                f"calibration batch {i} is a {type(b).__name__}; valid: Tensor, tuple/list of inputs, dict of inputs"
            )
    return batches


def to_device(batch: Any, device: torch.device | str | None) -> Any:
    if device is None:
        return batch
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, Supervised):
        return Supervised(to_device(batch.inputs, device), to_device(batch.target, device))
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def _positional_capacity(model: torch.nn.Module) -> float:
    """How many positional arguments ``model.forward`` takes (``inf`` with ``*args`` or no signature)."""
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return math.inf
    kinds = [p.kind for p in params]
    if inspect.Parameter.VAR_POSITIONAL in kinds:
        return math.inf
    return sum(k in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD) for k in kinds)


def _as_call(inputs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if isinstance(inputs, Mapping):
        return (), dict(inputs)
    if isinstance(inputs, (tuple, list)):
        return tuple(inputs), {}
    return (inputs,), {}


def model_inputs(model: torch.nn.Module, batch: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``(args, kwargs)``: the part of ``batch`` that is fed to ``model``, by the module's rule."""
    if isinstance(batch, Supervised):
        return _as_call(batch.inputs)
    if isinstance(batch, (tuple, list)) and len(batch) == 2 and _positional_capacity(model) == 1:
        return _as_call(batch[0])  # (inputs, target), as a DataLoader over (x, y) pairs gives it
    return _as_call(batch)


def call_model(model: torch.nn.Module, batch: Any) -> Any:
    """``model`` called on the inputs of ``batch`` (see :func:`model_inputs`)."""
    args, kwargs = model_inputs(model, batch)
    try:
        return model(*args, **kwargs)
    except TypeError as exc:
        if "positional argument" not in str(exc):
            raise
        raise ConfigError(f"{exc}. Batches are fed by this rule: {BATCH_RULE}") from exc


def batch_size(batch: Any) -> int:
    if isinstance(batch, Supervised):
        return batch_size(batch.inputs)
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    values = batch.values() if isinstance(batch, Mapping) else batch
    for v in values:
        if isinstance(v, torch.Tensor) and v.dim():
            return int(v.shape[0])
    return 1


def check_not_empty(batch: Any, index: int) -> None:
    """Refuse a calibration batch of no examples, named by its ``index`` in the user's calibration."""
    if batch_size(batch) == 0:
        raise ConfigError(f"calibration batch {index} is empty (batch size 0); every batch needs examples")
