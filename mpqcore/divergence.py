"""The default loss: a divergence from the float model, chosen by the type of the model's output.

=====================================================  ===========================================
what the model returns                                 divergence (0 for the float model itself)
=====================================================  ===========================================
``logits`` ``[N, C]``, or a plain ``[N, C]`` tensor    KL(float || quantized) over the classes,
                                                       mean over the batch
``logits`` ``[N, T, V]`` (a language model)            KL over the vocabulary per token, mean over
                                                       the tokens the attention mask keeps
``last_hidden_state`` ``[N, T, H]`` or ``[N, H]``      cosine distance ``1 - cos`` per token (per
                                                       row), mean over the kept tokens
anything else (a plain tensor of another shape)        normalized MSE, ``sum (y - ref)^2 / sum ref^2``
=====================================================  ===========================================

``logits`` and ``last_hidden_state`` are read from a Hugging Face ``ModelOutput`` (or a
dict with those keys); a plain tensor, or the first tensor of a tuple, is compared as
is. The attention mask is the batch's ``attention_mask`` (a dict batch, or the inputs of
a :class:`mpqcore.batches.Supervised` pair): padding tokens are ignored.

Each divergence also gives its Hessian in the output at ``output == reference`` as a
random probe (``probe``: ``u`` with ``E[u u^T] = H``), which HAWQ's Gauss-Newton
estimate back-propagates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import torch
import torch.nn.functional as F

from mpqcore.batches import Supervised
from mpqcore.errors import ConfigError

__all__ = [
    "CLASS_KL",
    "COSINE",
    "NORMALIZED_MSE",
    "TOKEN_KL",
    "Divergence",
    "default_divergence",
    "default_loss",
    "primary_output",
    "token_mask",
]

Mask = torch.Tensor | None


@attrs.frozen
class Divergence:
    """``loss(output, reference, mask)`` and its Hessian probe ``probe(reference, mask, generator)``."""

    name: str
    loss: Callable[[torch.Tensor, torch.Tensor, Mask], torch.Tensor]
    probe: Callable[[torch.Tensor, Mask, torch.Generator], torch.Tensor]


def _primary(outputs: Any) -> tuple[torch.Tensor, str]:
    """The compared tensor and what it is: ``"logits"``, ``"hidden"`` or ``"tensor"``."""
    if isinstance(outputs, torch.Tensor):
        return outputs, "tensor"
    for attr, kind in (("logits", "logits"), ("last_hidden_state", "hidden")):
        value = getattr(outputs, attr, None)
        if isinstance(value, torch.Tensor):
            return value, kind
    if isinstance(outputs, Mapping):
        for key, kind in (("logits", "logits"), ("last_hidden_state", "hidden")):
            if isinstance(outputs.get(key), torch.Tensor):
                return outputs[key], kind
        outputs = list(outputs.values())
    if isinstance(outputs, (tuple, list)):
        for value in outputs:
            if isinstance(value, torch.Tensor):
                return value, "tensor"
    raise ConfigError(f"cannot find a tensor in the model's output of type {type(outputs).__name__}; pass loss=...")


def primary_output(outputs: Any) -> torch.Tensor:
    """The tensor a default loss compares: the output itself, ``logits``, ``last_hidden_state``, or the first tensor."""
    return _primary(outputs)[0]


def token_mask(batch: Any, output: torch.Tensor) -> Mask:
    """The batch's ``attention_mask`` as a bool ``[N, T]`` for a ``[N, T, ...]`` output, else ``None``."""
    inputs = batch.inputs if isinstance(batch, Supervised) else batch
    mask = inputs.get("attention_mask") if isinstance(inputs, Mapping) else None
    if not isinstance(mask, torch.Tensor) or output.dim() < 3:
        return None
    if tuple(mask.shape) != tuple(output.shape[:2]):
        raise ConfigError(
            f"the batch's attention_mask has shape {list(mask.shape)} but the output is {list(output.shape)}; "
            "the default loss needs a mask of the output's [batch, tokens]; pass loss=..."
        )
    return mask.to(output.device).bool()


def _masked_mean(per_token: torch.Tensor, mask: Mask) -> torch.Tensor:
    if mask is None:
        return per_token.mean()
    keep = mask.to(per_token.dtype)
    return (per_token * keep).sum() / keep.sum().clamp_min(1.0)


def _kept(mask: Mask, shape: torch.Size) -> int:
    """How many token positions of ``shape[:-1]`` the mean runs over."""
    return int(mask.sum()) if mask is not None else math.prod(shape[:-1])


