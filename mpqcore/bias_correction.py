"""Bias correction: undo the expected output shift that quantizing a weight causes.

Quantizing ``W`` to ``W_q`` moves a layer's mean output by ``(W_q - W) E[x]``: the rounding
errors of a channel do not cancel, and the next layer sees a biased input (Nagel et al.,
"Data-Free Quantization", 2019; AIMET's and MCT's bias correction). The correction
subtracts that shift from the layer's bias, with ``E[x]`` the mean input of the layer in
the float model, measured on the calibration batches in one pass with forward hooks
(:meth:`BiasCorrection.measure`).

- ``Linear`` (and subclasses): ``E[x]`` is the mean input vector; the shift is exact in
  expectation: ``delta_b = -(W_q - W) @ E[x]``.
- ``Conv1d/2d/3d``: ``E[x]`` is, per input channel ``c`` and kernel tap ``k``, the mean
  of the (padded) input that tap sees over examples and output positions, so that
  ``delta_b[o] = -sum_{c,k} (W_q - W)[o, c, k] E[x_{c,k}]`` (grouped convolutions per
  group). This is exact for the output's mean over examples and positions, padding
  (zeros or the module's ``padding_mode``), stride and dilation included. What a bias
  cannot undo is kept: the shift varies over positions (near the borders, where taps
  see padding), and one bias per channel corrects its average. The plain
  channel-mean-times-kernel-sum rule (Nagel et al.) ignores the padding: on the 2x2 maps
  of digits-cnn's ``conv3`` it left a third of the shift.
- Other layer kinds (transposed convolutions, recurrent and attention weights,
  embeddings, tied weights used by several modules) are left as they are; the value
  names each with the reason (:attr:`BiasCorrection.skipped`).

A layer without a bias (a convolution followed by BatchNorm, as in ResNets) gets one
under the policy ``"add"`` (a new ``bias`` Parameter holding the correction, so the
returned model's ``state_dict`` gains ``<layer>.bias``); ``"existing"`` corrects only
layers that have a bias and lists the others as skipped.

The value is what makes the correction reproducible: :func:`mpqcore.measure` computes
it (``bias_correction=True``), the evaluator scores every assignment with it, and
:func:`mpqcore.apply` (``bias_correction=<the value>``) writes the same biases into the
model it returns; :class:`mpqcore.Measurement` and :class:`mpqcore.Report` carry it.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
import torch
from torch import nn

from mpqcore.errors import ConfigError
from mpqcore.frozen import FrozenDict, freeze

__all__ = ["AUTO", "GUARD", "POLICIES", "BiasCorrection", "check_choice", "check_policy"]

#: What happens to a corrected layer without a bias: ``add`` one, or correct only ``existing`` biases.
POLICIES = ("add", "existing")
#: ``bias_correction="guard"`` (search and sweep): the guard measures the allocation it returns with
#: and without correction on the held-out part and corrects only when that measured lower.
GUARD = "guard"
#: ``bias_correction="auto"`` (search's and sweep's default): :data:`GUARD` when the guard is on and
#: the measurement is (or will be) uncorrected; otherwise the measurement's own choice (off without it).
AUTO = "auto"
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: The ``format`` entry of a saved correction's safetensors metadata (:meth:`BiasCorrection.save`).
FILE_FORMAT = "mpq-bias-correction/1"


def check_policy(value: Any) -> str | None:
    """``bias_correction=`` as given to measure/search: ``False``/``None`` (off), ``True`` (``"add"``) or a policy."""
    if value is None or value is False:
        return None
    if value is True:
        return "add"
    if isinstance(value, str) and value in POLICIES:
        return value
    raise ConfigError(
        f"bias_correction must be True, False or one of {list(POLICIES)} (search and sweep also take "
        f"{GUARD!r} and {AUTO!r}), got {value!r}"
    )


def check_choice(value: Any) -> str | None:
    """``bias_correction=`` as given to search/sweep: :func:`check_policy`'s values, :data:`GUARD` or :data:`AUTO`."""
    if isinstance(value, str) and value in (GUARD, AUTO):
        return value
    return check_policy(value)


def _why_not(module: nn.Module, weight_name: str, users: int) -> str:
    """Why a layer is not corrected (empty when it is)."""
    if users > 1:
        return "its weight is used by several modules (tied); one bias cannot follow them all"
    if weight_name != "weight" or not isinstance(module, (nn.Linear, *_CONV)):
        return f"{type(module).__name__}.{weight_name}: bias correction covers Linear and Conv1d/2d/3d weights"
    return ""


