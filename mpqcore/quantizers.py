"""Built-in weight quantizers: integer codes plus the affine map back to floats.

Every quantizer returns a :class:`QuantizedTensor` whose ``codes`` are unsigned
integers in ``[0, 2**bits)`` (so a method can histogram them over ``2**bits`` bins)
and whose :meth:`~QuantizedTensor.dequantize` is the fake-quantized weight.

- ``minmax-per-tensor``: uniform asymmetric min-max over the whole tensor (the seed
  papers' default); the range is widened to contain 0 and the zero point is an integer,
  as integer kernels need.
- ``symmetric-per-channel``: symmetric per output channel, narrow range
  ``[-(2**(b-1)-1), 2**(b-1)-1]``; 1 bit is sign times the channel's mean magnitude.
- ``mse-per-channel``: symmetric per output channel with the clipping ratio that
  minimizes each channel's mean squared error, searched on a grid.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from mpqcore.errors import ConfigError, PluginError
from mpqcore.hookspecs import hookimpl
from mpqcore.layout import Layout
from mpqcore.lazy_imports import lazy_module
from mpqcore.options import option
from mpqcore.types import BITS_RANGE

if TYPE_CHECKING:
    import torch
else:  # imported on first use: `mpq plugins` and `mpq solve` never need torch
    torch = lazy_module("torch")

__all__ = [
    "DEFAULT_QUANTIZER",
    "MSEPerChannel",
    "MinMaxPerTensor",
    "QuantizedTensor",
    "SymmetricPerChannel",
    "check_quantized",
    "fake_quantize_activation",
]

#: The quantizer every entry point uses when none is named (the one place for it).
DEFAULT_QUANTIZER = "minmax-per-tensor"


@attrs.frozen(eq=False)
class QuantizedTensor:
    """Unsigned integer ``codes`` with ``value = (codes - zero_point) * scale``.

    ``scale`` and ``zero_point`` broadcast against ``codes`` (per tensor: scalars; per
    channel: shape ``[C, 1, 1, ...]`` along ``axis``).
    """

    codes: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor
    bits: int
    axis: int | None = None

    @property
    def levels(self) -> int:
        return 2**self.bits

    def dequantize(self) -> torch.Tensor:
        return (self.codes.to(self.scale.dtype) - self.zero_point) * self.scale


def check_quantized(result: object, weight: torch.Tensor, bits: int, *, who: str, plugin: str | None = None) -> None:
    """Raise :class:`PluginError` naming ``who`` unless ``result`` is a sound quantization of ``weight``.

    Sound: a :class:`QuantizedTensor` at ``bits`` whose codes are integers in
    ``[0, 2**bits)`` and whose dequantized tensor has the weight's shape and finite values.
    """
    problems: list[str] = []
    if not isinstance(result, QuantizedTensor):
        problems.append(f"returned {type(result).__name__}, expected mpqcore.QuantizedTensor")
    else:
        if result.bits != bits:
            problems.append(f"was asked for {bits} bits and returned {result.bits}-bit codes")
        codes = result.codes
        if codes.numel() and (torch.is_floating_point(codes) and not bool((codes == codes.round()).all())):
            problems.append("returned codes that are not integers")
        elif codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= 2**bits):
            problems.append(f"returned codes in [{int(codes.min())}, {int(codes.max())}], outside [0, {2**bits - 1}]")
        if not problems:
            values = result.dequantize()
            if values.numel() != weight.numel():
                problems.append(f"dequantizes to shape {tuple(values.shape)}, the weight has {tuple(weight.shape)}")
            elif not bool(torch.isfinite(values).all()):
                problems.append("dequantizes to non-finite values (NaN or inf)")
    if problems:
        raise PluginError(f"{who} {'; '.join(problems)} (weight of shape {tuple(weight.shape)})", plugin=plugin)


def _check(weight: torch.Tensor, bits: int, name: str) -> None:
    if bits not in BITS_RANGE:
        raise ConfigError(f"quantizer {name!r}: bits {bits} outside 1..16")
    if not torch.is_floating_point(weight):
        raise ConfigError(f"quantizer {name!r}: weight must be a float tensor, got {weight.dtype}")


def _channel_view(weight: torch.Tensor) -> torch.Tensor:
    return weight.reshape(weight.shape[0], -1)


def _broadcast_shape(weight: torch.Tensor) -> tuple[int, ...]:
    return (weight.shape[0],) + (1,) * (weight.dim() - 1)


@attrs.frozen
class MinMaxPerTensor:
    """Uniform asymmetric min-max quantization over the whole tensor."""

    name = "minmax-per-tensor"
    layout = Layout("tensor", symmetric=False)

    def quantize(self, weight: torch.Tensor, bits: int) -> QuantizedTensor:
        _check(weight, bits, self.name)
        w = weight.detach()
        lo = torch.clamp(w.min(), max=0.0)
        hi = torch.clamp(w.max(), min=0.0)
        qmax = 2**bits - 1
        scale = (hi - lo) / qmax
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        zero_point = torch.clamp(torch.round(-lo / scale), 0, qmax)
        codes = torch.clamp(torch.round(w / scale) + zero_point, 0, qmax)
        return QuantizedTensor(codes.to(torch.int32), scale, zero_point, bits, None)


def _symmetric(w: torch.Tensor, bits: int, absmax: torch.Tensor) -> QuantizedTensor:
    """Symmetric narrow-range codes for a per-channel ``absmax`` of shape [C, 1, ...]."""
    if bits == 1:
        # No division by the scale here, so an all-zero channel keeps scale 0 and
        # dequantizes to 0 (a fallback scale of 1 turned it into +1 everywhere).
        scale = w.abs().reshape(w.shape[0], -1).mean(1).reshape(absmax.shape)
        codes = (w >= 0).to(torch.int32)
        return QuantizedTensor(codes, 2 * scale, torch.full_like(scale, 0.5), 1, 0)
    qmax = 2 ** (bits - 1) - 1
    scale = absmax / qmax
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zero_point = torch.full_like(scale, float(2 ** (bits - 1)))
    codes = torch.clamp(torch.round(w / scale), -qmax, qmax) + zero_point
    return QuantizedTensor(codes.to(torch.int32), scale, zero_point, bits, 0)


@attrs.frozen
class SymmetricPerChannel:
    """Symmetric quantization per output channel (axis 0), scale from the channel's max magnitude."""

    name = "symmetric-per-channel"
    layout = Layout("channel", symmetric=True)

    def quantize(self, weight: torch.Tensor, bits: int) -> QuantizedTensor:
        _check(weight, bits, self.name)
        w = weight.detach()
        absmax = _channel_view(w).abs().amax(1).reshape(_broadcast_shape(w))
        return _symmetric(w, bits, absmax)


