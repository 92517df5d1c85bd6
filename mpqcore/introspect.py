"""Find a model's quantizable layers, count their parameters and MACs, and what stays float.

The registered layer kinds (:mod:`mpqcore.layer_kinds`, hook ``mpq_register_layer_kinds``)
say which modules hold weights mpq quantizes: every weight tensor a kind owns is one
layer (one bit-width decision). A tensor reachable under several names (a module
registered twice, tied Parameters such as GPT-2's ``wte``/``lm_head``) is one layer,
under its first name, with the others as aliases; its MACs come from every module that
uses it. MACs per example are counted with forward hooks over one calibration batch,
run in eval mode (each module's mode is put back afterwards, so BatchNorm statistics
never move) with autograd off; the model's weights and buffers are not touched.

Every weight parameter (a tensor of two or more axes) that is not a layer is listed in
:attr:`ModelSpec.float_weights` with its reason: no kind claims its module, the user
excluded it (``exclude=`` fnmatch patterns), a default exclusion
(:data:`~mpqcore.layer_kinds.DEFAULT_EXCLUDE`: position embeddings, class tokens), tied
to an excluded layer, or refused by its kind.
"""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Iterator, Sequence
from typing import Any

import attrs
import torch
from torch import nn

from mpqcore.batches import batch_size, call_model
from mpqcore.errors import ConfigError, MpqError, PluginError
from mpqcore.layer_kinds import DEFAULT_EXCLUDE, WeightRef, refusal, storage_key, underlying_parameters, weight_form
from mpqcore.naming import suggest
from mpqcore.plugins import PluginSet, get_plugins
from mpqcore.types import FloatWeight, LayerInfo, ModelSpec

__all__ = ["DEFAULT_EXCLUDE", "Found", "find_layers", "introspect", "quantizable_modules"]


@attrs.define
class Found:
    """One weight tensor a layer kind owns, under every name that reaches it (internal to mpq)."""

    fqn: str
    module_name: str
    module: nn.Module
    ref: WeightRef
    kind: str  # registered layer-kind name
    form: str  # mpqcore.layer_kinds.FORMS
    #: (fqn, parameter path, module) of every other name of the same tensor.
    aliases: list[tuple[str, str, nn.Module]] = attrs.field(factory=list)

    @property
    def path(self) -> str:
        return f"{self.module_name}.{self.ref.name}" if self.module_name else self.ref.name

    @property
    def names(self) -> list[str]:
        return [self.fqn, *(a[0] for a in self.aliases)]

    @property
    def modules(self) -> list[nn.Module]:
        """Every distinct module object that holds the tensor (its own first)."""
        out: list[nn.Module] = []
        for m in [self.module, *(a[2] for a in self.aliases)]:
            if all(m is not o for o in out):
                out.append(m)
        return out

    def tensor(self) -> torch.Tensor:
        value = getattr(self.module, self.ref.name)
        assert isinstance(value, torch.Tensor)  # find_layers keeps tensors only
        return value


def layer_name(module_name: str, ref: WeightRef) -> str:
    """A module's ``weight`` is named by the module; any other tensor by its parameter path."""
    if ref.name == "weight":
        return module_name
    return f"{module_name}.{ref.name}" if module_name else ref.name


def _kinds(plugins: PluginSet) -> list[tuple[str, str, Any]]:
    """(name, where, instance) of every registered layer kind, in name order."""
    registry = plugins.layer_kinds
    return [(e.name, e.where, registry.create(e.name)) for e in registry.entries()]


