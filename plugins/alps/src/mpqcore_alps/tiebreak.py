"""Breaking the metric's ties with the loss.

An accuracy measured on a few hundred examples moves in steps of ``1/N``, so many
layers show a drop of exactly 0 and a knapsack over those drops picks among them at
random. ALPS then adds the calibration-loss increase with a weight ``eps`` small
enough that it only orders what the metric leaves tied::

    value[l, b] = metric_drop[l, b] + eps * (loss_increase[l, b] - min_b' loss_increase[l, b'])
    eps = 0.5 * gap / S

``gap`` is the smallest positive difference between two entries of the metric-drop
table and ``S`` the sum over layers of the spread (max - min) of that layer's loss
increases, so the whole loss term of any allocation moves by at most ``gap / 2``: it
never overturns a metric difference between allocations that differ in one layer.
When every entry is an integer multiple of ``gap`` (accuracy on a fixed set, usually),
summed drops also differ by multiples of ``gap`` and the order is strictly
lexicographic: metric first, loss second; ``info["tie_break_lexicographic"]`` says
whether that check passed. With no positive gap (all metric drops equal) the loss
alone orders the choices (``eps = 1``).

Each layer's loss increases are taken from their row minimum: a constant per layer
changes no choice of a multiple-choice knapsack, and without it a tiny spread ``S``
(a huge ``eps``) times a large common loss level would swamp the metric drops in
floating point (the loss term of every entry now lies in ``[0, gap / 2]``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["is_lattice", "smallest_gap", "tie_break_weight", "tie_broken"]


def smallest_gap(values: np.ndarray, *, rtol: float = 1e-9) -> float:
    """The smallest positive difference between two distinct entries (0 when all equal)."""
    v = np.unique(np.asarray(values, dtype=float).ravel())
    if v.size < 2:
        return 0.0
    diffs = np.diff(v)
    scale = max(1.0, float(np.abs(v).max()))
    diffs = diffs[diffs > rtol * scale]
    return float(diffs.min()) if diffs.size else 0.0


def is_lattice(values: np.ndarray, gap: float, *, tol: float = 1e-6) -> bool:
    """Whether every entry is an integer multiple of ``gap`` (within ``tol`` of a step)."""
    if gap <= 0:
        return True
    k = np.asarray(values, dtype=float) / gap
    return bool(np.all(np.abs(k - np.round(k)) <= tol))


def tie_break_weight(metric_drop: np.ndarray, loss_increase: np.ndarray) -> float:
    """``eps`` of the module docstring."""
    gap = smallest_gap(metric_drop)
    spread = float((loss_increase.max(axis=1) - loss_increase.min(axis=1)).sum()) if loss_increase.size else 0.0
    if gap <= 0:
        return 1.0
    if spread <= 0:
        return 0.0
    return 0.5 * gap / spread


def tie_broken(metric_drop: np.ndarray, loss_increase: np.ndarray, eps: float) -> np.ndarray:
    """``value[l, b]`` of the module docstring: the drop plus the row-shifted, scaled loss."""
    loss = np.asarray(loss_increase, dtype=float)
    shifted = loss - loss.min(axis=1, keepdims=True) if loss.size else loss
    return np.asarray(metric_drop, dtype=float) + eps * shifted
