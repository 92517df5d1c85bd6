"""Layer kinds: where a module keeps its weights, their channel axis and their MACs.

A layer kind is the one place that knows a family of modules. It says which modules it
claims (:meth:`~mpqcore.protocols.LayerKind.matches`), which weight tensors of such a
module it owns and along which axis their output channels lie (:meth:`weights`, as
:class:`WeightRef` values), and how many multiply-accumulates one call performs with
each (:meth:`macs`, from a forward hook's arguments and output). Introspection, the
evaluator and :func:`mpqcore.apply` ask the kinds; nothing else in mpq names a module
class. Kinds are plugins (hook ``mpq_register_layer_kinds``); every registered kind is
active, and a module claimed by two kinds is an error naming both.

**One decision per weight tensor.** A kind may own several tensors of one module (an
LSTM's ``weight_ih_l0``, ``weight_hh_l0``, ...; attention's ``q/k/v_proj_weight``):
each is its own layer, named ``<module>.<tensor>``; a module's ``weight`` is named by
the module alone (``features.0``, ``fc``), as mpq always named Conv and Linear layers.
A tensor reached under several names (a module registered twice, GPT-2's ``wte`` and
``lm_head`` sharing one Parameter) is one layer under its first name, the others its
aliases.

**Putting quantized weights in and taking them out** is the same for every kind and
lives here too: a plain ``nn.Parameter`` is swapped (its ``.data``) or copied into; a
weight computed by ``torch.nn.utils.parametrize`` (``parametrizations.weight_norm``,
``orthogonal``, ...) or by the older ``torch.nn.utils.weight_norm`` /
``spectral_norm`` hooks is first *baked* (:func:`bake`) into a plain Parameter holding
its current value, on the evaluator's private copy and, for the layers it quantizes, by
:func:`mpqcore.apply`; any other computed weight is refused (left float, the reason
in the coverage). Quantizers see a weight with its channel axis first
(:func:`quantize_along`), so per-channel scales follow the real output channels of a
``ConvTranspose`` or a transformers ``Conv1D`` too.

Built-in kinds (all registered by this module as the ``mpqcore.layer_kinds`` plugin):
``linear``, ``conv`` (Conv1d/2d/3d), ``conv-transpose`` (ConvTranspose1d/2d/3d),
``embedding`` (Embedding, EmbeddingBag), ``multihead-attention``, ``rnn``
(RNN/LSTM/GRU and their cells), ``transformers-conv1d`` (found by duck typing, so mpq
never imports transformers) and ``token-parameter`` (position embeddings and class
tokens held as bare Parameters, as torchvision's and timm's ViTs do; left float by
default through :data:`DEFAULT_EXCLUDE`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from mpqcore.hookspecs import hookimpl
from mpqcore.lazy_imports import lazy_module
from mpqcore.quantizers import QuantizedTensor, check_quantized

if TYPE_CHECKING:
    import torch
    from torch import nn
    from torch.nn.utils import parametrize
else:  # imported on first use: `mpq plugins` and `mpq solve` never need torch
    torch = lazy_module("torch")
    nn = lazy_module("torch.nn")
    parametrize = lazy_module("torch.nn.utils.parametrize")

__all__ = [
    "DEFAULT_EXCLUDE",
    "ConvKind",
    "ConvTransposeKind",
    "EmbeddingKind",
    "LinearKind",
    "MultiheadAttentionKind",
    "RecurrentKind",
    "TokenParameterKind",
    "TransformersConv1DKind",
    "WeightRef",
    "bake",
    "quantize_along",
    "storage_key",
    "underlying_parameters",
    "weight_form",
]

#: Layers left float unless the user passes ``exclude=`` (fnmatch patterns on layer
#: names): position embeddings and class tokens, which the field keeps in float (few
#: parameters, added to every token).
DEFAULT_EXCLUDE: tuple[str, ...] = (
    "*pos_embed*",
    "*position_embedding*",
    "wpe",
    "*.wpe",
    "*class_token",
    "*cls_token",
    "*dist_token",
)


@attrs.frozen
class WeightRef:
    """One weight tensor a layer kind owns: the module's attribute ``name`` and its output-channel ``axis``."""

    name: str = attrs.field(validator=attrs.validators.instance_of(str))
    axis: int = attrs.field(default=0, converter=int)