def _claim(kinds: list[tuple[str, str, Any]], name: str, module: nn.Module) -> tuple[str, Any] | None:
    claims = []
    for kind_name, where, kind in kinds:
        try:
            claimed = bool(kind.matches(module))
        except Exception as exc:
            raise PluginError(
                f"layer kind {kind_name!r} ({where}) raised in matches() on module {name!r} "
                f"({type(module).__name__}): {type(exc).__name__}: {exc}"
            ) from exc
        if claimed:
            claims.append((kind_name, where, kind))
    if len(claims) > 1:
        (a, wa, _), (b, wb, _) = claims[:2]
        raise PluginError(
            f"module {name or '(the model)'!r} ({type(module).__name__}) is claimed by two layer kinds: {a!r} "
            f"({wa}) and {b!r} ({wb}); a module belongs to one kind. Make one kind's matches() leave it out, "
            "or block one plugin with MPQ_DISABLE_PLUGINS (the built-in kinds are the plugin 'mpqcore.layer_kinds')"
        )
    return (claims[0][0], claims[0][2]) if claims else None


def find_layers(
    model: nn.Module, plugins: PluginSet | None = None
) -> tuple[dict[str, Found], list[FloatWeight], dict[int, Any]]:
    """Every weight tensor the layer kinds own, by layer name (registration order).

    Also returns the refused weights (left float) and, by module id, the kind claiming
    each module (for MAC hooks). Nothing is excluded here.
    """
    kinds = _kinds(plugins or get_plugins())
    found: dict[str, Found] = {}
    by_key: dict[tuple[str, int, str], str] = {}
    refused: list[FloatWeight] = []
    claimed: dict[int, Any] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        claim = _claim(kinds, name, module)
        if claim is None:
            continue
        kind_name, kind = claim
        claimed[id(module)] = (kind_name, kind)
        for ref in kind.weights(module):
            if not isinstance(ref, WeightRef):
                raise PluginError(
                    f"layer kind {kind_name!r} returned {type(ref).__name__} from weights(); "
                    "return mpqcore.layer_kinds.WeightRef(name, axis) values"
                )
            tensor = getattr(module, ref.name, None)
            if not isinstance(tensor, torch.Tensor):
                continue  # e.g. an optional weight the module does not have
            if isinstance(tensor, nn.parameter.UninitializedParameter):
                raise ConfigError(
                    f"module {name!r} ({type(module).__name__}) is a lazy module not yet initialized; "
                    "run the model once on an example batch before mpq sees it"
                )
            fqn = layer_name(name, ref)
            form = weight_form(module, ref.name)
            if form == "computed":
                if all(w.name != fqn for w in refused):
                    refused.append(FloatWeight(fqn, tensor.numel(), "refused", refusal(module, ref.name)))
                continue
            key = storage_key(module, ref.name)
            if key in by_key:
                first = found[by_key[key]]
                path = f"{name}.{ref.name}" if name else ref.name
                if fqn != first.fqn and all(a[0] != fqn for a in first.aliases):
                    first.aliases.append((fqn, path, module))
                continue
            if not (-tensor.dim() <= ref.axis < max(tensor.dim(), 1)):
                raise PluginError(
                    f"layer kind {kind_name!r} gave axis {ref.axis} for {fqn!r}, a weight of shape {tuple(tensor.shape)}"
                )
            by_key[key] = fqn
            found[fqn] = Found(fqn, name, module, WeightRef(ref.name, ref.axis % max(tensor.dim(), 1)), kind_name, form)
    return found, refused, claimed


def quantizable_modules(model: nn.Module, plugins: PluginSet | None = None) -> dict[str, tuple[nn.Module, list[str]]]:
    """``{fqn: (module, aliases)}`` in registration order, one entry per weight tensor."""
    found, _, _ = find_layers(model, plugins)
    return {f.fqn: (f.module, [a[0] for a in f.aliases]) for f in found.values()}


# -- exclusion -------------------------------------------------------------------------


def _matches(name: str, pattern: str) -> bool:
    return name == pattern or fnmatch.fnmatchcase(name, pattern)


