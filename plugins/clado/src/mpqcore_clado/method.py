"""The ``clado`` sensitivity method: single and pairwise loss changes, measured by forward passes."""

from __future__ import annotations

import time
from collections.abc import Callable

import attrs
import numpy as np

from mpqcore.context import MeasureContext
from mpqcore.errors import ConfigError
from mpqcore.types import Objective
from mpqcore_clado.omega import objective_terms, omega_from_losses, project_psd
from mpqcore_clado.pairs import PAIR_MODES, expected_evaluations, layer_pairs
from mpqcore_clado.prefix import SharedPrefix

__all__ = ["Clado"]


def _one_of(values: tuple) -> Callable:
    def check(_inst, attr, value):
        if value not in values:
            raise ConfigError(f"clado: option {attr.name}={value!r} is not valid; valid: {', '.join(map(repr, values))}")

    return check


def _at_least(low: int) -> Callable:
    def check(_inst, attr, value):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"clado: option {attr.name}={value!r} is not valid; valid: an integer >= {low}")

    return check


def _boolean(_inst, attr, value):
    if not isinstance(value, bool):
        raise ConfigError(f"clado: option {attr.name}={value!r} is not valid; valid: True or False")


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
        evaluation already computed (see :mod:`mpqcore_clado.prefix`).
    """

    pairs: str = attrs.field(default="all", validator=_one_of(PAIR_MODES))
    window: int = attrs.field(default=1, validator=_at_least(1))
    symmetrize: bool = attrs.field(default=True, validator=_boolean)
    psd: bool = attrs.field(default=False, validator=_boolean)
    batch_size: int = attrs.field(default=16, validator=_at_least(1))
    reuse_prefix: bool = attrs.field(default=True, validator=_boolean)

    def measure(self, ctx: MeasureContext) -> Objective:
        ev = ctx.evaluator
        started = time.perf_counter()
        evaluations0, passes0 = ev.evaluations, ev.forward_passes
        layers, bits = ctx.layers, ctx.bits
        index_pairs = layer_pairs(layers, self.pairs, self.window)
        engine = SharedPrefix(ev, layers, ctx.with_fixed({})) if self.reuse_prefix else None
        if engine is not None and engine.enabled:
            base, singles, pair_losses = self._measure_shared(ctx, engine, index_pairs)
        else:
            base, singles, pair_losses = self._measure_plain(ctx, index_pairs)
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
            prefix_reuse={
                "enabled": bool(engine is not None and engine.enabled),
                "reason": "option reuse_prefix=False" if engine is None else engine.reason,
                "skipped_mac_fraction": engine.skipped_fraction if engine is not None else 0.0,
            },
        )
        return Objective(layers=layers, bits=bits, unary=unary, pairs=pairs, info=info)

    def _measure_plain(self, ctx: MeasureContext, index_pairs):
        """Every assignment through ``evaluator.losses``, ``batch_size`` at a time."""
        layers, bits = ctx.layers, ctx.bits
        keys: list = [("base",)]
        assignments = [ctx.with_fixed({})]
        for l, name in enumerate(layers):
            for j, b in enumerate(bits):
                keys.append(("single", l, j))
                assignments.append(ctx.with_fixed({name: b}))
        for l, m in index_pairs:
            for j, b in enumerate(bits):
                for k, b2 in enumerate(bits):
                    keys.append(("pair", l, j, m, k))
                    assignments.append(ctx.with_fixed({layers[l]: b, layers[m]: b2}))
        values: list[float] = []
        chunks = range(0, len(assignments), self.batch_size)
        for start in ctx.progress(chunks, desc="clado: loss evaluations", total=len(chunks)):
            values.extend(ctx.evaluator.losses(assignments[start : start + self.batch_size]))
        singles = np.empty((len(layers), len(bits)))
        pair_losses = {}
        base = values[0]
        for key, value in zip(keys[1:], values[1:]):
            if key[0] == "single":
                singles[key[1], key[2]] = value
            else:
                pair_losses[key[1:]] = value
        return base, singles, pair_losses

    def _measure_shared(self, ctx: MeasureContext, engine: SharedPrefix, index_pairs):
        """Base, then per layer in execution order: its singles, each followed by its pairs."""
        layers, bits = ctx.layers, ctx.bits
        later: dict[int, list[int]] = {l: [] for l in range(len(layers))}
        for l, m in index_pairs:
            first, second = (l, m) if engine.position(layers[l]) <= engine.position(layers[m]) else (m, l)
            later[first].append(second)
        order = sorted(range(len(layers)), key=lambda l: engine.position(layers[l]))
        base, base_outputs = engine.run(ctx.with_fixed({}), keep_for=layers)
        singles = np.empty((len(layers), len(bits)))
        pair_losses: dict[tuple[int, int, int, int], float] = {}
        for e in ctx.progress(order, desc="clado: layers", total=len(order)):
            for j, b in enumerate(bits):
                value, outputs = engine.run(
                    ctx.with_fixed({layers[e]: b}), resume_at=layers[e], source=base_outputs,
                    keep_for=[layers[t] for t in later[e]],
                )  # fmt: skip
                singles[e, j] = value
                for t in later[e]:
                    for k, b2 in enumerate(bits):
                        pair_value, _ = engine.run(
                            ctx.with_fixed({layers[e]: b, layers[t]: b2}), resume_at=layers[t], source=outputs
                        )
                        pair_losses[(e, j, t, k) if e < t else (t, k, e, j)] = pair_value
                del outputs
        return base, singles, pair_losses
