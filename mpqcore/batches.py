"""Calibration batches: the three shapes a batch may take, and calling a model on one."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from mpqcore.errors import ConfigError

__all__ = ["batch_size", "call_model", "materialize", "to_device"]


def materialize(calibration: Iterable[Any], *, limit: int | None = None) -> list[Any]:
    """The calibration batches as a list (a DataLoader is read once).

    A batch is a Tensor, a tuple/list of positional inputs, or a dict of keyword inputs.
    A DataLoader of ``(inputs, labels)`` pairs gives tuples: pass ``inputs_only`` data or
    a ``loss`` that uses the labels.
    """
    if isinstance(calibration, (torch.Tensor, Mapping)):
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
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def call_model(model: torch.nn.Module, batch: Any) -> Any:
    if isinstance(batch, torch.Tensor):
        return model(batch)
    if isinstance(batch, Mapping):
        return model(**batch)
    return model(*batch)


def batch_size(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    values = batch.values() if isinstance(batch, Mapping) else batch
    for v in values:
        if isinstance(v, torch.Tensor) and v.dim():
            return int(v.shape[0])
    return 1
