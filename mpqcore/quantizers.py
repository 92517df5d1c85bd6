"""Built-in weight quantizers: integer codes plus the affine map back to floats.

Every quantizer returns a :class:`QuantizedTensor` whose ``codes`` are unsigned
integers in ``[0, 2**bits)`` (so a method can histogram them over ``2**bits`` bins)
and whose :meth:`~QuantizedTensor.dequantize` is the fake-quantized weight.

- ``minmax-per-tensor``: uniform asymmetric min-max over the whole tensor (the seed
  papers' default); the range is widened to contain 0 and the zero point is an integer,
  as integer kernels need.
- ``symmetric-per-channel``: symmetric per output channel, scale from the channel's
  largest magnitude; narrow range ``[-(2**(b-1)-1), 2**(b-1)-1]`` unless
  ``narrow_range=False``; 1 bit is sign times the channel's mean magnitude.
- ``mse-per-channel``: symmetric per output channel with the clipping ratio that
  minimizes each channel's squared error (plus its squared summed error, see
  :class:`MSEPerChannel`), searched on a grid; full two's-complement range
  ``[-2**(b-1), 2**(b-1)-1]`` unless ``narrow_range=True``.

Narrow or full range: the narrow range is symmetric about 0 and leaves one of the
``2**b`` codes unused, which at 2 bits is a quarter of them (3 levels, not 4). The full
range (what integer kernels, torchao and MCT use) adds the level ``-2**(b-1)``. With
the same scale it can only lower each weight's error, and the MSE search then trades it
for a finer scale: measured on the three tasks' weights (relative squared error, the
default grid, ``mean_penalty=0``), 2 bits 0.171 -> 0.132 (digits-cnn), 0.190 -> 0.149
(digits-resnet18), 0.211 -> 0.160 (minilm); 3 bits 13-15% lower, 4 bits 8-10% lower.

Each takes ``group_size=None|int``: with a size ``g``, the scales (and zero points) are
per group of ``g`` consecutive elements along ``K`` of the channel-first 2-D view
``[C, K]`` (the input dimension of a Linear weight; ``in x kernel`` of a convolution),
the standard layout of transformer weights (GPTQ, AWQ). The per-tensor scheme becomes
asymmetric per group, the per-channel ones symmetric per group; the layout's
granularity is then ``group``. A grouped result keeps its codes in the ``[C, K]`` view,
its scale and zero point as ``[C, ceil(K / g)]`` (the last group of a channel may be
shorter), and :meth:`QuantizedTensor.dequantize` expands them back to the weight's
shape.
"""

from __future__ import annotations

from collections.abc import Callable
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
DEFAULT_QUANTIZER = "mse-per-channel"


@attrs.frozen(eq=False)
class QuantizedTensor:
    """Unsigned integer ``codes`` with ``value = (codes - zero_point) * scale``.

    ``scale`` and ``zero_point`` broadcast against ``codes`` (per tensor: scalars; per
    channel: shape ``[C, 1, 1, ...]`` along ``axis``).

    Grouped (``group_size`` set): ``codes`` have the channel-first 2-D shape ``[C, K]``,
    ``scale`` and ``zero_point`` the shape ``[C, ceil(K / group_size)]``, one per group
    of ``group_size`` consecutive elements along ``K`` (the last may be shorter);
    ``axis`` is the channel axis of the weight and ``shape`` the weight's shape, so that
    :meth:`dequantize` returns the weight's layout (``[C, K]`` when ``shape`` is unset).
    """

    codes: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor
    bits: int
    axis: int | None = None
    group_size: int | None = None
    shape: tuple[int, ...] | None = None

    @property
    def levels(self) -> int:
        return 2**self.bits

    def dequantize(self) -> torch.Tensor:
        if self.group_size is None:
            return (self.codes.to(self.scale.dtype) - self.zero_point) * self.scale
        k = self.codes.shape[-1]
        scale = self.scale.repeat_interleave(self.group_size, dim=-1)[..., :k]
        zero_point = self.zero_point.repeat_interleave(self.group_size, dim=-1)[..., :k]
        values = (self.codes.to(scale.dtype) - zero_point) * scale
        if self.shape is None:
            return values
        axis = self.axis or 0
        moved = (self.shape[axis], *(n for i, n in enumerate(self.shape) if i != axis))
        return values.reshape(moved).movedim(0, axis)


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
        if not problems and result.group_size is not None:
            problems.extend(_group_problems(result, weight))
        if not problems:
            values = result.dequantize()
            if values.numel() != weight.numel():
                problems.append(f"dequantizes to shape {tuple(values.shape)}, the weight has {tuple(weight.shape)}")
            elif not bool(torch.isfinite(values).all()):
                problems.append("dequantizes to non-finite values (NaN or inf)")
    if problems:
        raise PluginError(f"{who} {'; '.join(problems)} (weight of shape {tuple(weight.shape)})", plugin=plugin)


