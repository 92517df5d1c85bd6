"""The shared evaluator: the one place that scores "these layers at these bits".

Methods measure sensitivity only through an :class:`Evaluator`. It owns a private
working copy of the model (the user's model is never touched), quantizes each
(layer, bits) once and caches it, runs the float model on the calibration batches once
and caches its outputs, counts evaluations and forward passes, and always puts the
float weights back, also when a call raises. Making this class faster makes every
method faster.

Quantized weights are applied by swapping the tensor behind each parameter, not by
copying into it, so applying and restoring cost O(layers), not O(parameters).

The evaluator is the only door to its model: what a method needs beyond scores is API
here, never a write into the working copy: :meth:`Evaluator.gradients` for the weights
a gradient-based method differentiates, the ``reuse_prefix`` switch of
:meth:`Evaluator.losses` per call, and the counters (:attr:`Evaluator.evaluations`,
:attr:`Evaluator.forward_passes`) as read-only properties that only the evaluator
increments.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import functools
import math
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar

import torch
from torch import nn

from mpqcore import activations
from mpqcore.batches import batch_size, call_model, check_not_empty, materialize, model_inputs, to_device
from mpqcore.bias_correction import BiasCorrection, check_policy, layer_users, swap_bias
from mpqcore.divergence import default_loss, primary_output
from mpqcore.errors import ConfigError
from mpqcore.introspect import Found, find_layers, introspect
from mpqcore.layer_kinds import bake, quantize_along
from mpqcore.measurement_cache import MeasurementCache, callable_identity, code_digest, digest, settings_digest
from mpqcore.metrics import as_score, higher_is_better
from mpqcore.naming import suggest
from mpqcore.plugins import PluginSet
from mpqcore.prefix import PrefixReuse
from mpqcore.preflight import check_weight_cache_bytes
from mpqcore.quantizers import QuantizedTensor
from mpqcore.types import ModelSpec
from mpqcore.weight_cache import WeightCache, compact_codes
from mpqcore.workers import WorkerPool

__all__ = ["Evaluator", "default_loss", "primary_output"]

Assignment = Mapping[str, int]


P = ParamSpec("P")
R = TypeVar("R")

#: The evaluators created inside a :func:`closed_on_failure` call (``None`` outside one).
#: Assignments per Ray worker in one round when each value is stored as it comes (with a
#: measurement cache): an interruption loses at most one round's work.
POOL_ROUND = 64

_CREATED: contextvars.ContextVar[list[Evaluator] | None] = contextvars.ContextVar("mpq_evaluators", default=None)


def closed_on_failure(func: Callable[P, R]) -> Callable[P, R]:
    """Decorate a function that builds evaluators: when it raises (Ctrl-C included), each
    evaluator it created is closed, so a model measured in place gets its hooks removed and
    its training flags back, whatever step failed."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        outer = _CREATED.get()  # nested (search -> measure): one list, so either level closes all
        created: list[Evaluator] = outer if outer is not None else []
        token = _CREATED.set(created)
        try:
            return func(*args, **kwargs)
        except BaseException:
            for evaluator in created:
                evaluator.close()
            raise
        finally:
            _CREATED.reset(token)

    return wrapper