def excluded_layers(found: dict[str, Found], exclude: Sequence[str] | None) -> dict[str, tuple[str, str]]:
    """``{fqn: (reason, detail)}`` for the layers ``exclude`` leaves float.

    ``None`` applies :data:`DEFAULT_EXCLUDE` (nothing need match). Otherwise exactly the
    given patterns apply, and each one not in :data:`DEFAULT_EXCLUDE` must match some
    layer's name or alias. Excluding any name of a tied tensor leaves the tensor float.
    """
    if isinstance(exclude, str):
        raise ConfigError(f"exclude must be a list of fnmatch patterns, e.g. [{exclude!r}]; got the string {exclude!r}")
    patterns = DEFAULT_EXCLUDE if exclude is None else tuple(exclude)
    for p in patterns:
        if not isinstance(p, str) or not p:
            raise ConfigError(f"exclude patterns are non-empty strings (fnmatch patterns on layer names), got {p!r}")
    used: set[str] = set()
    out: dict[str, tuple[str, str]] = {}
    for f in found.values():
        for p in patterns:
            hit = next((n for n in f.names if _matches(n, p)), None)
            if hit is None:
                continue
            used.add(p)
            if p in DEFAULT_EXCLUDE:
                detail = (
                    f"default exclusion {p!r} (mpqcore.layer_kinds.DEFAULT_EXCLUDE); pass exclude=() to quantize it"
                )
                out.setdefault(f.fqn, ("default-excluded", detail))
            elif hit == f.fqn:
                out[f.fqn] = ("excluded", f"excluded by pattern {p!r}")
            else:
                out.setdefault(f.fqn, ("tied", f"shares its tensor with {hit!r}, excluded by pattern {p!r}"))
    unused = [p for p in patterns if p not in used and p not in DEFAULT_EXCLUDE]
    if unused:
        names = [n for f in found.values() for n in f.names]
        shown = ", ".join(names[:40]) + (f", ... ({len(names) - 40} more)" if len(names) > 40 else "")
        hint = suggest(unused[0], names)
        raise ConfigError(f"exclude patterns {unused} match no quantizable layer{hint}; the layers: {shown}")
    return out