@attrs.frozen
class MSEPerChannel:
    """Symmetric per-channel quantization with the MSE-optimal clipping ratio per channel.

    ``grid`` ratios between ``min_ratio`` and 1 are tried; each channel keeps the one
    whose fake-quantized copy is closest to the float weights.
    """

    grid: int = option(int, default=20, minimum=1, help="clipping ratios tried per channel")
    min_ratio: float = option(float, default=0.3, greater_than=0.0, maximum=1.0, help="smallest clipping ratio tried")
    name = "mse-per-channel"
    layout = Layout("channel", symmetric=True)

    def quantize(self, weight: torch.Tensor, bits: int) -> QuantizedTensor:
        _check(weight, bits, self.name)
        w = weight.detach()
        if bits == 1:
            return _symmetric(w, 1, torch.zeros(_broadcast_shape(w), dtype=w.dtype))
        shape = _broadcast_shape(w)
        absmax = _channel_view(w).abs().amax(1)
        best_err = torch.full_like(absmax, float("inf"))
        best_ratio = torch.ones_like(absmax)
        ratios = torch.linspace(self.min_ratio, 1.0, self.grid, dtype=w.dtype)
        for ratio in ratios:
            q = _symmetric(w, bits, (absmax * ratio).reshape(shape)).dequantize()
            err = _channel_view((q - w) ** 2).mean(1)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_ratio = torch.where(better, ratio, best_ratio)
        return _symmetric(w, bits, (absmax * best_ratio).reshape(shape))


def fake_quantize_activation(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Dynamic asymmetric min-max fake quantization of an activation tensor (per tensor)."""
    if not torch.is_floating_point(x):
        return x
    lo = torch.clamp(x.detach().min(), max=0.0)
    hi = torch.clamp(x.detach().max(), min=0.0)
    qmax = 2**bits - 1
    scale = (hi - lo) / qmax
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zp = torch.round(-lo / scale)
    return (torch.clamp(torch.round(x / scale) + zp, 0, qmax) - zp) * scale


@hookimpl
def mpq_register_quantizers(registry) -> None:
    registry.add(MinMaxPerTensor.name, MinMaxPerTensor)
    registry.add(SymmetricPerChannel.name, SymmetricPerChannel)
    registry.add(MSEPerChannel.name, MSEPerChannel)
