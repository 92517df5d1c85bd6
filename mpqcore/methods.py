"""Built-in sensitivity methods: the two baselines every comparison includes.

- ``uniform``: every decision layer at one bit-width, the highest that fits the budget
  (an objective that prefers more bits, with all decision layers tied).
- ``hawq``: HAWQ-V2/V3's sensitivity, the average Hessian trace of each layer's weights
  (Hutchinson's estimator) times the quantization perturbation ``||Q_b(W) - W||^2``.
  With no user loss the Hessian is that of the divergence from the float model at the
  float weights, i.e. the Fisher information of the model's output distribution, so
  no labels are needed.
"""

from __future__ import annotations

import attrs
import numpy as np
import torch

from mpqcore.batches import batch_size
from mpqcore.context import MeasureContext
from mpqcore.errors import ConfigError
from mpqcore.hookspecs import hookimpl
from mpqcore.types import Objective

__all__ = ["UniformPrecision", "HessianTrace", "perturbation_table"]


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


@attrs.frozen
class HessianTrace:
    """HAWQ: Hutchinson estimate of each layer's average Hessian trace x ||Q_b(W) - W||^2.

    ``samples`` Rademacher probes are drawn (seeded); the objective's ``stderr`` is the
    standard error of the trace estimate propagated to each term, and ``info`` holds the
    per-layer traces and their relative spread.
    """

    samples: int = attrs.field(default=16, converter=int)

    @samples.validator
    def _check(self, _attr, value):
        if value < 1:
            raise ConfigError(f"hawq: samples must be >= 1, got {value}")

    def measure(self, ctx: MeasureContext) -> Objective:
        ev = ctx.evaluator
        params = [ev.modules[f].weight for f in ctx.layers]
        was = [p.requires_grad for p in params]
        generator = torch.Generator(device="cpu").manual_seed(ctx.seed)
        total_n = sum(batch_size(b) for b in ev.calibration)
        estimates = np.zeros((self.samples, len(params)))
        try:
            for p in params:
                p.requires_grad_(True)
            for s in ctx.progress(range(self.samples), desc="hawq: Hutchinson probes", total=self.samples):
                probes = [(torch.randint(0, 2, p.shape, generator=generator) * 2 - 1).to(p.dtype).to(p.device) for p in params]
                for i, batch in enumerate(ev.calibration):
                    weight = batch_size(batch) / total_n
                    loss = ev.batch_loss(i) * weight
                    grads = torch.autograd.grad(loss, params, create_graph=True)
                    hv = torch.autograd.grad(grads, params, grad_outputs=probes)
                    for k, (v, h) in enumerate(zip(probes, hv)):
                        estimates[s, k] += float((v * h).sum())
        finally:
            for p, flag in zip(params, was):
                p.requires_grad_(flag)
                p.grad = None
        counts = ctx.params
        raw = estimates.mean(0)
        # The loss is the divergence from the float model, whose Hessian at the float
        # weights is the Gauss-Newton matrix J^T H_out J: positive semidefinite, so every
        # true layer trace is >= 0. One probe over all layers also picks up the zero-mean
        # cross-layer terms v_k^T H_kj v_j, so a layer's estimate can come out negative
        # with few samples; a negative value would make *fewer* bits look better, so it
        # is clamped at 0 and reported.
        trace = np.maximum(raw, 0.0)
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
            hessian_trace={f: float(t) for f, t in zip(ctx.layers, trace)},
            clamped_negative_traces={f: float(r) for f, r in zip(ctx.layers, raw) if r < 0},
            trace_relative_stderr={f: float(r) for f, r in zip(ctx.layers, rel)},
        )
        return Objective(layers=ctx.layers, bits=ctx.bits, unary=unary, stderr=stderr, info=info)


@hookimpl
def mpq_register_methods(registry) -> None:
    registry.add("uniform", UniformPrecision)
    registry.add("hawq", HessianTrace)