# -- MACs ------------------------------------------------------------------------------


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode, without autograd and without attention's fused fast path
    (which skips the modules' forward hooks); every module's own mode comes back on exit."""
    modes = [(m, m.training) for m in model.modules()]
    fastpath = torch.backends.mha.get_fastpath_enabled()
    try:
        model.eval()
        torch.backends.mha.set_fastpath_enabled(False)
        with torch.no_grad():
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        for m, mode in modes:
            m.training = mode


def _resolve(module: nn.Module, path: str) -> tuple[nn.Module, str]:
    owner, _, attr = path.rpartition(".")
    return (module.get_submodule(owner) if owner else module), attr


def count_macs(
    model: nn.Module, found: dict[str, Found], claimed: dict[int, Any], example_batch: Any
) -> dict[str, int]:
    """MACs per example of every layer, from one forward pass over ``example_batch``."""
    key_of = {storage_key(f.module, f.ref.name): f.fqn for f in found.values()}
    counts: dict[str, int] = {}
    cache: dict[tuple[int, str], str | None] = {}

    def attribute(module: nn.Module, path: str) -> str | None:
        token = (id(module), path)
        if token not in cache:
            try:
                owner, attr = _resolve(module, path)
                cache[token] = key_of.get(storage_key(owner, attr))
            except AttributeError:
                cache[token] = None
        return cache[token]

    def hook_for(kind_name: str, kind: Any):
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            try:
                macs = kind.macs(module, args, kwargs, output)
            except Exception as exc:
                raise PluginError(
                    f"layer kind {kind_name!r} raised in macs() on a {type(module).__name__}: {type(exc).__name__}: {exc}"
                ) from exc
            for path, n in dict(macs or {}).items():
                fqn = attribute(module, path)
                if fqn is not None:
                    counts[fqn] = counts.get(fqn, 0) + int(n)

        return hook

    handles = []
    hooked: set[int] = set()
    try:
        for module in model.modules():
            if id(module) in claimed and id(module) not in hooked:
                hooked.add(id(module))
                handles.append(module.register_forward_hook(hook_for(*claimed[id(module)]), with_kwargs=True))
        with eval_mode(model):
            call_model(model, example_batch)
    except MpqError:
        raise
    except Exception as exc:
        raise ConfigError(f"the model failed on calibration batch 0: {type(exc).__name__}: {exc}") from exc
    finally:
        for h in handles:
            h.remove()
    n = max(batch_size(example_batch), 1)
    return {k: v // n for k, v in counts.items()}


# -- the spec --------------------------------------------------------------------------


def _unclaimed(model: nn.Module, found: dict[str, Found], refused: list[FloatWeight]) -> list[FloatWeight]:
    """Weight parameters (two or more axes) that are no layer's tensor, nor computed into one."""
    covered: set[int] = set()
    for f in found.values():
        for m, attr in [(f.module, f.ref.name), *((a[2], a[1].rpartition(".")[2]) for a in f.aliases)]:
            covered.update(id(p) for p in underlying_parameters(m, attr))
    refused_names = {w.name for w in refused}
    modules = dict(model.named_modules())
    out = []
    for path, p in model.named_parameters():
        if p.dim() < 2 or id(p) in covered or isinstance(p, nn.parameter.UninitializedParameter):
            continue
        owner = path.rpartition(".")[0]
        if owner in refused_names:
            continue  # what a refused module computes its weight from: counted with that weight
        module = modules.get(owner, model)
        detail = f"no layer kind claims module {owner or '(the model)'!r} ({type(module).__name__})"
        out.append(FloatWeight(path, p.numel(), "unknown-kind", detail))
    return out


def introspect(
    model: nn.Module,
    example_batch: Any | None = None,
    *,
    exclude: Sequence[str] | None = None,
    plugins: PluginSet | None = None,
) -> ModelSpec:
    """The :class:`ModelSpec` of ``model``: its layers and its weights left float; MACs need an ``example_batch``.

    ``exclude``: fnmatch patterns on layer names to leave float (``None``: the default
    exclusions, :data:`DEFAULT_EXCLUDE`; ``()``: none); a pattern that matches nothing
    is a :class:`ConfigError` listing the layers. The model runs once under
    ``torch.no_grad`` in eval mode (every module's mode is restored); its weights and
    buffers are not touched. ``plugins`` supplies the layer kinds (default: installed).
    """
    found, refused, claimed = find_layers(model, plugins)
    if not found:
        kinds = ", ".join((plugins or get_plugins()).layer_kinds.names())
        raise ConfigError(
            "the model has no quantizable layer; mpq quantizes Conv1d, Conv2d, Linear modules and the others "
            f"its layer kinds claim ({kinds}); for other modules register a layer kind "
            "(docs/hooks/mpq_register_layer_kinds.md)"
        )
    excluded = excluded_layers(found, exclude)
    if len(excluded) == len(found):
        raise ConfigError(f"exclude={list(exclude or DEFAULT_EXCLUDE)} leaves no layer to quantize")
    counts = count_macs(model, found, claimed, example_batch) if example_batch is not None else {}
    layers = []
    float_weights = list(refused)
    for f in found.values():
        tensor = f.tensor()
        if f.fqn in excluded:
            reason, detail = excluded[f.fqn]
            float_weights.append(FloatWeight(f.fqn, tensor.numel(), reason, detail))
            continue
        layers.append(
            LayerInfo(
                fqn=f.fqn,
                kind=type(f.module).__name__,
                params=tensor.numel(),
                macs=counts.get(f.fqn, 0),
                weight_shape=tuple(tensor.shape),
                aliases=tuple(a[0] for a in f.aliases),
                layer_kind=f.kind,
                weights=(f.path, *(a[1] for a in f.aliases)),
                axis=f.ref.axis,
                macs_measured=example_batch is not None,
            )
        )
    float_weights.extend(_unclaimed(model, found, refused))
    return ModelSpec(tuple(layers), float_weights=tuple(float_weights))