def _group_problems(result: QuantizedTensor, weight: torch.Tensor) -> list[str]:
    """What is wrong with the shapes of a grouped result (see :class:`QuantizedTensor`)."""
    g = result.group_size
    if not isinstance(g, int) or g < 1:
        return [f"returned group_size {g!r}, expected a positive integer"]
    if result.codes.dim() != 2:
        return [f"returned grouped codes of shape {tuple(result.codes.shape)}, expected the 2-D view [C, K]"]
    c, k = result.codes.shape
    want = (c, -(-k // g))
    got = [tuple(t.shape) if isinstance(t, torch.Tensor) else None for t in (result.scale, result.zero_point)]
    if any(shape != want for shape in got):
        return [f"returned grouped scale/zero point of shapes {got[0]}/{got[1]}, expected {want} (group size {g})"]
    return []


def _check(weight: torch.Tensor, bits: int, name: str) -> None:
    if bits not in BITS_RANGE:
        raise ConfigError(f"quantizer {name!r}: bits {bits} outside 1..16")
    if not torch.is_floating_point(weight):
        raise ConfigError(f"quantizer {name!r}: weight must be a float tensor, got {weight.dtype}")


def _channel_view(weight: torch.Tensor) -> torch.Tensor:
    return weight.reshape(weight.shape[0], -1)


def _broadcast_shape(weight: torch.Tensor) -> tuple[int, ...]:
    return (weight.shape[0],) + (1,) * (weight.dim() - 1)


def _group_option(help_scheme: str):
    return option(
        int,
        default=None,
        optional=True,
        minimum=1,
        help=f"elements per group along the input dimension (None: {help_scheme}); e.g. 32, 64, 128",
    )


def _layout(granularity: str, symmetric: bool, group_size: int | None) -> Layout:
    if group_size is None:
        return Layout(granularity, symmetric=symmetric)
    return Layout("group", symmetric=symmetric, group_size=group_size)


def _grouped(weight: torch.Tensor, bits: int, group_size: int, rows: Callable[[torch.Tensor, int], QuantizedTensor]):
    """Quantize each group of ``group_size`` elements along K of ``weight``'s [C, K] view as one row.

    ``rows(x, bits)`` quantizes every row of a 2-D ``x`` with its own scale (a row is a
    "channel" to it); full groups and each channel's shorter last group are passed
    separately, so no padding enters any group's statistics.
    """
    w = _channel_view(weight)
    c, k = w.shape
    full = k // group_size * group_size
    codes, scales, zeros = [], [], []
    if full:
        q = rows(w[:, :full].reshape(-1, group_size), bits)
        codes.append(q.codes.reshape(c, full))
        scales.append(q.scale.reshape(c, -1))
        zeros.append(q.zero_point.expand_as(q.scale).reshape(c, -1))
    if full < k:
        q = rows(w[:, full:], bits)
        codes.append(q.codes)
        scales.append(q.scale.reshape(c, 1))
        zeros.append(q.zero_point.expand_as(q.scale).reshape(c, 1))
    return QuantizedTensor(
        torch.cat(codes, 1), torch.cat(scales, 1), torch.cat(zeros, 1), bits, 0, group_size, tuple(weight.shape)
    )


def _asymmetric(w: torch.Tensor, bits: int, lo: torch.Tensor, hi: torch.Tensor, axis: int | None) -> QuantizedTensor:
    """Asymmetric codes for ranges ``[lo, hi]`` (broadcast against ``w``) widened to contain 0."""
    lo, hi = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)
    qmax = 2**bits - 1
    scale = (hi - lo) / qmax
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zero_point = torch.clamp(torch.round(-lo / scale), 0, qmax)
    codes = torch.clamp(torch.round(w / scale) + zero_point, 0, qmax)
    return QuantizedTensor(codes.to(torch.int32), scale, zero_point, bits, axis)


def _asymmetric_rows(w: torch.Tensor, bits: int) -> QuantizedTensor:
    return _asymmetric(w, bits, w.amin(1, keepdim=True), w.amax(1, keepdim=True), 0)


@attrs.frozen
class MinMaxPerTensor:
    """Uniform asymmetric min-max quantization over the whole tensor (or per group, asymmetric)."""

    group_size: int | None = _group_option("one range for the whole tensor")
    name = "minmax-per-tensor"

    @property
    def layout(self) -> Layout:
        return _layout("tensor", False, self.group_size)

    def quantize(self, weight: torch.Tensor, bits: int) -> QuantizedTensor:
        _check(weight, bits, self.name)
        w = weight.detach()
        if self.group_size is not None:
            return _grouped(w, bits, self.group_size, _asymmetric_rows)
        return _asymmetric(w, bits, w.min(), w.max(), None)


def _symmetric(w: torch.Tensor, bits: int, absmax: torch.Tensor, *, narrow_range: bool = True) -> QuantizedTensor:
    """Symmetric codes with scale ``absmax / (2**(b-1) - 1)`` for a per-channel ``absmax`` of shape [C, 1, ...].

    Narrow range: codes ``[-(2**(b-1)-1), 2**(b-1)-1]``; full range: one more level at
    ``-2**(b-1)``. Both are stored shifted by the zero point ``2**(b-1)``.
    """
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
    codes = torch.clamp(torch.round(w / scale), -qmax if narrow_range else -qmax - 1, qmax) + zero_point
    return QuantizedTensor(codes.to(torch.int32), scale, zero_point, bits, 0)


@attrs.frozen
class SymmetricPerChannel:
    """Symmetric quantization per output channel (axis 0), scale from the channel's max magnitude."""

    narrow_range: bool = option(
        bool,
        default=True,
        help="codes -(2**(b-1)-1)..2**(b-1)-1, scale absmax/(2**(b-1)-1), nothing clipped "
        "(False: full range -2**(b-1)..2**(b-1)-1, scale absmax/(2**(b-1)-0.5) as torchao's symmetric mapping)",
    )
    group_size: int | None = _group_option("one scale per output channel")
    name = "symmetric-per-channel"

    @property
    def layout(self) -> Layout:
        return _layout("channel", True, self.group_size)

    def quantize(self, weight: torch.Tensor, bits: int) -> QuantizedTensor:
        _check(weight, bits, self.name)
        w = weight.detach()
        if self.group_size is not None:
            return _grouped(w, bits, self.group_size, self._per_channel)
        return self._per_channel(w, bits)

    def _per_channel(self, w: torch.Tensor, bits: int) -> QuantizedTensor:
        absmax = _channel_view(w).abs().amax(1).reshape(_broadcast_shape(w))
        if not self.narrow_range and bits > 1:
            absmax = absmax * ((2 ** (bits - 1) - 1) / (2 ** (bits - 1) - 0.5))
        return _symmetric(w, bits, absmax, narrow_range=self.narrow_range)


@attrs.frozen
class MSEPerChannel:
    """Symmetric per-channel quantization with the MSE-optimal clipping ratio per channel.

    ``grid`` ratios between ``min_ratio`` and 1 are tried (the scale is ``ratio x absmax
    / (2**(b-1) - 1)``); each channel keeps the one whose fake-quantized copy is closest
    to the float weights by that measure. Ratio 1 is always tried, so by it no channel
    is worse than under ``symmetric-per-channel`` with the narrow range.

    The error a ratio is judged by is not the weights' MSE alone: ``mean_penalty`` adds the
    squared sum of the channel's errors (:func:`_clipping_error`). Clipping by MSE alone
    shifts the sum of a channel's weights whenever the grid or the weights are not
    symmetric (the full range always is not), and that shift multiplies the mean of the
    layer's inputs, which after a ReLU is as large as their spread: a bias in every output
    that BatchNorm's fixed statistics do not remove. Measured (2026-12-02, uniform width,
    default divergence on the quick calibration, lower is better): digits-resnet18 at
    3 bits 0.296 (narrow, MSE, ratios from 0.3: the quantizer before), 3.09 (full, MSE:
    test accuracy 0.12), 0.065 (full, ``mean_penalty=1``); at 4 bits 0.0150 / 0.0452 /
    0.0039; digits-cnn at 2 bits 0.326 / 0.254 / 0.176; minilm at 3 bits 0.00062 /
    0.00054 / 0.00057. On the six zoo CNNs and digits-cnn (benchmarks/results/mct.md)
    penalties 1, 3 and 10 gave mean mixed-precision accuracy 0.9624 / 0.9593 / 0.9585
    against 0.9568 before and 0.9573 for the full range by MSE alone; 1 is the default.

    Defaults since 2026-12-02: full range, ratios down to 0.15, ``mean_penalty=1``;
    ``narrow_range=True, min_ratio=0.3, mean_penalty=0`` is the quantizer before. With
    the full range half the 2-bit channels of digits-resnet18 and minilm chose the
    smallest ratio 0.3; 0.15 lowered minilm's 2-bit error by a further 6%.
    """

    grid: int = option(int, default=20, minimum=1, help="clipping ratios tried per channel")
    min_ratio: float = option(float, default=0.15, greater_than=0.0, maximum=1.0, help="smallest clipping ratio tried")
    narrow_range: bool = option(
        bool, default=False, help="codes -(2**(b-1)-1)..2**(b-1)-1 (False: the full range -2**(b-1)..2**(b-1)-1)"
    )
    mean_penalty: float = option(
        float,
        default=1.0,
        minimum=0.0,
        help="weight of each channel's summed error: the ratio minimizes mean(e**2) + mean_penalty * K * mean(e)**2 "
        "(0: the weights' MSE alone)",
    )
    group_size: int | None = _group_option("one scale per output channel")
    name = "mse-per-channel"

    @property
    def layout(self) -> Layout:
        return _layout("channel", True, self.group_size)

    def quantize(self, weight: torch.Tensor, bits: int) -> QuantizedTensor:
        _check(weight, bits, self.name)
        w = weight.detach()
        if self.group_size is not None:
            return _grouped(w, bits, self.group_size, self._per_channel)
        return self._per_channel(w, bits)

    def _per_channel(self, w: torch.Tensor, bits: int) -> QuantizedTensor:
        if bits == 1:
            return _symmetric(w, 1, torch.zeros(_broadcast_shape(w), dtype=w.dtype, device=w.device))
        shape = _broadcast_shape(w)
        absmax = _channel_view(w).abs().amax(1)
        best_err = torch.full_like(absmax, float("inf"))
        best_ratio = torch.ones_like(absmax)
        ratios = torch.linspace(self.min_ratio, 1.0, self.grid, dtype=w.dtype, device=w.device)
        for ratio in ratios:
            q = _symmetric(w, bits, (absmax * ratio).reshape(shape), narrow_range=self.narrow_range).dequantize()
            err = _clipping_error(_channel_view(q - w), self.mean_penalty)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_ratio = torch.where(better, ratio, best_ratio)
        return _symmetric(w, bits, (absmax * best_ratio).reshape(shape), narrow_range=self.narrow_range)


def _clipping_error(diff: torch.Tensor, mean_penalty: float) -> torch.Tensor:
    """What ``mse-per-channel`` minimizes per row of the [C, K] error ``diff``: ``mean(e**2) + p K mean(e)**2``.

    ``K mean(e)**2 = (sum e)**2 / K``: with inputs of mean ``mu`` and variance ``s**2``
    (independent), a channel's expected squared output error is ``K (s**2 mean(e**2) +
    mu**2 K mean(e)**2)``, so ``p`` stands for ``mu**2 / s**2``.
    """
    err = (diff**2).mean(1)
    if mean_penalty:
        err = err + mean_penalty * diff.shape[1] * diff.mean(1) ** 2
    return err


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