class Evaluator:
    """Scores partial quantizations of a private copy of ``model`` on calibration data.

    Parameters
    ----------
    model: the float model; deep-copied, never modified.
    calibration: input batches (see :func:`mpqcore.batches.materialize`).
    spec: the layers (from :func:`mpqcore.introspect.introspect`); ``None`` introspects
        the working copy on the first calibration batch.
    quantizer: the quantizer every evaluation uses.
    loss: optional ``loss(outputs, batch) -> Tensor`` replacing the default divergence
        from the float model's outputs.
    metric: optional ``metric(model) -> float`` on held-out data; higher is better unless
        it declares ``higher_is_better = False`` (:func:`mpqcore.lower_is_better`).
    act_bits: when set, the inputs of quantized layers are fake-quantized at this width
        (an integer, or ``{layer or fnmatch pattern: bits}``: :mod:`mpqcore.activations`).
    device: where the working copy and the batches live (default: the model's device).
    reuse_prefix: the default of :meth:`losses`' switch of the same name: skip, exactly,
        the part of a forward pass that the previous evaluation already computed
        (:mod:`mpqcore.prefix`). Read-only afterwards (:attr:`reuse_prefix`).
    cache: a :class:`~mpqcore.measurement_cache.MeasurementCache` (or ``None``): every
        loss and metric value is read from it when stored there under the same key, and
        stored there when computed (:attr:`cache_hits` counts the reads).
    exclude: fnmatch patterns of layers to leave float when introspecting (``None``:
        :data:`mpqcore.layer_kinds.DEFAULT_EXCLUDE`); see :func:`mpqcore.introspect`.
    plugins: where the layer kinds come from (default: the installed plugins).
    bias_correction: ``True`` (or a policy, ``"add"``/``"existing"``) measures the float
        model's mean input of each layer once (:mod:`mpqcore.bias_correction`), and every
        assignment is then scored with the biases that undo the expected output shift of
        its quantized weights; a ready :class:`~mpqcore.bias_correction.BiasCorrection` is
        used as given. :attr:`bias_correction` is the value (``None`` when off).
    inplace: work on ``model`` itself instead of a copy (no second copy in memory): every
        evaluation puts the float weights back, and :meth:`close` the modules' training
        flags. Refused for a model whose weights are computed (a parametrization, a
        weight_norm hook) or that is not on ``device``, since that would change it.
    weight_cache_bytes: a bound on the quantized weights kept for reuse, codes (one byte
        each) and dequantized tensors together; the least recently used dequantized ones
        are dropped first, codes only when they alone exceed it (:mod:`mpqcore.weight_cache`;
        ``None``: all kept). Values do not change, only speed; :attr:`weight_cache` says
        what is held.
    workers, ray_address: score batches of assignments (:meth:`losses`, :meth:`metrics`)
        on this many Ray actors, each with one copy of the model
        (:class:`mpqcore.workers.WorkerPool`); the values are the single-process ones.

    The layer kinds (:mod:`mpqcore.layer_kinds`) find each layer's weight tensor and its
    output-channel axis; quantizers see it with that axis first. A weight computed by a
    parametrization or a weight_norm hook is baked into a plain Parameter of the working
    copy first, so it is quantized, swapped and differentiated like any other.
    """

    def __init__(
        self,
        model: nn.Module,
        calibration: Iterable[Any],
        spec: ModelSpec | None,
        quantizer: Any,
        *,
        loss: Callable[[Any, Any], torch.Tensor] | None = None,
        metric: Callable[[nn.Module], float] | None = None,
        act_bits: int | Mapping[str, int] | None = None,
        device: torch.device | str | None = None,
        reuse_prefix: bool = True,
        exclude: Sequence[str] | None = None,
        plugins: PluginSet | None = None,
        bias_correction: bool | str | BiasCorrection | None = None,
        cache: MeasurementCache | None = None,
        inplace: bool = False,
        weight_cache_bytes: int | None = None,
        workers: int | None = None,
        ray_address: str | None = None,
        weights_from: Evaluator | None = None,
    ):
        self.quantizer = quantizer
        self._reuse_prefix = bool(reuse_prefix)
        self._prefix: PrefixReuse | None = None
        self.user_loss = loss
        self.user_metric = metric
        self._metric_higher = higher_is_better(metric)
        self.act_bits = act_bits
        self.inplace = bool(inplace)
        self._act_handles: list[torch.utils.hooks.RemovableHandle] = []
        self.cache = cache
        #: Each module's ``training`` flag as the user's model had it (given back by :meth:`release`).
        self._modes = {name: m.training for name, m in model.named_modules()}
        if self.inplace:
            _check_in_place(model, device, plugins)
            self.model = model.eval()
        else:
            try:  # a working copy, so the user's model is never touched
                self.model = copy.deepcopy(model).eval()
            except Exception as exc:
                raise ConfigError(
                    f"mpq works on a copy of the model so that yours stays unchanged, but copy.deepcopy failed: "
                    f"{type(exc).__name__}: {exc}. Make the model deep-copyable (no open files, locks, generators "
                    "or lambdas held as attributes), hold those outside the model, or let mpq work on the model "
                    "itself (inplace=True: its weights are put back after every evaluation)"
                ) from exc
        if device is None:
            first = next(iter(self.model.parameters()), None)
            device = first.device if first is not None else torch.device("cpu")
        self.device = torch.device(device)
        self.model.to(self.device)
        self.calibration = [to_device(b, self.device) for b in materialize(calibration)]
        found = _baked_layers(self.model, plugins)
        if spec is None:
            spec = introspect(self.model, self.calibration[0], exclude=exclude, plugins=plugins)
        self.spec = spec
        by_name = {name: f for f in found.values() for name in f.names}
        missing = [layer.fqn for layer in spec.layers if layer.fqn not in by_name]
        if missing:
            raise ConfigError(f"layers {missing[:5]} of the spec are not quantizable modules of the model")
        self._found: dict[str, Found] = {layer.fqn: by_name[layer.fqn] for layer in spec.layers}
        #: The module holding each layer's weight in the working copy, ``{fqn: module}``; read
        #: them, never write through them (the evaluator restores only what it changed itself).
        self.modules: Mapping[str, nn.Module] = types.MappingProxyType(
            {fqn: f.module for fqn, f in self._found.items()}
        )
        self._params = {fqn: _weight_of(fqn, f) for fqn, f in self._found.items()}
        self._axis = {fqn: f.ref.axis for fqn, f in self._found.items()}
        self._float = {fqn: w.data for fqn, w in self._params.items()}
        self._weights: WeightCache
        self.weight_cache_bytes: int | None
        if weights_from is not None:
            # the guard's and bias correction's evaluators on the measuring one's model: the same float
            # weights and quantizer give the same quantized weights, so one cache (and its bound) serves all
            theirs = weights_from._float
            if weights_from.quantizer is not quantizer or any(
                fqn not in theirs or theirs[fqn].data_ptr() != w.data_ptr() for fqn, w in self._float.items()
            ):
                raise ValueError("weights_from= needs an evaluator with the same quantizer over the same weights")
            if weight_cache_bytes is not None:
                raise ValueError("weights_from= shares that evaluator's weight cache and its bound; give no other")
            self.weight_cache_bytes = weights_from.weight_cache_bytes
            self._weights = weights_from._weights
        else:
            self.weight_cache_bytes = check_weight_cache_bytes(weight_cache_bytes)
            self._weights = WeightCache(self.weight_cache_bytes)
        self._float_outputs: list[torch.Tensor] | None = None
        self._active_act: set[str] = set()
        self._evaluations = 0
        self._forward_passes = 0
        self._float_bias = {fqn: getattr(f.module, "bias", None) for fqn, f in self._found.items()}
        self._float_bias = {fqn: b.data if isinstance(b, nn.Parameter) else None for fqn, b in self._float_bias.items()}
        self._biases: dict[tuple[str, int], torch.Tensor | None] = {}
        # the float model's input means, before any hook is installed (its own are removed)
        self.bias_correction: BiasCorrection | None = self._bias_correction(bias_correction)
        self._pool: WorkerPool | None = None
        if workers is not None:  # before any hook: the actors get the plain working model
            options = {"loss": loss, "metric": metric, "act_bits": act_bits, "reuse_prefix": reuse_prefix,
                       "bias_correction": self.bias_correction}  # fmt: skip
            self._pool = WorkerPool(
                workers,
                self.model,
                self.calibration,
                self.spec,
                quantizer,
                options,
                factory=Evaluator,
                address=ray_address,
            )
        #: ``{layer: activation width}`` of the layers whose inputs are quantized (:mod:`mpqcore.activations`).
        self.act_bits_of = activations.act_bits_per_layer(act_bits, self._found)
        # one hook per module that computes with a layer's weight (an LSTM holds several
        # layers, a tied weight has several modules): its inputs are quantized when any is
        modules_of = {fqn: f.modules for fqn, f in self._found.items()}
        for m, width, fqns in activations.module_act_bits(modules_of, self.act_bits_of):
            self._act_handles.append(m.register_forward_pre_hook(self._act_hook(fqns, width)))
        self._cache_context = self._settings_digest() if cache is not None else ""
        live = _CREATED.get()
        if live is not None:  # built: closed if the call that built it fails later
            live.append(self)

    def _bias_correction(self, given: bool | str | BiasCorrection | None) -> BiasCorrection | None:
        if isinstance(given, BiasCorrection):
            given.check_model(self.modules)
            return given
        policy = check_policy(given)
        if policy is None:
            return None
        # one pass over the calibration batches with the float weights (counted)
        users = layer_users(self._found.values())
        return BiasCorrection.measure(users, self._run, len(self.calibration), policy=policy)

    # -- the measurement cache -----------------------------------------------------

    def _settings_digest(self) -> str:
        """Everything besides the model's weights and the assignment that a loss or metric
        value depends on (the one place: a new evaluator setting that changes numbers
        belongs here)."""
        return digest(
            {
                "calibration": self.calibration,
                "quantizer": settings_digest(self.quantizer),
                # the code that computes the numbers: mpqcore's own and the quantizer's package
                "code": sorted({code_digest(self), code_digest(self.quantizer)}),
                "loss": callable_identity(self.user_loss),
                "metric": callable_identity(self.user_metric),
                "act_bits": self.act_bits,
                "device": self.device.type,
                "torch": torch.__version__,
                "layers": [(layer.fqn, layer.axis) for layer in self.spec.layers],
                "bias_correction": None
                if self.bias_correction is None
                else {"policy": self.bias_correction.policy, "means": dict(self.bias_correction.means)},
            }
        )

    def cache_key(self, kind: str, assignment: Assignment, **extra: Any) -> str:
        """The cache key of one evaluation: ``kind`` (``loss``, ``metric``, ...), the assignment, ``extra``."""
        return digest(self._cache_context, kind, sorted((k, int(b)) for k, b in assignment.items()), extra)

    def _cached(self, kind: str, assignment: Assignment, compute: Callable[[], float], **extra: Any) -> float:
        if self.cache is None:
            return compute()
        key = self.cache_key(kind, assignment, **extra)
        stored = self.cache.get(key)
        if stored is not None:
            return float(stored)
        value = compute()
        self.cache.put(key, value)
        return value

    @property
    def cache_hits(self) -> int:
        """Values read back from the measurement cache (0 without one)."""
        return 0 if self.cache is None else self.cache.hits

    # -- counters and switches (read-only: only the evaluator changes them) ---------

    @property
    def evaluations(self) -> int:
        """Assignments scored so far (:meth:`loss`, :meth:`metric`, :meth:`finetuned_score`)."""
        return self._evaluations

    @property
    def forward_passes(self) -> int:
        """Forward passes of the working model over a calibration batch so far.

        Every pass counts, also the float reference, prefix reuse's tracing pass and
        the differentiable passes of :meth:`forward` and :meth:`batch_loss`; a pass
        that prefix reuse shortened counts as a full one.
        """
        return self._forward_passes

    @property
    def reuse_prefix(self) -> bool:
        """The default of :meth:`losses`' ``reuse_prefix`` (set when constructed)."""
        return self._reuse_prefix

    # -- weights -----------------------------------------------------------------

    def weight(self, fqn: str) -> torch.Tensor:
        """The float weight of ``fqn`` (do not modify it)."""
        self._check_layer(fqn)
        return self._float[fqn]

    def quantized(self, fqn: str, bits: int) -> QuantizedTensor:
        """Integer codes, scale and zero point of ``fqn`` at ``bits`` (cached), in the weight's layout.

        The quantizer sees the weight with its output-channel axis first (see
        :func:`mpqcore.layer_kinds.quantize_along`); ``axis`` of the result is that axis
        in the weight (``None`` per tensor).
        """
        self._check_layer(fqn)

        def compute() -> QuantizedTensor:
            with torch.no_grad():
                return compact_codes(quantize_along(self.quantizer, self._float[fqn], int(bits), self._axis[fqn]))

        return self._weights.get(("codes", fqn, int(bits)), compute)

    def _fake_of(self, fqn: str, weight: torch.Tensor, bits: int) -> torch.Tensor:
        """``weight`` (a latent copy of ``fqn``'s) fake-quantized at ``bits``, along the layer's channel axis."""
        q = quantize_along(self.quantizer, weight, int(bits), self._axis[fqn])
        return q.dequantize().reshape(weight.shape).to(weight.dtype)

    def fake_quantized(self, fqn: str, bits: int) -> torch.Tensor:
        """The dequantized weight of ``fqn`` at ``bits`` (cached; do not modify it)."""
        self._check_layer(fqn)
        w = self._float[fqn]
        return self._weights.get(
            ("dequantized", fqn, int(bits)),
            lambda: self.quantized(fqn, bits).dequantize().to(w.dtype).reshape(w.shape),
        )

    @property
    def weight_cache(self) -> dict[str, int | None]:
        """The quantized weights kept for reuse: ``bound``, bytes ``held`` now and at ``peak``
        (codes in one byte each, and dequantized tensors; see :mod:`mpqcore.weight_cache`)."""
        return {"bound": self._weights.bound, "held": self._weights.held, "peak": self._weights.peak}

    def _check_layer(self, fqn: str) -> None:
        if fqn not in self._float:
            raise ConfigError(f"no quantizable layer {fqn!r}{suggest(fqn, self._float)}")

    # -- applying ------------------------------------------------------------------

    @contextlib.contextmanager
    def applied(self, assignment: Assignment) -> Iterator[nn.Module]:
        """The working model with ``assignment`` applied; float weights come back on exit."""
        for fqn in assignment:
            self._check_layer(fqn)
        fakes = {fqn: self.fake_quantized(fqn, b) for fqn, b in assignment.items()}
        biases = {fqn: self.corrected_bias(fqn, b) for fqn, b in assignment.items()}
        with self._weights_swapped(fakes, biases) as model:
            yield model

    def corrected_bias(self, fqn: str, bits: int) -> torch.Tensor | None:
        """The bias of ``fqn`` that undoes its expected output shift at ``bits`` (cached);
        ``None`` without bias correction or for a layer it does not correct."""
        if self.bias_correction is None:
            return None
        key = (fqn, int(bits))
        if key not in self._biases:
            self._biases[key] = self._bias_for(fqn, self.fake_quantized(fqn, bits))
        return self._biases[key]

    def _bias_for(self, fqn: str, weight: torch.Tensor) -> torch.Tensor | None:
        if self.bias_correction is None:
            return None
        with torch.no_grad():
            return self.bias_correction.corrected_bias(
                fqn, self.modules[fqn], self._float[fqn], weight, self._float_bias[fqn]
            )

    @contextlib.contextmanager
    def _weights_swapped(
        self, weights: Mapping[str, torch.Tensor], biases: Mapping[str, torch.Tensor | None] | None = None
    ) -> Iterator[nn.Module]:
        """The working model with these tensors behind the layers' weights (their biases
        corrected when given, their inputs fake-quantized with ``act_bits``); the float
        tensors come back on exit."""
        undo: list[Callable[[], None]] = []
        try:
            for fqn, q in weights.items():
                self._params[fqn].data = q
            for fqn, bias in (biases or {}).items():
                if bias is not None:
                    undo.append(swap_bias(self.modules[fqn], bias))
            with self._activations_quantized(weights):
                yield self.model
        finally:
            for fqn in weights:
                self._params[fqn].data = self._float[fqn]
            for restore in reversed(undo):
                restore()

    @contextlib.contextmanager
    def _activations_quantized(self, fqns: Iterable[str]) -> Iterator[None]:
        self._active_act = set(fqns)
        try:
            yield
        finally:
            self._active_act = set()

    def _act_hook(
        self, fqns: tuple[str, ...], act_bits: int
    ) -> Callable[[nn.Module, tuple[Any, ...]], tuple[Any, ...] | None]:
        def hook(module: nn.Module, inputs: tuple[Any, ...]) -> tuple[Any, ...] | None:
            if not any(f in self._active_act for f in fqns):
                return None
            return activations.quantize_inputs(inputs, act_bits)  # the one implementation report.model uses too

        return hook

    @contextlib.contextmanager
    def gradients(self, fqns: Sequence[str]) -> Iterator[list[torch.Tensor]]:
        """The working model's weights of ``fqns``, requiring grad for the block.

        For gradient- and Hessian-based methods: differentiate :meth:`forward` or
        :meth:`batch_loss` with respect to the yielded tensors (in ``fqns`` order), with
        :func:`torch.autograd.grad`. On exit, also when the block raises, each weight's
        ``requires_grad`` and ``.grad`` are what they were before.
        """
        for fqn in fqns:
            self._check_layer(fqn)
        params = [self._params[fqn] for fqn in fqns]
        was = [(p.requires_grad, p.grad) for p in params]
        try:
            for p in params:
                p.requires_grad_(True)
                p.grad = None
            yield list(params)
        finally:
            for p, (flag, grad) in zip(params, was, strict=True):
                p.requires_grad_(flag)
                p.grad = grad

    # -- scoring ---------------------------------------------------------------------

    def float_outputs(self) -> list[torch.Tensor]:
        """The float model's primary outputs on every calibration batch (computed once)."""
        if self._float_outputs is None:
            outs = []
            with torch.no_grad():
                for i in range(len(self.calibration)):
                    check_not_empty(self.calibration[i], i)
                    try:
                        out = primary_output(self._run(i)).detach()
                    except ConfigError:
                        raise
                    except Exception as exc:
                        raise ConfigError(
                            f"the model failed on calibration batch {i}: {type(exc).__name__}: {exc}"
                        ) from exc
                    if out.is_floating_point() and not bool(torch.isfinite(out).all()):
                        bad = int((~torch.isfinite(out)).sum())
                        raise ConfigError(
                            f"the float model's output on calibration batch {i} has {bad} non-finite values "
                            "(NaN or inf); mpq measures quantization against finite float outputs: check the "
                            "model and the batch (e.g. uninitialized weights, a log of zero)"
                        )
                    outs.append(out)
            self._float_outputs = outs
        return self._float_outputs

    def _run(self, i: int, model: nn.Module | None = None) -> Any:
        """One forward pass over calibration batch ``i``, counted: every pass of the
        evaluator goes through here (or through :meth:`_run_with`)."""
        outputs = call_model(self.model if model is None else model, self.calibration[i])
        self._forward_passes += 1
        return outputs

    def _batch_loss(self, model: nn.Module, i: int, batch: Any) -> torch.Tensor:
        outputs = self._run(i, model)
        return self._loss_of(outputs, i, batch)

    def _loss_of(self, outputs: Any, i: int, batch: Any) -> torch.Tensor:
        if self.user_loss is not None:
            return self.user_loss(outputs, batch)
        return default_loss(outputs, self.float_outputs()[i], batch)

    def _mean_loss(self, model: nn.Module) -> float:
        total, weight = 0.0, 0
        for i, batch in enumerate(self.calibration):
            n = batch_size(batch)
            total += float(self._batch_loss(model, i, batch)) * n
            weight += n
        value = total / max(weight, 1)
        if not math.isfinite(value):
            raise ConfigError(f"the calibration loss is {value}; check the model, the loss and the calibration data")
        return value

    def loss(self, assignment: Assignment = {}) -> float:  # noqa: B006 - read-only default
        """Mean calibration loss with ``assignment`` applied and the rest in float.

        With the default loss, ``loss({})`` is 0: the divergence of the float model from
        itself.
        """
        return self._cached("loss", assignment, lambda: self._loss_now(assignment))

    def _loss_now(self, assignment: Assignment) -> float:
        if self.user_loss is None:
            self.float_outputs()
        self._evaluations += 1
        with torch.no_grad(), self.applied(assignment) as model:
            return self._mean_loss(model)

    def batch_losses(self, assignment: Assignment = {}) -> list[float]:  # noqa: B006 - read-only default
        """The loss of each calibration batch with ``assignment`` applied; one evaluation.

        :meth:`loss` is their mean weighted by batch size; the spread across batches is
        what the guard (:mod:`mpqcore.verify`) compares candidates by.
        """
        if self.user_loss is None:
            self.float_outputs()
        self._evaluations += 1
        with torch.no_grad(), self.applied(assignment) as model:
            values = [float(self._batch_loss(model, i, batch)) for i, batch in enumerate(self.calibration)]
        if not all(math.isfinite(v) for v in values):
            raise ConfigError(f"the calibration loss is {values}; check the model, the loss and the calibration data")
        return values

    def forward(self, i: int) -> Any:
        """The working (float) model's differentiable output on calibration batch ``i``.

        For methods that need the outputs themselves (a Gauss-Newton estimate); it is a
        forward pass and is counted.
        """
        return self._run(i)

    def batch_loss(self, i: int) -> torch.Tensor:
        """The differentiable loss of the working (float) model on calibration batch ``i``.

        For gradient- and Hessian-based methods; it is a forward pass and is counted.
        """
        if self.user_loss is None:
            self.float_outputs()
        return self._batch_loss(self.model, i, self.calibration[i])

    def losses(self, assignments: Sequence[Assignment], *, reuse_prefix: bool | None = None) -> list[float]:
        """:meth:`loss` for several assignments: the same values, computed faster.

        With ``reuse_prefix`` (``None``: the evaluator's default, set when constructed)
        the assignments are run in an order where neighbours quantize the same layers up
        to a point, and each run starts from the previous one's recorded activations at
        that point (exact; see :mod:`mpqcore.prefix`). ``reuse_prefix=False`` evaluates
        each in full, for this call only. Counters count every call as a full evaluation.
        """
        assignments = list(assignments)
        reuse = self._reuse_prefix if reuse_prefix is None else bool(reuse_prefix)
        if self.cache is None:
            return self._losses_now(assignments, reuse)
        return self._through_cache("loss", assignments, lambda todo, store: self._losses_now(todo, reuse, store))

    def _through_cache(
        self,
        kind: str,
        assignments: list[Assignment],
        compute: Callable[[list[Assignment], Callable[[int, float], None]], list[float]],
    ) -> list[float]:
        """Values read back from the cache where stored; the rest computed by ``compute(todo,
        store)``, which calls ``store(k, value)`` as soon as ``todo[k]`` is known, so that an
        interrupted batch (Ctrl-C, a crash) keeps every value it finished."""
        assert self.cache is not None
        cache = self.cache
        keys = [self.cache_key(kind, a) for a in assignments]
        values: list[float | None] = [cache.get(k) for k in keys]
        missing = [i for i, v in enumerate(values) if v is None]

        def store(k: int, value: float) -> None:
            i = missing[k]
            if values[i] is None:
                cache.put(keys[i], value)
                values[i] = value

        for k, value in enumerate(compute([assignments[i] for i in missing], store)):
            store(k, value)
        return [float(v) for v in values if v is not None]

    def _losses_now(
        self, assignments: list[Assignment], reuse: bool, on_value: Callable[[int, float], None] | None = None
    ) -> list[float]:
        if self._pool is not None and len(assignments) > 1:
            costs = None
            if reuse:  # the driver plans the order; the workers split it by expected work
                prefix = self._prefix_reuse()
                order = prefix.order(assignments)
                costs = prefix.costs([assignments[i] for i in order])
            else:
                order = list(range(len(assignments)))
            return self._on_pool("losses", assignments, order, costs, reuse, on_value)
        if not reuse or len(assignments) < 2:
            return _one_by_one(self._loss_now, assignments, on_value)
        return self._prefix_reuse().losses(assignments, on_value)

    def _on_pool(
        self,
        kind: str,
        assignments: list[Assignment],
        order: list[int],
        costs: list[float] | None,
        reuse: bool,
        on_value: Callable[[int, float], None] | None,
    ) -> list[float]:
        """``assignments`` scored on the workers in ``order``, in rounds when values are stored as
        they come (:data:`POOL_ROUND` assignments per worker each), each round split between the
        workers by ``costs`` (expected work per assignment; ``None``: equal)."""
        assert self._pool is not None
        for a in assignments:
            for fqn in a:
                self._check_layer(fqn)
        values: list[float] = [0.0] * len(assignments)
        size = len(order) if on_value is None else POOL_ROUND * self._pool.workers
        for start in range(0, len(order), size):
            part = order[start : start + size]
            todo = [assignments[i] for i in part]
            work = None if costs is None else costs[start : start + size]
            if kind == "losses":
                got, passes = self._pool.losses(todo, reuse, costs=work)
            else:
                got, passes = self._pool.metrics(todo)
            self._evaluations += len(todo)
            self._forward_passes += passes
            for i, value in zip(part, got, strict=True):
                values[i] = value
                if on_value is not None:
                    on_value(i, value)
        return values

    def _prefix_reuse(self) -> PrefixReuse:
        if self._prefix is None:
            if self.user_loss is None:
                self.float_outputs()  # computed before any replacement is installed
            self._prefix = PrefixReuse(
                self.model,
                self.modules,
                {layer.fqn: layer.macs for layer in self.spec.layers},
                len(self.calibration),
                lambda: self._run(0),
                self._loss_now,
            )
            self._check_tied_order(self._prefix)
        return self._prefix

    def _check_tied_order(self, prefix: PrefixReuse) -> None:
        """Turn reuse off when a tied weight is used by another module before its layer's own:
        prefix reuse places a layer where its module runs, and must not replay outputs that
        the weight already changed (GPT-2's ``wte`` runs before ``lm_head``: that is fine)."""
        if not prefix.enabled:
            return
        names = {id(m): n for n, m in self.model.named_modules()}
        for fqn, f in self._found.items():
            first = prefix.trace.enter.get(names.get(id(f.module), ""))
            for other in f.modules[1:]:
                entered = prefix.trace.enter.get(names.get(id(other), ""))
                if first is not None and entered is not None and entered < first:
                    prefix.enabled = False
                    prefix.reason = f"layer {fqn!r}'s weight is tied to {names[id(other)]!r}, which runs first"
                    return

    @property
    def prefix_reuse(self) -> dict[str, Any]:
        """Whether :meth:`losses` reuses prefixes, why not, and the share of MACs it skipped."""
        p = self._prefix
        if p is not None:
            return {"enabled": p.enabled, "reason": p.reason, "skipped_mac_fraction": p.skipped_fraction}
        if not self._reuse_prefix:
            return {"enabled": False, "reason": "reuse_prefix=False", "skipped_mac_fraction": 0.0}
        return {"enabled": True, "reason": "", "skipped_mac_fraction": 0.0}

    @property
    def has_metric(self) -> bool:
        return self.user_metric is not None

    @property
    def metric_higher_is_better(self) -> bool:
        """The metric's direction (``True`` without a metric)."""
        return self._metric_higher

    def metric(self, assignment: Assignment = {}) -> float:  # noqa: B006
        """The user's metric with ``assignment`` applied, as measured (see :attr:`metric_higher_is_better`)."""
        if self.user_metric is None:
            raise ConfigError("no metric was given; pass metric=callable(model) -> float, or use loss()")
        return self._cached("metric", assignment, lambda: self._metric_now(assignment))

    def metrics(self, assignments: Sequence[Assignment]) -> list[float]:
        """:meth:`metric` for several assignments: the same values, spread over the workers when there are."""
        if self.user_metric is None:
            raise ConfigError("no metric was given; pass metric=callable(model) -> float, or use losses()")
        assignments = list(assignments)
        if self.cache is None:
            return self._metrics_now(assignments)
        return self._through_cache("metric", assignments, self._metrics_now)

    def _metrics_now(
        self, assignments: list[Assignment], on_value: Callable[[int, float], None] | None = None
    ) -> list[float]:
        if self._pool is not None and len(assignments) > 1:
            return self._on_pool("metrics", assignments, list(range(len(assignments))), None, False, on_value)
        return _one_by_one(self._metric_now, assignments, on_value)

    def _metric_now(self, assignment: Assignment) -> float:
        assert self.user_metric is not None
        self._evaluations += 1
        with torch.no_grad(), self.applied(assignment) as model:
            value = float(self.user_metric(model))
        if not math.isfinite(value):
            raise ConfigError(f"the metric returned {value}")
        return value

    def metric_score(self, assignment: Assignment = {}) -> float:  # noqa: B006
        """The metric as a score, higher is better: the metric, or minus a lower-is-better one."""
        return as_score(self.metric(assignment), self._metric_higher)

    def metric_scores(self, assignments: Sequence[Assignment]) -> list[float]:
        """:meth:`metric_score` for several assignments, as one batch (:meth:`metrics`)."""
        return [as_score(m, self._metric_higher) for m in self.metrics(assignments)]

    def score(self, assignment: Assignment = {}) -> float:  # noqa: B006
        """Higher is better: :meth:`metric_score` when a metric was given, else minus the loss."""
        return self.metric_score(assignment) if self.has_metric else -self.loss(assignment)

    # -- fine-tuning (ALPS) --------------------------------------------------------------

    def finetuned_score(
        self,
        assignment: Assignment,
        *,
        steps: int,
        lr: float = 1e-4,
        use_metric: bool | None = None,
        seed: int = 0,
    ) -> float:
        """Score ``assignment`` after ``steps`` of straight-through fine-tuning.

        The quantized layers' latent float weights are trained with a straight-through
        estimator on the calibration batches (the loss: the user's, else the divergence
        from the float model), then scored, higher is better (:meth:`metric_score` or minus
        the loss). Only clones are trained: the working copy and the caches are unchanged
        afterwards.
        """
        if use_metric and not self.has_metric:
            raise ConfigError(
                "finetuned_score(use_metric=True) needs a metric; pass metric=callable(model) -> float to the search"
            )
        use = bool(self.has_metric if use_metric is None else use_metric)
        return self._cached(
            "finetuned",
            assignment,
            lambda: self._finetuned_now(assignment, steps=steps, lr=lr, use=use, seed=seed),
            steps=steps,
            lr=lr,
            use=use,
            seed=seed,
        )

    def _finetuned_now(self, assignment: Assignment, *, steps: int, lr: float, use: bool, seed: int) -> float:
        if steps <= 0:
            return self.metric_score(assignment) if use else -self.loss(assignment)
        for fqn in assignment:
            self._check_layer(fqn)
        if self.user_loss is None:
            self.float_outputs()
        generator = torch.Generator().manual_seed(seed)
        latent = {fqn: self._float[fqn].detach().clone().requires_grad_(True) for fqn in assignment}
        names = {fqn: self._param_name(fqn) for fqn in assignment}
        optimizer = torch.optim.Adam(list(latent.values()), lr=lr)
        for _ in range(steps):
            i = int(torch.randint(len(self.calibration), (1,), generator=generator))
            overrides = {}
            for fqn, w in latent.items():
                q = self._fake_of(fqn, w.detach(), assignment[fqn])
                overrides[names[fqn]] = w + (q - w).detach()  # straight-through estimator
            with self._activations_quantized(assignment):
                outputs = self._run_with(i, overrides)
            loss = self._loss_of(outputs, i, self.calibration[i])
            # autograd.grad, not backward(): the working copy's own parameters must not
            # collect .grad from a fine-tuning run.
            params = list(latent.values())
            # allow_unused: a layer the loss never reaches (an output it does not read) stays as it is.
            for w, g in zip(params, torch.autograd.grad(loss, params, allow_unused=True), strict=True):
                w.grad = g
            optimizer.step()
        trained = {fqn: self._fake_of(fqn, w.detach(), assignment[fqn]) for fqn, w in latent.items()}
        biases = {fqn: self._bias_for(fqn, q) for fqn, q in trained.items()}
        self._evaluations += 1
        with torch.no_grad(), self._weights_swapped(trained, biases) as model:
            if use and self.user_metric is not None:
                return as_score(float(self.user_metric(model)), self._metric_higher)
            return -self._mean_loss(model)

    def _run_with(self, i: int, overrides: Mapping[str, torch.Tensor]) -> Any:
        """:meth:`_run` with some parameters replaced by ``overrides`` (differentiable in them)."""
        batch = self.calibration[i]
        args, kwargs = model_inputs(self.model, batch)
        outputs = torch.func.functional_call(self.model, dict(overrides), args, kwargs)
        self._forward_passes += 1
        return outputs

    def _param_name(self, fqn: str) -> str:
        return self._found[fqn].path

    def close(self) -> None:
        """Remove the evaluator's hooks and close the cache; working in place, give the
        user's modules their training flags back too."""
        if self.cache is not None:
            self.cache.close()  # reopens when used again
        for h in self._act_handles:
            h.remove()
        self._act_handles = []
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self.inplace:
            self._restore_modes()

    def _restore_modes(self) -> None:
        for name, m in self.model.named_modules():
            if name in self._modes:
                m.training = self._modes[name]

    def release(self) -> nn.Module:
        """Close, and hand over the working model (float weights, the user's training flags):
        the search quantizes it as the returned model instead of copying the user's again.
        The evaluator is not used afterwards."""
        self.close()
        self._restore_modes()
        self._weights.clear()
        return self.model