def _first(args: tuple[Any, ...], kwargs: Mapping[str, Any], name: str) -> Any:
    return args[0] if args else kwargs.get(name)


def _tensor(value: Any) -> torch.Tensor | None:
    return value if isinstance(value, torch.Tensor) and not getattr(value, "is_nested", False) else None


# ---------------------------------------------------------------------------
# The built-in kinds
# ---------------------------------------------------------------------------


@attrs.frozen
class LinearKind:
    """``nn.Linear`` and subclasses: ``weight`` [out, in]; MACs = outputs x in_features."""

    def matches(self, module: nn.Module) -> bool:
        return isinstance(module, nn.Linear)

    def weights(self, module: nn.Module) -> Sequence[WeightRef]:
        return (WeightRef("weight"),)

    def macs(self, module: nn.Module, args: tuple[Any, ...], kwargs: Mapping[str, Any], output: Any) -> dict[str, int]:
        out = _tensor(output)
        if out is None or not isinstance(module, nn.Linear):
            return {}
        return {"weight": out.numel() * module.in_features}


def _conv_types() -> tuple[type[nn.Conv1d], type[nn.Conv2d], type[nn.Conv3d]]:
    return (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _conv_transpose_types() -> tuple[type[nn.ConvTranspose1d], type[nn.ConvTranspose2d], type[nn.ConvTranspose3d]]:
    return (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


@attrs.frozen
class ConvKind:
    """``nn.Conv1d/2d/3d``: ``weight`` [out, in/groups, *k]; MACs = outputs x in/groups x kernel size."""

    def matches(self, module: nn.Module) -> bool:
        return isinstance(module, _conv_types())

    def weights(self, module: nn.Module) -> Sequence[WeightRef]:
        return (WeightRef("weight"),)

    def macs(self, module: nn.Module, args: tuple[Any, ...], kwargs: Mapping[str, Any], output: Any) -> dict[str, int]:
        out = _tensor(output)
        if out is None or not isinstance(module, _conv_types()):
            return {}
        per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
        return {"weight": out.numel() * per_output}


@attrs.frozen
class ConvTransposeKind:
    """``nn.ConvTranspose1d/2d/3d``: ``weight`` [in, out/groups, *k], output channels on axis 1.

    Every input element is multiplied into out/groups x kernel-size outputs, so MACs =
    inputs x out/groups x kernel size.
    """

    def matches(self, module: nn.Module) -> bool:
        return isinstance(module, _conv_transpose_types())

    def weights(self, module: nn.Module) -> Sequence[WeightRef]:
        return (WeightRef("weight", axis=1),)

    def macs(self, module: nn.Module, args: tuple[Any, ...], kwargs: Mapping[str, Any], output: Any) -> dict[str, int]:
        x = _tensor(_first(args, kwargs, "input"))
        if x is None or not isinstance(module, _conv_transpose_types()):
            return {}
        per_input = module.out_channels // module.groups * math.prod(module.kernel_size)
        return {"weight": x.numel() * per_input}


@attrs.frozen
class EmbeddingKind:
    """``nn.Embedding`` and ``nn.EmbeddingBag``: ``weight`` [vocabulary, dim], one row per token; a lookup, 0 MACs."""

    def matches(self, module: nn.Module) -> bool:
        return isinstance(module, (nn.Embedding, nn.EmbeddingBag))

    def weights(self, module: nn.Module) -> Sequence[WeightRef]:
        return (WeightRef("weight"),)

    def macs(self, module: nn.Module, args: tuple[Any, ...], kwargs: Mapping[str, Any], output: Any) -> dict[str, int]:
        return {}


def _tokens(x: torch.Tensor | None) -> int:
    """Vectors in ``x`` (its last axis is the feature axis)."""
    return 0 if x is None or x.dim() == 0 else x.numel() // max(int(x.shape[-1]), 1)


@attrs.frozen
class MultiheadAttentionKind:
    """``nn.MultiheadAttention``: the packed ``in_proj_weight`` [3E, E], or ``q/k/v_proj_weight``.

    Attention calls ``out_proj`` functionally (its forward hooks never run), so this kind
    counts ``out_proj.weight``'s MACs too; ``out_proj`` itself is a Linear layer of the
    ``linear`` kind. MACs: every query, key and value vector times its projection, every
    output vector times ``out_proj``; the attention products themselves use no weight.
    """

    def matches(self, module: nn.Module) -> bool:
        return isinstance(module, nn.MultiheadAttention)

    def weights(self, module: nn.Module) -> Sequence[WeightRef]:
        if getattr(module, "in_proj_weight", None) is not None:
            return (WeightRef("in_proj_weight"),)
        return tuple(
            WeightRef(n)
            for n in ("q_proj_weight", "k_proj_weight", "v_proj_weight")
            if getattr(module, n, None) is not None
        )

    def macs(self, module: nn.Module, args: tuple[Any, ...], kwargs: Mapping[str, Any], output: Any) -> dict[str, int]:
        if not isinstance(module, nn.MultiheadAttention):
            return {}
        names = ("query", "key", "value")
        q, k, v = (_tensor(args[i] if len(args) > i else kwargs.get(n)) for i, n in enumerate(names))
        e, kdim, vdim = module.embed_dim, module.kdim, module.vdim
        nq, nk, nv = _tokens(q), _tokens(k), _tokens(v)
        out = {"out_proj.weight": nq * e * e}
        if getattr(module, "in_proj_weight", None) is not None:
            out["in_proj_weight"] = nq * e * e + nk * e * kdim + nv * e * vdim
        else:
            out.update(q_proj_weight=nq * e * e, k_proj_weight=nk * e * kdim, v_proj_weight=nv * e * vdim)
        return out


@attrs.frozen
class RecurrentKind:
    """``nn.RNN/LSTM/GRU`` (every ``weight_ih_l*``, ``weight_hh_l*``, ``weight_hr_l*``, both directions) and their cells.

    Each weight is its own decision. Every input vector passes every layer and
    direction once, so a weight's MACs are input vectors x its elements (its shape
    already holds the gates: 4 for LSTM, 3 for GRU).
    """

    def matches(self, module: nn.Module) -> bool:
        return isinstance(module, (nn.RNNBase, nn.RNNCellBase))

    def weights(self, module: nn.Module) -> Sequence[WeightRef]:
        names = getattr(module, "_flat_weights_names", None) or [n for n, _ in module.named_parameters(recurse=False)]
        if isinstance(module, nn.RNNCellBase):
            names = ["weight_ih", "weight_hh"]
        return tuple(WeightRef(n) for n in names if n.startswith("weight"))

    def macs(self, module: nn.Module, args: tuple[Any, ...], kwargs: Mapping[str, Any], output: Any) -> dict[str, int]:
        x = _first(args, kwargs, "input")
        if not isinstance(module, (nn.RNNBase, nn.RNNCellBase)):
            return {}
        if isinstance(x, nn.utils.rnn.PackedSequence):
            vectors = int(x.data.shape[0])
        elif isinstance(x, torch.Tensor):
            vectors = x.numel() // max(module.input_size, 1)
        else:
            return {}
        out = {}
        for ref in self.weights(module):
            weight = getattr(module, ref.name, None)
            if isinstance(weight, torch.Tensor):
                out[ref.name] = vectors * weight.numel()
        return out


@attrs.frozen
class TransformersConv1DKind:
    """transformers' ``Conv1D`` (GPT-2's projections): ``weight`` [in, out], output channels on axis 1.

    Found by duck typing (a class named ``Conv1D`` with an integer ``nf`` and a 2-D
    weight of ``nf`` columns), so mpq never imports transformers. MACs = outputs x in.
    """

    def matches(self, module: nn.Module) -> bool:
        if type(module).__name__ != "Conv1D" or not isinstance(getattr(module, "nf", None), int):
            return False
        weight = getattr(module, "weight", None)
        return isinstance(weight, torch.Tensor) and weight.dim() == 2 and int(weight.shape[1]) == module.nf

    def weights(self, module: nn.Module) -> Sequence[WeightRef]:
        return (WeightRef("weight", axis=1),)

    def macs(self, module: nn.Module, args: tuple[Any, ...], kwargs: Mapping[str, Any], output: Any) -> dict[str, int]:
        out = _tensor(output)
        weight = getattr(module, "weight", None)
        if out is None or not isinstance(weight, torch.Tensor):
            return {}
        return {"weight": out.numel() * int(weight.shape[0])}


#: The bare Parameters :class:`TokenParameterKind` owns, by attribute name.
TOKEN_PARAMETERS: tuple[str, ...] = (
    "pos_embedding",
    "pos_embed",
    "position_embedding",
    "position_embeddings",
    "class_token",
    "cls_token",
    "dist_token",
)


@attrs.frozen
class TokenParameterKind:
    """Position embeddings and class tokens held as bare Parameters (torchvision's and timm's ViTs).

    Owns the module's own Parameters named in :data:`TOKEN_PARAMETERS` with at least two
    axes; one channel per token (the second-to-last axis). They are added or
    concatenated, not multiplied: 0 MACs. :data:`DEFAULT_EXCLUDE` leaves them float
    unless the user passes ``exclude=``.
    """

    def matches(self, module: nn.Module) -> bool:
        return bool(self.weights(module))

    def weights(self, module: nn.Module) -> Sequence[WeightRef]:
        own = module._parameters
        return tuple(
            WeightRef(n, axis=own[n].dim() - 2)  # type: ignore[union-attr]  # checked just below
            for n in TOKEN_PARAMETERS
            if isinstance(own.get(n), torch.Tensor) and own[n].dim() >= 2  # type: ignore[union-attr]
        )

    def macs(self, module: nn.Module, args: tuple[Any, ...], kwargs: Mapping[str, Any], output: Any) -> dict[str, int]:
        return {}


BUILTIN_KINDS: Mapping[str, type] = {
    "linear": LinearKind,
    "conv": ConvKind,
    "conv-transpose": ConvTransposeKind,
    "embedding": EmbeddingKind,
    "multihead-attention": MultiheadAttentionKind,
    "rnn": RecurrentKind,
    "transformers-conv1d": TransformersConv1DKind,
    "token-parameter": TokenParameterKind,
}


@hookimpl
def mpq_register_layer_kinds(registry) -> None:
    for name, factory in BUILTIN_KINDS.items():
        registry.add(name, factory)


# ---------------------------------------------------------------------------
# Where a weight lives, and putting a quantized one in
# ---------------------------------------------------------------------------

#: How a module holds a weight: a plain Parameter, computed by torch.nn.utils.parametrize,
#: computed by an old-style weight_norm/spectral_norm hook, or otherwise (refused).
FORMS = ("parameter", "parametrized", "hook", "computed")


def _norm_hook(module: nn.Module, name: str) -> Any:
    from torch.nn.utils.spectral_norm import SpectralNorm
    from torch.nn.utils.weight_norm import WeightNorm

    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, (WeightNorm, SpectralNorm)) and hook.name == name:
            return hook
    return None


def weight_form(module: nn.Module, name: str) -> str:
    """How ``module`` holds its weight ``name``: one of :data:`FORMS`."""
    if parametrize.is_parametrized(module, name):
        return "parametrized"
    if isinstance(module._parameters.get(name), nn.Parameter):
        return "parameter"
    if _norm_hook(module, name) is not None:
        return "hook"
    return "computed"


def refusal(module: nn.Module, name: str) -> str:
    """Why a weight of form ``computed`` cannot be quantized, and what would make it quantizable."""
    return (
        f"{type(module).__name__}.{name} is not a Parameter but a tensor computed some other way; mpq quantizes "
        "Parameters, torch.nn.utils.parametrize parametrizations and weight_norm/spectral_norm hooks"
    )


def underlying_parameters(module: nn.Module, name: str) -> list[nn.Parameter]:
    """The Parameters weight ``name`` is computed from (the weight itself when it is one)."""
    form = weight_form(module, name)
    if form == "parametrized":
        return list(module.parametrizations[name].parameters())  # type: ignore[index, union-attr]
    if form == "parameter":
        return [module._parameters[name]]  # type: ignore[list-item]  # checked by weight_form
    if form == "hook":
        hook = _norm_hook(module, name)
        own = module._parameters
        names = [f"{name}_g", f"{name}_v"] if type(hook).__name__ == "WeightNorm" else [f"{name}_orig"]
        return [p for n in names if isinstance(p := own.get(n), nn.Parameter)]
    return []


def storage_key(module: nn.Module, name: str) -> tuple[str, int, str]:
    """One key per weight tensor however many names reach it (tied Parameters share one)."""
    form = weight_form(module, name)
    if form == "parameter":
        return ("parameter", id(module._parameters[name]), "")
    if form == "parametrized":
        return ("parametrized", id(module.parametrizations[name]), "")  # type: ignore[index]
    return (form, id(module), name)


def bake(module: nn.Module, name: str) -> nn.Parameter:
    """Make weight ``name`` a plain Parameter holding its current value, and return it.

    A parametrization or a weight_norm/spectral_norm hook is removed (the value it
    computes now stays): a quantized weight is fixed values, and the evaluator and
    :func:`mpqcore.apply` then swap or copy it like any other. A ``computed`` weight
    raises ``ValueError`` (see :func:`refusal`).
    """
    form = weight_form(module, name)
    if form == "parametrized":
        # A deep copy of a parametrized module shares its injected class with the original,
        # and removing a parametrization deletes the property from that class: give this
        # module a class of its own first, so the original (the user's model) keeps its own.
        cls = type(module)
        own = {k: v for k, v in vars(cls).items() if k not in ("__dict__", "__weakref__")}
        module.__class__ = type(cls.__name__, cls.__bases__, own)
        with torch.enable_grad():  # without grad, torch would leave the value as a buffer
            parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    elif form == "hook":
        hook = _norm_hook(module, name)
        with torch.no_grad():
            if type(hook).__name__ == "WeightNorm":
                torch.nn.utils.remove_weight_norm(module, name)
            else:
                torch.nn.utils.remove_spectral_norm(module, name)
    elif form == "computed":
        raise ValueError(refusal(module, name))
    if not isinstance(module._parameters.get(name), nn.Parameter):  # the originals did not require grad
        value = module._buffers.pop(name)
        assert value is not None  # remove_parametrizations registered it as a buffer
        module.register_parameter(name, nn.Parameter(value, requires_grad=False))
    if isinstance(module, nn.RNNBase):
        module._init_flat_weights()  # an RNN reads its weights through this list
    param = module._parameters[name]
    assert isinstance(param, nn.Parameter)
    return param


# ---------------------------------------------------------------------------
# Quantizing along a channel axis
# ---------------------------------------------------------------------------


def _axis_back(axis: int, moved: int | None) -> int | None:
    """An axis of the channel-first view, as an axis of the weight (``axis`` was moved to 0)."""
    if moved is None:
        return None
    if moved == 0:
        return axis
    return moved - 1 if moved <= axis else moved


def quantize_along(quantizer: Any, weight: torch.Tensor, bits: int, axis: int) -> QuantizedTensor:
    """``quantizer.quantize`` with the output-channel ``axis`` moved first, the result in ``weight``'s layout.

    Quantizers take channels on axis 0 (their per-channel scales are ``[C, 1, ...]``);
    codes, scale and zero point come back with the channel axis where the weight has it,
    so ``dequantize()`` has the weight's shape. ``axis == 0`` calls the quantizer as is.
    A grouped result (``group_size`` set) keeps its codes in the channel-first ``[C, K]``
    view and records the weight's channel ``axis`` and ``shape``, so its ``dequantize()``
    has the weight's shape too.
    """
    moved = weight if axis == 0 else weight.movedim(axis, 0)
    q = quantizer.quantize(moved, bits)
    # A quantizer is a plugin: what it returns is checked before anything uses it.
    check_quantized(q, moved, bits, who=f"quantizer {getattr(quantizer, 'name', type(quantizer).__name__)!r}")
    if axis == 0:
        return q
    if q.group_size is not None:
        # grouped codes stay in the channel-first [C, K] view (the stored form); the
        # weight's shape and channel axis let dequantize() put the values back
        return attrs.evolve(q, axis=axis, shape=tuple(weight.shape))

    def back(t: torch.Tensor) -> torch.Tensor:
        return t.movedim(0, axis) if isinstance(t, torch.Tensor) and t.dim() == weight.dim() else t

    return QuantizedTensor(back(q.codes), back(q.scale), back(q.zero_point), q.bits, _axis_back(axis, q.axis))