def _class_kl(y: torch.Tensor, ref: torch.Tensor, mask: Mask) -> torch.Tensor:
    return F.kl_div(F.log_softmax(y, dim=1), F.log_softmax(ref, dim=1), log_target=True, reduction="batchmean")


def _categorical_probe(p: torch.Tensor, scale: float, generator: torch.Generator) -> torch.Tensor:
    """``(onehot(s) - p) / scale`` with ``s`` drawn from each row of ``p``: covariance ``(diag p - p p^T) / scale^2``."""
    rows = p.reshape(-1, p.shape[-1])
    labels = torch.multinomial(rows.cpu(), 1, generator=generator).squeeze(1).to(p.device)
    u = (F.one_hot(labels, p.shape[-1]).to(p.dtype) - rows) / scale
    return u.reshape(p.shape)


def _class_kl_probe(ref: torch.Tensor, mask: Mask, generator: torch.Generator) -> torch.Tensor:
    # KL with batchmean: Hessian (diag(p) - p p^T) / N per sample.
    return _categorical_probe(torch.softmax(ref.float(), dim=1), math.sqrt(ref.shape[0]), generator)


def _token_kl(y: torch.Tensor, ref: torch.Tensor, mask: Mask) -> torch.Tensor:
    per_token = F.kl_div(F.log_softmax(y, dim=-1), F.log_softmax(ref, dim=-1), log_target=True, reduction="none")
    return _masked_mean(per_token.sum(-1), mask)


def _token_kl_probe(ref: torch.Tensor, mask: Mask, generator: torch.Generator) -> torch.Tensor:
    # Mean over M kept tokens: Hessian (diag(p_t) - p_t p_t^T) / M per kept token, 0 at padding.
    u = _categorical_probe(torch.softmax(ref.float(), dim=-1), math.sqrt(max(_kept(mask, ref.shape), 1)), generator)
    return u if mask is None else u * mask.unsqueeze(-1).to(u.dtype)


def _cosine(y: torch.Tensor, ref: torch.Tensor, mask: Mask) -> torch.Tensor:
    return _masked_mean(1.0 - F.cosine_similarity(y, ref, dim=-1, eps=1e-12), mask)


def _cosine_probe(ref: torch.Tensor, mask: Mask, generator: torch.Generator) -> torch.Tensor:
    # 1 - cos(y, r) has Hessian (I - r r^T / |r|^2) / |r|^2 at y = r; mean over M tokens: / M.
    r = ref.float()
    norm = r.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    unit = r / norm
    z = torch.randn(r.shape, generator=generator).to(r.device)
    u = (z - (z * unit).sum(-1, keepdim=True) * unit) / (norm * math.sqrt(max(_kept(mask, r.shape), 1)))
    return u if mask is None else u * mask.unsqueeze(-1).to(u.dtype)


def _normalized_mse(y: torch.Tensor, ref: torch.Tensor, mask: Mask) -> torch.Tensor:
    return ((y - ref) ** 2).sum() / ref.pow(2).sum().clamp_min(1e-12)


def _normalized_mse_probe(ref: torch.Tensor, mask: Mask, generator: torch.Generator) -> torch.Tensor:
    # Hessian 2 I / sum(ref^2).
    z = torch.randn(ref.shape, generator=generator).to(ref.device)
    return z * torch.sqrt(2.0 / ref.float().pow(2).sum().clamp_min(1e-12))


CLASS_KL = Divergence("kl over classes", _class_kl, _class_kl_probe)
TOKEN_KL = Divergence("kl per token", _token_kl, _token_kl_probe)
COSINE = Divergence("cosine distance", _cosine, _cosine_probe)
NORMALIZED_MSE = Divergence("normalized mse", _normalized_mse, _normalized_mse_probe)


def default_divergence(outputs: Any) -> Divergence:
    """The divergence the default loss uses for these model outputs (the table above)."""
    y, kind = _primary(outputs)
    if kind in ("logits", "tensor") and y.dim() == 2 and y.shape[1] > 1:
        return CLASS_KL
    if kind == "logits" and y.dim() == 3:
        return TOKEN_KL
    if kind == "hidden" and y.dim() in (2, 3):
        return COSINE
    return NORMALIZED_MSE


def default_loss(outputs: Any, reference: torch.Tensor, batch: Any = None) -> torch.Tensor:
    """The divergence of ``outputs`` from the float model's primary output ``reference`` on ``batch``.

    ``batch`` supplies the attention mask of a token output; without it every token counts.
    """
    y = primary_output(outputs).float()
    return default_divergence(outputs).loss(y, reference.float(), token_mask(batch, y))
