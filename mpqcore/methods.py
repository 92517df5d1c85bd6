"""Built-in sensitivity methods: the two baselines every comparison includes.

- ``uniform``: every decision layer at one bit-width, the highest that fits the budget
  (an objective that prefers more bits, with all decision layers tied).
- ``hawq``: HAWQ-V2/V3's sensitivity, the average Hessian trace of each layer's weights
  (a Gauss-Newton or a Hutchinson estimate) times the quantization perturbation
  ``||Q_b(W) - W||^2``.
  With no user loss the Hessian is that of the divergence from the float model at the
  float weights, i.e. the Fisher information of the model's output distribution, so
  no labels are needed.
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

__all__ = ["ESTIMATORS", "HessianTrace", "UniformPrecision", "perturbation_table"]


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
    """

    samples: int = option(int, default=16, minimum=1, help="estimator draws (seeded)")
    estimator: str = option(str, default="auto", choices=ESTIMATORS, help="how the Hessian trace is estimated")

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
        unary = avg[:, None] * pert
        stderr = (trace_se / counts)[:, None] * pert
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(np.abs(trace) > 0, trace_se / np.abs(trace), 0.0)
        info = ctx.option_info(
            method="hawq",
            samples=self.samples,
            estimator=estimator,
            hessian_trace={f: float(t) for f, t in zip(ctx.layers, trace, strict=True)},
            clamped_negative_traces={f: float(r) for f, r in zip(ctx.layers, raw, strict=True) if r < 0},
            trace_relative_stderr={f: float(r) for f, r in zip(ctx.layers, rel, strict=True)},
        )
        return Objective(layers=ctx.layers, bits=ctx.bits, unary=unary, stderr=stderr, info=info)

    @staticmethod
    def _hutchinson_draw(ev, i, params, weight, generator) -> np.ndarray:
        probes = [(torch.randint(0, 2, p.shape, generator=generator) * 2 - 1).to(p.dtype).to(p.device) for p in params]
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
                    "a transformers model built with attn_implementation='eager' can be, or use "
                    "estimator='gauss-newton' with the default loss (one backward pass)"
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