def _one_by_one(
    score: Callable[[Assignment], float],
    assignments: Sequence[Assignment],
    on_value: Callable[[int, float], None] | None,
) -> list[float]:
    """``[score(a) for a in assignments]``, telling ``on_value(k, value)`` of each as it comes."""
    values = []
    for k, a in enumerate(assignments):
        values.append(score(a))
        if on_value is not None:
            on_value(k, values[-1])
    return values


def _check_in_place(model: nn.Module, device: torch.device | str | None, plugins: PluginSet | None) -> None:
    """Refuse in-place work that would change the user's model beyond its restored weights."""
    computed = [fqn for fqn, f in find_layers(model, plugins)[0].items() if f.form in ("parametrized", "hook")]
    if computed:
        raise ConfigError(
            f"inplace=True would bake the computed weights of {computed[:3]} (a parametrization or weight_norm) "
            "into plain Parameters of your model; leave inplace off (mpq then works on a copy)"
        )
    if device is not None:
        where = {p.device for p in model.parameters()}
        if where and where != {torch.device(device)}:
            raise ConfigError(
                f"inplace=True with device={str(device)!r} would move your model from {sorted(map(str, where))}; "
                "move it there first, or leave inplace off"
            )


def _baked_layers(model: nn.Module, plugins: PluginSet | None) -> dict[str, Found]:
    """The layers of the working copy, each weight computed by a parametrization or a
    weight_norm hook first baked into a plain Parameter (:func:`mpqcore.layer_kinds.bake`)."""
    found, _, _ = find_layers(model, plugins)
    computed = [f for f in found.values() if f.form in ("parametrized", "hook")]
    if not computed:
        return found
    for f in computed:
        bake(f.module, f.ref.name)
    return find_layers(model, plugins)[0]


def _weight_of(fqn: str, found: Found) -> nn.Parameter:
    weight = getattr(found.module, found.ref.name, None)
    if not isinstance(weight, nn.Parameter):
        raise ConfigError(f"layer {fqn!r} ({type(found.module).__name__}) has no weight Parameter {found.ref.name!r}")
    return weight
