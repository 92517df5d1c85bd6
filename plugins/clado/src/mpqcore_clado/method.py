"""The ``clado`` sensitivity method: single and pairwise loss changes, measured by forward passes."""

from __future__ import annotations

import time

import attrs
import numpy as np

from mpqcore.context import MeasureContext
from mpqcore.options import option
from mpqcore.types import Objective
from mpqcore_clado.omega import objective_terms, omega_from_losses, project_psd
from mpqcore_clado.pairs import PAIR_MODES, expected_evaluations, layer_pairs

__all__ = ["Clado"]


@attrs.frozen
class Clado:
    """CLADO: Ω from ``L·|B|`` single and ``P·|B|²`` pair evaluations plus ``L(∅)``.

    Options
    -------
    pairs: ``"all"`` layer pairs, ``"window"`` (layers at most ``window`` apart in
        forward order) or ``"block"`` (layers of the same repeated block, see
        :func:`mpqcore_clado.pairs.block_of`).
    window: the window width for ``pairs="window"`` (>= 1).
    symmetrize: store Ω symmetric (each interaction halved on both sides) rather than
        upper-triangular; the objective is the same either way.
    psd: project Ω onto the positive semidefinite cone (clip negative eigenvalues)
        before building the objective, as the paper's optional convexification.
    batch_size: how many assignments go to ``evaluator.losses`` at once when prefix
        reuse is off or impossible.
    reuse_prefix: skip, exactly, the part of each forward pass that an earlier
        evaluation already computed (the evaluator's :mod:`mpqcore.prefix`).
    """

    pairs: str = option(str, default="all", choices=PAIR_MODES, help="which layer pairs are measured")
    window: int = option(int, default=1, minimum=1, help="largest layer distance with pairs='window'")
    symmetrize: bool = option(bool, default=True, help="store Ω symmetric rather than upper-triangular")
    psd: bool = option(bool, default=False, help="project Ω onto the PSD cone")
    batch_size: int = option(int, default=16, minimum=1, help="assignments per evaluator call without prefix reuse")
    reuse_prefix: bool = option(bool, default=True, help="skip forward-pass prefixes computed already")

    def measure(self, ctx: MeasureContext) -> Objective:
        ev = ctx.evaluator
        started = time.perf_counter()
        evaluations0, passes0 = ev.evaluations, ev.forward_passes
        layers, bits = ctx.layers, ctx.bits
        index_pairs = layer_pairs(layers, self.pairs, self.window)
        base, singles, pair_losses = self._measure(ctx, index_pairs)
        omega = omega_from_losses(base, singles, pair_losses, symmetric=self.symmetrize)
        psd_info = None
        if self.psd:
            omega, psd_info = project_psd(omega)
        unary, pairs = objective_terms(omega, layers, bits)
        seconds = time.perf_counter() - started
        used = ev.evaluations - evaluations0
        info = ctx.option_info(
            method="clado",
            pairs=self.pairs,
            window=self.window if self.pairs == "window" else None,
            layer_pairs=len(index_pairs),
            pair_terms=len(pairs),
            evaluations_used=used,
            evaluations_formula=expected_evaluations(len(layers), len(bits), len(index_pairs)),
            evaluations_all_pairs=expected_evaluations(len(layers), len(bits)),
            forward_passes_used=ev.forward_passes - passes0,
            measure_seconds=seconds,
            seconds_per_evaluation=seconds / used if used else 0.0,
            base_loss=base,
            symmetrize=self.symmetrize,
            psd=psd_info,
            prefix_reuse=ev.prefix_reuse
            if self.reuse_prefix
            else {"enabled": False, "skipped_mac_fraction": 0.0, "reason": "option reuse_prefix=False"},
        )
        return Objective(layers=layers, bits=bits, unary=unary, pairs=pairs, info=info)

    def _measure(self, ctx: MeasureContext, index_pairs):
        """Every assignment through ``evaluator.losses``: all at once with prefix reuse
        (exact: the evaluator orders them so that each pair resumes at its later layer),
        else ``batch_size`` at a time with reuse switched off for these calls."""
        layers, bits = ctx.layers, ctx.bits
        keys: list = [("base",)]
        assignments = [ctx.with_fixed({})]
        for i, name in enumerate(layers):
            for j, b in enumerate(bits):
                keys.append(("single", i, j))
                assignments.append(ctx.with_fixed({name: b}))
        for i, m in index_pairs:
            for j, b in enumerate(bits):
                for k, b2 in enumerate(bits):
                    keys.append(("pair", i, j, m, k))
                    assignments.append(ctx.with_fixed({layers[i]: b, layers[m]: b2}))
        values: list[float] = []
        step = len(assignments) if self.reuse_prefix else self.batch_size
        chunks = range(0, len(assignments), step)
        for start in ctx.progress(chunks, desc="clado: loss evaluations", total=len(chunks)):
            values.extend(ctx.evaluator.losses(assignments[start : start + step], reuse_prefix=self.reuse_prefix))
        singles = np.empty((len(layers), len(bits)))
        pair_losses = {}
        base = values[0]
        for key, value in zip(keys[1:], values[1:], strict=True):
            if key[0] == "single":
                singles[key[1], key[2]] = value
            else:
                pair_losses[key[1:]] = value
        return base, singles, pair_losses
