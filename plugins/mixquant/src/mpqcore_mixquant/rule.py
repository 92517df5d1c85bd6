"""The QEM rule of MixQuant (Algorithm 1) and the thresholds where its answer changes.

For one layer with errors ``qe[j]`` at ascending bit-widths and ``qe_ref`` at the
reference bit-width, the rule picks the smallest ``j`` with ``qe[j] <= qem * qe_ref``
(the largest bit-width if none qualifies). The set of admissible ``j`` only grows with
``qem``, so the pick never moves up when ``qem`` grows: the rule is monotone in QEM.
It changes only at the thresholds ``t[j]``, the least ``qem >= 1`` for which
``qe[j] <= qem * qe_ref`` holds in floating point, so the smallest QEM that meets a
budget is one of them. An infinite threshold (error > 0 while the reference error is 0)
is never reached: no finite QEM admits that column.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["group_choice", "rule_choice", "thresholds"]


def rule_choice(qe: np.ndarray, ref: np.ndarray, qem: float) -> np.ndarray:
    """Per row of ``qe [L, B]``: the smallest column with ``qe <= qem * ref`` (else the last)."""
    qe = np.asarray(qe, dtype=float)
    ok = qe <= qem * np.asarray(ref, dtype=float)[:, None]
    first = ok.argmax(axis=1)
    return np.where(ok.any(axis=1), first, qe.shape[1] - 1)


def _threshold(q: float, r: float) -> float:
    """The least float ``t >= 1`` with ``q <= t * r`` (``inf`` if none)."""
    if q <= r:
        return 1.0
    if r <= 0:
        return math.inf
    t = max(1.0, q / r)
    while not q <= t * r:
        t = math.nextafter(t, math.inf)
    while t > 1.0 and q <= math.nextafter(t, 0.0) * r:
        t = math.nextafter(t, 0.0)
    return t


def thresholds(qe: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``t[l, j]``: the least QEM at which column ``j`` becomes admissible for row ``l``."""
    qe = np.asarray(qe, dtype=float)
    out = np.empty_like(qe)
    for i in range(qe.shape[0]):
        for j in range(qe.shape[1]):
            out[i, j] = _threshold(float(qe[i, j]), float(ref[i]))
    return out


def group_choice(per_layer: np.ndarray, groups: list[list[int]], allowed: np.ndarray) -> np.ndarray:
    """One bit index per group of tied layers: the largest of its members' rule picks.

    ``allowed[g]`` masks the choices pins leave; a group whose pick is not allowed takes
    the smallest allowed index above it (more bits, less error), else the largest allowed.
    """
    out = np.empty(len(groups), dtype=int)
    for g, members in enumerate(groups):
        want = int(max(per_layer[i] for i in members))
        ok = np.flatnonzero(allowed[g])
        above = ok[ok >= want]
        out[g] = int(above[0]) if above.size else int(ok[-1])
    return out