def _input_mean_sums(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Sums of the inputs each weight column multiplies, and how many outputs they sum over:
    ``[in]`` for a Linear, ``[in, taps]`` for a convolution (see the module docstring)."""
    x = x.detach().to(torch.float64)
    if isinstance(module, nn.Linear):
        flat = x.reshape(-1, x.shape[-1])
        return flat.sum(0), flat.shape[0]
    assert isinstance(module, _CONV)
    kernel, stride, dilation = module.kernel_size, module.stride, module.dilation
    if x.dim() == len(kernel) + 1:  # an unbatched input
        x = x.unsqueeze(0)
    pad = list(module._reversed_padding_repeated_twice)
    if any(pad):
        mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
        x = nn.functional.pad(x, pad, mode=mode)
    spatial = x.shape[2:]
    outs = [(n - d * (k - 1) - 1) // st + 1 for n, k, st, d in zip(spatial, kernel, stride, dilation, strict=True)]
    taps = []
    for offsets in itertools.product(*(range(k) for k in kernel)):
        window = tuple(
            slice(o * d, o * d + st * (m - 1) + 1, st)
            for o, d, st, m in zip(offsets, dilation, stride, outs, strict=True)
        )
        taps.append(x[(slice(None), slice(None), *window)].sum(dim=[0, *range(2, x.dim())]))
    return torch.stack(taps, 1), x.shape[0] * math.prod(outs)


@attrs.frozen(eq=False)
class BiasCorrection:
    """The float model's mean input per corrected layer and the policy for missing biases.

    ``means[fqn]`` is a float32 tensor: ``[in_features]`` for a Linear, ``[in_channels,
    kernel taps]`` for a convolution (the mean input each weight element multiplies);
    ``skipped[fqn]`` says why a layer is not corrected.
    """

    means: Mapping[str, torch.Tensor] = attrs.field(converter=FrozenDict)
    policy: str = attrs.field(default="add", validator=attrs.validators.in_(POLICIES))
    skipped: Mapping[str, str] = attrs.field(factory=dict, converter=freeze)

    @classmethod
    def measure(
        cls,
        layers: Mapping[str, tuple[nn.Module, str, int]],
        run: Callable[[int], Any],
        batches: int,
        *,
        policy: str = "add",
    ) -> BiasCorrection:
        """Mean inputs of ``layers`` (``{fqn: (module, weight name, modules using the weight)}``)
        over ``run(i)`` for each of ``batches`` calibration batches: one forward pass each."""
        sums: dict[str, list[Any]] = {}
        skipped: dict[str, str] = {}
        handles = []
        for fqn, (module, name, users) in layers.items():
            why = _why_not(module, name, users)
            if not why and policy == "existing" and getattr(module, "bias", None) is None:
                why = "it has no bias (policy 'existing')"
            if why:
                skipped[fqn] = why
                continue
            sums[fqn] = [None, 0]

            def hook(mod: nn.Module, args: tuple[Any, ...], fqn: str = fqn) -> None:
                if args and isinstance(args[0], torch.Tensor):
                    total, n = _input_mean_sums(mod, args[0])
                    acc = sums[fqn]
                    acc[0] = total if acc[0] is None else acc[0] + total
                    acc[1] += n

            handles.append(module.register_forward_pre_hook(hook))
        try:
            with torch.no_grad():
                for i in range(batches):
                    run(i)
        finally:
            for h in handles:
                h.remove()
        means = {}
        for fqn, (total, n) in sums.items():
            if total is None or n == 0:
                skipped[fqn] = "it never ran on the calibration batches"
            else:
                means[fqn] = (total / n).to(torch.float32)
        return cls(means, policy, skipped)

    def shift(self, fqn: str, module: nn.Module, delta: torch.Tensor) -> torch.Tensor:
        """The expected output shift ``(W_q - W) E[x]`` per output channel, for the weight error ``delta``."""
        mean = self.means[fqn].to(delta.device, delta.dtype)
        if isinstance(module, nn.Linear):
            return delta @ mean
        assert isinstance(module, _CONV)
        groups = module.groups
        out, cin = delta.shape[:2]
        by_group = delta.reshape(groups, out // groups, cin, -1)  # [groups, out/g, in/g, taps]
        return torch.einsum("goik,gik->go", by_group, mean.reshape(groups, cin, -1)).reshape(out)

    def corrected_bias(
        self, fqn: str, module: nn.Module, float_weight: torch.Tensor, quantized_weight: torch.Tensor, bias: Any
    ) -> torch.Tensor | None:
        """The bias that undoes the shift (``bias`` is the float one, or ``None``); ``None`` when not corrected."""
        if fqn not in self.means or (bias is None and self.policy != "add"):
            return None
        delta = quantized_weight.detach() - float_weight.detach()
        shift = self.shift(fqn, module, delta)
        base = torch.zeros_like(shift) if bias is None else bias.detach()
        return (base - shift.to(base.dtype)).to(float_weight.dtype)

    def check_model(self, modules: Mapping[str, nn.Module]) -> None:
        """Refuse a correction measured on another model: every layer known, every mean of the right length."""
        problems = []
        for fqn, mean in self.means.items():
            module = modules.get(fqn)
            if module is None:
                problems.append(f"{fqn!r} is not a layer of the model")
                continue
            if isinstance(module, nn.Linear):
                want: tuple[int, ...] = (module.in_features,)
            elif isinstance(module, _CONV):
                want = (module.in_channels, math.prod(module.kernel_size))
            else:
                want = ()
            if want != tuple(mean.shape):
                problems.append(f"{fqn!r} takes inputs of shape {want}, the correction has {tuple(mean.shape)}")
        if problems:
            raise ConfigError(
                "bias_correction does not fit this model (was it measured on another one?): " + "; ".join(problems[:5])
            )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the mean inputs, the policy and the skipped layers to a safetensors file (:meth:`load` reads it)."""
        from safetensors.torch import save_file

        tensors = {fqn: mean.detach().to("cpu", torch.float32).contiguous() for fqn, mean in self.means.items()}
        meta = {"format": FILE_FORMAT, "policy": self.policy, "skipped": json.dumps(dict(self.skipped))}
        save_file(tensors, os.fspath(path), metadata=meta)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BiasCorrection:
        """The value :meth:`save` wrote; a clear :class:`~mpqcore.errors.ConfigError` for anything else."""
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file

        where = os.fspath(path)
        try:
            tensors = load_file(where)
            with safe_open(where, "pt") as fh:
                meta = fh.metadata() or {}
            if meta.get("format") != FILE_FORMAT:
                raise ValueError(f"format {meta.get('format')!r}, expected {FILE_FORMAT!r}")
            means: dict[str, Any] = dict(tensors)
            return cls(means, meta["policy"], json.loads(meta["skipped"]))
        except FileNotFoundError:
            raise ConfigError(f"bias correction file {where!r} does not exist") from None
        except (OSError, SafetensorError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"{where!r} is not a bias correction file written by mpq ({type(exc).__name__}: {exc})"
            ) from None

    def summary(self) -> dict[str, Any]:
        """JSON data: the policy, the corrected layers and the skipped ones with the reason."""
        return {"policy": self.policy, "corrected": sorted(self.means), "skipped": dict(self.skipped)}


def swap_bias(module: nn.Module, value: torch.Tensor) -> Callable[[], None]:
    """Put ``value`` behind ``module.bias`` (adding the Parameter when there is none); return the undo."""
    bias = getattr(module, "bias", None)
    if isinstance(bias, nn.Parameter):
        old = bias.data
        bias.data = value

        def undo() -> None:
            bias.data = old

        return undo
    module.register_parameter("bias", nn.Parameter(value, requires_grad=False))

    def remove() -> None:
        module.register_parameter("bias", None)

    return remove


def write_bias(module: nn.Module, value: torch.Tensor) -> None:
    """Write ``value`` into ``module.bias`` for good (a new Parameter when there is none)."""
    bias = getattr(module, "bias", None)
    if isinstance(bias, nn.Parameter):
        bias.data.copy_(value.to(bias.device, bias.dtype))
    else:
        weight = module.weight
        assert isinstance(weight, torch.Tensor)  # a Linear's or a convolution's
        param = nn.Parameter(value.to(weight.device, weight.dtype), requires_grad=weight.requires_grad)
        module.register_parameter("bias", param)


def layer_users(found: Iterable[Any]) -> dict[str, tuple[nn.Module, str, int]]:
    """``{fqn: (module, weight name, modules using the weight)}`` of introspection's found layers."""
    return {f.fqn: (f.module, f.ref.name, len(f.modules)) for f in found}
