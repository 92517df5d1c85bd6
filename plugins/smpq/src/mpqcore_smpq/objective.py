"""From Shapley values (and interactions) of bit-width players to a knapsack objective.

A Shapley value is a contribution to the score (higher is better); the objective is a
cost (lower is better), so every term is negated. ``c[l, b0] = 0`` always.

Upgrade players ``(l, b)``, ``b0 < b_1 < ... < b_k``: a layer at ``b_j`` is the model
of the coalition holding its upgrades up to ``b_j``. Two conversions:

- ``cumulative``: ``c[l, b_j] = -sum(phi(l, b_i) for i <= j)``, the plain cumulative
  value. Under the "highest upgrade wins" rule it is biased: ``(l, b_k)`` is credited
  with the whole jump from ``b0`` whenever it arrives before the lower upgrades, so
  the top bit-width looks worth far more than it is.
- ``steps`` (default): undo that split. If the score is a sum over layers of
  ``g_l(bits)``, layer ``l``'s step ``delta_i = g_l(b_i) - g_l(b_{i-1})`` is shared
  equally by the ``k - i + 1`` upgrades that reach it (any of them lifts the layer
  past ``b_{i-1}``), so ``phi_i = sum_{j <= i} delta_j / (k - j + 1)``. This
  triangular system is inverted for ``delta``, and ``c[l, b_j] = -sum_{i<=j} delta_i``
  is exactly ``-(g_l(b_j) - g_l(b0))`` for such games; interactions between layers
  are shared the Shapley way. It needs no extra evaluations.

Layer players (one game per ``b``): ``phi_b(l)`` already values the whole move of
layer ``l`` from ``b0`` to ``b``, so ``c[l, b] = -phi_b(l)``.

With interactions, a Shapley value already holds half of each of its pairwise
interactions; adding the pair terms on top would count them one and a half times. For
a game whose only cross-layer interactions are the measured pairs,
``v(S) - v(empty) = sum_{i in S} a_i + sum_{i<j in S} I_ij`` with
``a_i = phi_i - 1/2 sum_j I_ij``, so the unary terms are built from ``a`` and the
pair term of ``(l, b, l+1, b')`` is ``-sum I`` over the upgrades up to ``b`` and ``b'``.

Standard errors: every term is a linear combination of Shapley values and interaction
estimates. The Shapley part's error is computed from the per-pair permutation samples
of the combination itself (the estimates share permutations, so their covariances
count); the interaction estimates come from separate, independent draws, so their
variances are added to it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np

from mpqcore_smpq.shapley import InteractionEstimate, ShapleyEstimate

__all__ = ["CONVERSIONS", "layer_objective", "neighbour_upgrade_pairs", "step_matrix", "upgrade_objective"]

CONVERSIONS = ("steps", "cumulative")

Tables = tuple[np.ndarray, np.ndarray, dict, dict]


def neighbour_upgrade_pairs(layers: Sequence[str], bits: Sequence[int]) -> list[tuple]:
    """Pairs of upgrade players of consecutive layers ``(l, l+1)`` in forward order."""
    ups = sorted(bits)[1:]
    return [((a, ba), (c, bc)) for a, c in itertools.pairwise(layers) for ba in ups for bc in ups]


def step_matrix(k: int, conversion: str = "steps") -> np.ndarray:
    """``T`` with ``c[l, b_j] = -(T @ phi_l)[j - 1]`` for a layer's ``k`` upgrade values."""
    cumulative = np.tril(np.ones((k, k)))
    if conversion == "cumulative":
        return cumulative
    if conversion != "steps":
        raise ValueError(f"conversion must be one of {CONVERSIONS}, got {conversion!r}")
    share = np.tril(np.ones((k, k))) / (k - np.arange(k))[None, :]  # phi = share @ delta
    return cumulative @ np.linalg.inv(share)


