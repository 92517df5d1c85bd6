"""Built-in sensitivity methods: the two baselines every comparison includes.

- ``uniform``: every decision layer at one bit-width, the highest that fits the budget
  (an objective that prefers more bits, with all decision layers tied).
- ``hawq``: HAWQ-V2/V3's sensitivity, the average Hessian trace of each layer's weights
  (a Gauss-Newton or a Hutchinson estimate) times the quantization perturbation
  ``||Q_b(W) - W||^2``, halved: the second-order Taylor term of the loss increase.
  With no user loss the Hessian is that of the divergence from the float model at the
  float weights, i.e. the Fisher information of the model's output distribution, so
  no labels are needed. Where that term is not trusted (``calibrate="adaptive"``, the
  default) the loss increase is measured instead, from the lowest width up, until the
  measurement agrees with the Taylor term (see :func:`measured_low_widths`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import numpy as np

from mpqcore.errors import ConfigError
from mpqcore.hookspecs import hookimpl
from mpqcore.lazy_imports import lazy_module
from mpqcore.options import option
from mpqcore.types import Objective

if TYPE_CHECKING:
    import torch

    from mpqcore.context import MeasureContext
else:  # imported on first use: `mpq plugins` and `mpq solve` never need torch
    torch = lazy_module("torch")

__all__ = [
    "CALIBRATIONS",
    "ESTIMATORS",
    "HessianTrace",
    "UniformPrecision",
    "measured_low_widths",
    "perturbation_table",
]


def perturbation_table(ctx: MeasureContext) -> np.ndarray:
    """``||Q_b(W) - W||^2`` for every decision layer and candidate bits."""
    ev = ctx.evaluator
    out = np.empty((len(ctx.layers), len(ctx.bits)))
    for i, fqn in enumerate(ctx.layers):
        w = ev.weight(fqn)
        for j, b in enumerate(ctx.bits):
            out[i, j] = float(((ev.fake_quantized(fqn, b) - w) ** 2).sum())
    return out


@attrs.frozen
class UniformPrecision:
    """Uniform precision: all decision layers at the highest bit-width that fits."""

    def measure(self, ctx: MeasureContext) -> Objective:
        unary = -np.tile(np.asarray(ctx.bits, dtype=float), (len(ctx.layers), 1))
        ties = (tuple(ctx.layers),) if len(ctx.layers) > 1 else ()
        return Objective(layers=ctx.layers, bits=ctx.bits, unary=unary, ties=ties, info={"method": "uniform"})


ESTIMATORS = ("auto", "gauss-newton", "hutchinson")
#: ``adaptive``: measure the loss increase where the Taylor term fails; ``none``: the paper's proxy alone.
CALIBRATIONS = ("adaptive", "none")


def measured_low_widths(ctx: MeasureContext, predicted: np.ndarray, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """The measured single-layer loss increases where the second-order term is not trusted.

    ``predicted[l, j]`` is the Taylor estimate of the loss increase of layer ``l`` alone
    at ``ctx.bits[j]``. A quantization perturbation shrinks as the width grows, and a
    second-order expansion is accurate for small perturbations only; at 2 bits a per-tensor
    quantizer moves weights by a large, structured step (not the isotropic noise the
    trace x ``||dW||^2`` term assumes) and the measured loss can be 10-40x the estimate.
    So, for each layer, the loss with that layer alone quantized (pinned layers at their
    pins) is measured at the lowest width, then the next, until the measured increase
    is at most ``tolerance`` times the estimate; above that width the estimate is
    trusted. Rounds run over all still-open layers at once (:meth:`Evaluator.losses`).
    Returns ``(values, measured)``: the measured increases (0 where not measured) and a
    boolean mask of the measured entries. Costs ``1 + L`` evaluations when every layer's
    expansion already holds at the lowest width, ``1 + L * |B|`` at most.
    """
    ev = ctx.evaluator
    values = np.zeros_like(predicted)
    measured = np.zeros(predicted.shape, dtype=bool)
    base = ev.loss(ctx.fixed)
    open_rows = list(range(len(ctx.layers)))
    for j, b in enumerate(ctx.bits):
        if not open_rows:
            break
        got = ev.losses([ctx.with_fixed({ctx.layers[i]: b}) for i in open_rows])
        still = []
        for i, loss in zip(open_rows, got, strict=True):
            increase = loss - base
            values[i, j], measured[i, j] = increase, True
            p = predicted[i, j]
            if increase > tolerance * p:
                still.append(i)
        open_rows = still
    return values, measured


@attrs.frozen
class HessianTrace:
    """HAWQ: each layer's average Hessian trace x ||Q_b(W) - W||^2.

    Two unbiased estimators of the per-layer trace ``tr(H_kk)``, ``samples`` draws each
    (seeded); the objective's ``stderr`` is the trace's standard error propagated to each
    term, and ``info`` holds the per-layer traces and their relative spread.

    - ``gauss-newton`` (with the default loss): at the float weights the divergence from
      the float model has Hessian ``J^T H_out J`` (its residual term vanishes), where
      ``H_out`` is the loss's Hessian in the outputs: ``(diag(p) - p p^T) / N`` per
      sample for KL on logits (per kept token for a language model's), ``2 I / sum(ref^2)``
      for the normalised MSE, the projection off ``ref`` over ``|ref|^2`` for the cosine
      distance (each divergence's ``probe`` in :mod:`mpqcore.divergence`). Drawing
      ``u`` with covariance ``H_out`` (a label sampled from the model's own softmax:
      ``u = onehot(y) - p``) and back-propagating ``g = J^T u`` gives ``E ||g_k||^2 =
      tr(H_kk)`` for every layer at once: one backward pass per draw, never negative,
      and free of the cross-layer terms a shared Hutchinson probe picks up. A layer the
      loss never reaches (an output the loss does not read) has trace 0.
    - ``hutchinson`` (any loss): Rademacher ``v`` over all layers and the Hessian-vector
      product by double backward; ``v_k^T (H v)_k`` is unbiased for ``tr(H_kk)`` but
      carries zero-mean cross-layer terms ``v_k^T H_kj v_j``, so a small layer's estimate
      can come out negative: such a trace (the true one of a PSD Hessian is >= 0) is
      clamped at 0 and reported.

    ``auto`` takes ``gauss-newton`` when the evaluator uses its default loss and
    ``hutchinson`` with a user loss.

    The objective is the predicted loss increase ``0.5 * tr(H_kk) / n_k * ||Q_b(W) - W||^2``
    (the factor 0.5 of a Taylor expansion makes it comparable to a measured loss; it
    changes no allocation). With ``calibrate="adaptive"`` (default) the lowest widths of
    each layer, where that expansion underestimates, are measured (:func:`measured_low_widths`;
    ``tolerance``: how far above the estimate a measurement may lie before the next width
    is measured too), and such an entry is the larger of the two: a measurement below the
    estimate is of the layer alone, with every other layer in float, while in the final
    model the others are quantized too, so it does not lower the estimate (on digits-cnn
    at 3 bits taking it lowered accuracy by 4 images; see benchmarks/results/proxies.md).
    ``info["measured"]`` lists the measured entries with both numbers.
    ``calibrate="none"`` is the paper's proxy alone, with no evaluation.
    """

    samples: int = option(int, default=16, minimum=1, help="estimator draws (seeded)")
    estimator: str = option(str, default="auto", choices=ESTIMATORS, help="how the Hessian trace is estimated")
    calibrate: str = option(
        str, default="adaptive", choices=CALIBRATIONS, help="measure the loss where the Taylor term fails"
    )
    tolerance: float = option(
        float,
        default=2.0,
        greater_than=1.0,
        help="how far a measured loss may exceed the Taylor term before the next width is measured",
    )

    def measure(self, ctx: MeasureContext) -> Objective:
        ev = ctx.evaluator
        estimator = self.estimator
        if estimator == "auto":
            estimator = "hutchinson" if ev.user_loss is not None else "gauss-newton"
        if estimator == "gauss-newton" and ev.user_loss is not None:
            raise ConfigError(
                "hawq: estimator 'gauss-newton' needs the default loss (a user loss has no known output Hessian); use 'hutchinson'"
            )
        generator = torch.Generator(device="cpu").manual_seed(ctx.seed)
        from mpqcore.batches import batch_size

        total_n = sum(batch_size(b) for b in ev.calibration)
        estimates = np.zeros((self.samples, len(ctx.layers)))
        draw = self._gauss_newton_draw if estimator == "gauss-newton" else self._hutchinson_draw
        # The evaluator lends the weights for differentiation and restores them after.
        with ev.gradients(ctx.layers) as params:
            for s in ctx.progress(range(self.samples), desc=f"hawq: {estimator} draws", total=self.samples):
                for i, batch in enumerate(ev.calibration):
                    weight = batch_size(batch) / total_n
                    estimates[s] += draw(ev, i, params, weight, generator)
        counts = ctx.params
        raw = estimates.mean(0)
        trace = np.maximum(raw, 0.0)  # only the Hutchinson estimate can be negative
        trace_se = estimates.std(0, ddof=1) / np.sqrt(self.samples) if self.samples > 1 else np.zeros_like(trace)
        avg = trace / counts
        pert = perturbation_table(ctx)
        predicted = 0.5 * avg[:, None] * pert
        stderr = 0.5 * (trace_se / counts)[:, None] * pert
        unary = predicted
        measured_info: dict[str, dict[int, dict[str, float]]] = {}
        if self.calibrate == "adaptive":
            values, measured = measured_low_widths(ctx, predicted, self.tolerance)
            unary = np.where(measured, np.maximum(values, predicted), predicted)
            stderr = np.where(measured, 0.0, stderr)
            for i, f in enumerate(ctx.layers):
                row = {int(b): {"measured": float(values[i, j]), "taylor": float(predicted[i, j])}
                       for j, b in enumerate(ctx.bits) if measured[i, j]}  # fmt: skip
                measured_info[f] = row
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(np.abs(trace) > 0, trace_se / np.abs(trace), 0.0)
        info = ctx.option_info(
            method="hawq",
            samples=self.samples,
            estimator=estimator,
            hessian_trace={f: float(t) for f, t in zip(ctx.layers, trace, strict=True)},
            clamped_negative_traces={f: float(r) for f, r in zip(ctx.layers, raw, strict=True) if r < 0},
            trace_relative_stderr={f: float(r) for f, r in zip(ctx.layers, rel, strict=True)},
            calibrate=self.calibrate,
            tolerance=self.tolerance,
            measured=measured_info,
        )
        return Objective(layers=ctx.layers, bits=ctx.bits, unary=unary, stderr=stderr, info=info)

    @staticmethod
    def _hutchinson_draw(ev, i, params, weight, generator) -> np.ndarray:
        probes = [(torch.randint(0, 2, p.shape, generator=generator) * 2 - 1).to(p.dtype).to(p.device) for p in params]
        # Double backward through scaled_dot_product_attention exists only for its math
        # kernel (the fused CPU/GPU kernels have no second derivative), so the draw runs
        # with that kernel: the same attention, computed from plain differentiable ops.
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(SDPBackend.MATH):
            loss = ev.batch_loss(i) * weight
            # allow_unused: a layer the loss never reaches (BertModel's pooler when the loss
            # reads last_hidden_state) has no gradient, hence a trace of 0.
            grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
            used = [k for k, g in enumerate(grads) if g is not None and g.requires_grad]
            hv: list[torch.Tensor | None] = [None] * len(params)
            if used:
                try:
                    found = torch.autograd.grad(
                        [grads[k] for k in used], [params[k] for k in used],
                        grad_outputs=[probes[k] for k in used], allow_unused=True,
                    )  # fmt: skip
                except RuntimeError as exc:
                    if "not implemented" not in str(exc):
                        raise
                    raise ConfigError(
                        f"hawq: the Hutchinson estimator differentiates twice, and torch cannot here ({exc}); "
                        "use estimator='gauss-newton' with the default loss (one backward pass)"
                    ) from exc
                for k, h in zip(used, found, strict=True):
                    hv[k] = h
        return np.array([0.0 if h is None else float((v * h).sum()) for v, h in zip(probes, hv, strict=True)])

    @staticmethod
    def _gauss_newton_draw(ev, i, params, weight, generator) -> np.ndarray:
        from mpqcore.divergence import default_divergence, primary_output, token_mask

        outputs = ev.forward(i)
        y = primary_output(outputs)
        ref = ev.float_outputs()[i].to(y.dtype)
        # u with covariance the default divergence's Hessian in the output (see its probe).
        u = default_divergence(outputs).probe(ref, token_mask(ev.calibration[i], y), generator)
        u = u.to(y.dtype) * np.sqrt(weight)
        grads = torch.autograd.grad(y, params, grad_outputs=u, allow_unused=True)  # unused layers: trace 0
        return np.array([0.0 if g is None else float(g.pow(2).sum()) for g in grads])


@hookimpl
def mpq_register_methods(registry) -> None:
    registry.add("uniform", UniformPrecision)
    registry.add("hawq", HessianTrace)
