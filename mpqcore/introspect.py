"""Find a model's quantizable layers and count their parameters and MACs.

Quantizable layers are ``Conv1d``, ``Conv2d`` and ``Linear`` modules (and their
subclasses). A module reachable under several names, or several modules sharing one
weight tensor, is reported once, under its first name, with the others as aliases.
MACs per example are measured with forward hooks over one calibration batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mpqcore.batches import batch_size, call_model
from mpqcore.errors import ConfigError
from mpqcore.types import LayerInfo, ModelSpec

__all__ = ["QUANTIZABLE", "introspect", "quantizable_modules"]

QUANTIZABLE: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Linear)


def quantizable_modules(model: nn.Module) -> dict[str, tuple[nn.Module, list[str]]]:
    """``{fqn: (module, aliases)}`` in registration order, one entry per weight tensor."""
    by_weight: dict[int, str] = {}
    out: dict[str, tuple[nn.Module, list[str]]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        if not isinstance(module, QUANTIZABLE) or not isinstance(getattr(module, "weight", None), torch.Tensor):
            continue
        key = id(module.weight)
        if key in by_weight:
            out[by_weight[key]][1].append(name)
            continue
        by_weight[key] = name
        out[name] = (module, [])
    return out


def _macs_hook(counts: dict[str, int], name: str):
    def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
        if not isinstance(output, torch.Tensor):
            return
        per_output: int
        if isinstance(module, (nn.Conv1d, nn.Conv2d)):
            per_output = module.in_channels // module.groups
            for k in module.kernel_size:
                per_output *= int(k)
        elif isinstance(module, nn.Linear):
            per_output = module.in_features
        else:  # QUANTIZABLE has no other kind
            return
        counts[name] = counts.get(name, 0) + output.numel() * per_output

    return hook


def introspect(model: nn.Module, example_batch: Any | None = None) -> ModelSpec:
    """The :class:`ModelSpec` of ``model``; MACs need an ``example_batch``.

    The model is run once under ``torch.no_grad`` in its current mode; its weights are
    not touched.
    """
    modules = quantizable_modules(model)
    if not modules:
        kinds = ", ".join(t.__name__ for t in QUANTIZABLE)
        raise ConfigError(f"the model has no quantizable layer; mpq quantizes {kinds} modules")
    counts: dict[str, int] = {}
    if example_batch is not None:
        handles = []
        hooked: set[int] = set()
        for name, (module, aliases) in modules.items():
            # Every module object that computes with this weight counts towards its MACs:
            # two Linear modules sharing one weight both multiply by it. A module reachable
            # under several names is one object and gets one hook.
            for m in [module, *(model.get_submodule(a) for a in aliases)]:
                if id(m) not in hooked:
                    hooked.add(id(m))
                    handles.append(m.register_forward_hook(_macs_hook(counts, name)))
        try:
            with torch.no_grad():
                call_model(model, example_batch)
        except Exception as exc:
            raise ConfigError(f"the model failed on calibration batch 0: {type(exc).__name__}: {exc}") from exc
        finally:
            for h in handles:
                h.remove()
        n = max(batch_size(example_batch), 1)
        counts = {k: v // n for k, v in counts.items()}
    layers = []
    for name, (module, aliases) in modules.items():
        weight = module.weight
        assert isinstance(weight, torch.Tensor)  # quantizable_modules keeps only modules with a weight tensor
        layers.append(
            LayerInfo(
                fqn=name,
                kind=type(module).__name__,
                params=weight.numel(),
                macs=counts.get(name, 0),
                weight_shape=tuple(weight.shape),
                aliases=tuple(aliases),
            )
        )
    return ModelSpec(tuple(layers))