def upgrade_objective(
    layers: Sequence[str],
    bits: Sequence[int],
    phi: ShapleyEstimate,
    interactions: InteractionEstimate | None = None,
    conversion: str = "steps",
) -> Tables:
    """``(unary, stderr, pairs, pair_stderr)`` from upgrade players' Shapley values."""
    bits = sorted(bits)
    ups = bits[1:]
    index = {p: k for k, p in enumerate(phi.players)}
    inter = _interaction_lookup(interactions)
    adjusted = phi.values.astype(float).copy()
    for (p, q), (value, _se) in inter.items():
        adjusted[index[p]] -= 0.5 * value
        adjusted[index[q]] -= 0.5 * value
    T = step_matrix(len(ups), conversion)
    unary = np.zeros((len(layers), len(bits)))
    stderr = np.zeros_like(unary)
    for i, fqn in enumerate(layers):
        cols = [index[(fqn, b)] for b in ups]
        for j in range(len(ups)):
            weights = np.zeros(len(phi.players))
            weights[cols] = T[j]
            variance = phi.stderr_of_combination(weights) ** 2
            for (p, q), (_v, se_pq) in inter.items():  # d c / d I_pq = +1/2 (weights[p] + weights[q])
                variance += (0.5 * (weights[index[p]] + weights[index[q]]) * se_pq) ** 2
            unary[i, j + 1] = -float(weights @ adjusted)
            stderr[i, j + 1] = math.sqrt(variance)
    pairs: dict = {}
    pair_stderr: dict = {}
    for a, c in itertools.pairwise(layers):
        for ja, ba in enumerate(ups):
            for jc, bc in enumerate(ups):
                looked_up = [inter.get(((a, x), (c, y))) for x in ups[: ja + 1] for y in ups[: jc + 1]]
                terms = [t for t in looked_up if t is not None]
                if terms:
                    pairs[(a, ba, c, bc)] = -sum(t[0] for t in terms)
                    pair_stderr[(a, ba, c, bc)] = math.sqrt(sum(t[1] ** 2 for t in terms))
    return unary, stderr, pairs, pair_stderr


def layer_objective(
    layers: Sequence[str],
    bits: Sequence[int],
    phis: Mapping[int, ShapleyEstimate],
    interactions: Mapping[int, InteractionEstimate] | None = None,
) -> Tables:
    """``(unary, stderr, pairs, pair_stderr)`` from the per-bit-width layer games."""
    bits = sorted(bits)
    unary = np.zeros((len(layers), len(bits)))
    stderr = np.zeros_like(unary)
    pairs: dict = {}
    pair_stderr: dict = {}
    for j, b in enumerate(bits[1:], start=1):
        phi = phis[b]
        inter = _interaction_lookup((interactions or {}).get(b))
        for i, fqn in enumerate(layers):
            k = phi.index(fqn)
            value = float(phi.values[k])
            variance = float(phi.stderr[k]) ** 2
            for (p, q), (v_pq, se_pq) in inter.items():
                if fqn in (p, q):
                    value -= 0.5 * v_pq
                    variance += (0.5 * se_pq) ** 2
            unary[i, j] = -value
            stderr[i, j] = math.sqrt(variance)
        for (p, q), (v_pq, se_pq) in inter.items():
            pairs[(p, b, q, b)] = -v_pq
            pair_stderr[(p, b, q, b)] = se_pq
    return unary, stderr, pairs, pair_stderr


def _interaction_lookup(estimate: InteractionEstimate | None) -> dict[tuple, tuple[float, float]]:
    """``{(p, q): (value, stderr)}`` of the pairs measured exactly or from >= 2 samples."""
    if estimate is None:
        return {}
    out = {}
    for pair, value, se, n in zip(estimate.pairs, estimate.values, estimate.stderr, estimate.samples, strict=True):
        if estimate.stopped == "exact" or n >= 2:
            out[tuple(pair)] = (float(value), float(se))
    return out
