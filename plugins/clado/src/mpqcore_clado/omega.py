"""CLADO's matrix Ω: from measured losses to the quadratic objective and back.

Ω is indexed by (layer, bits) choices, row ``i * B + j`` for ``layers[i]`` at
``bits[j]``. With ``L(S)`` the calibration loss when the choices in ``S`` are quantized:

* ``Ω[(i,b),(i,b)] = L({(i,b)}) - L(∅)``
* ``Ω[(i,b),(j,b')] = ½ (L({(i,b),(j,b')}) - L({(i,b)}) - L({(j,b')}) + L(∅))`` for i ≠ j
* ``Ω[(i,b),(i,b')] = 0`` for b ≠ b' (one-hot: never both chosen).

The predicted loss change of an allocation with one-hot vector alpha is ``alphaᵀ Ω alpha``. A
symmetric Ω counts each off-diagonal interaction twice, so the :class:`~mpqcore.Objective`
holds ``unary = diag Ω`` and ``pairs = Ω_ij + Ω_ji`` (``2 Ω_ij`` when symmetric); then
``objective.value(alloc) == alphaᵀ Ω alpha`` for every allocation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from mpqcore.types import Objective

# No __all__: every function here is public, and the package's __all__ lists them once.


def interaction(pair: float, single_i: float, single_j: float, base: float) -> float:
    """½ (L_ij - L_i - L_j + L_∅): one off-diagonal entry of a symmetric Ω."""
    return 0.5 * ((pair - single_i) - (single_j - base))


def omega_from_losses(
    base: float,
    singles: np.ndarray,
    pairs: Mapping[tuple[int, int, int, int], float],
    *,
    symmetric: bool = True,
) -> np.ndarray:
    """Ω from measured losses.

    ``singles[i, j]`` is ``L({(i, bits[j])})``; ``pairs[(i, j, m, k)]`` (``i < m``) is
    ``L({(i, bits[j]), (m, bits[k])})``. Unmeasured layer pairs get 0. With
    ``symmetric=False`` the interaction is stored whole in the upper triangle
    (``Ω[(i,j),(m,k)] = 2·½(...)`` for i < m, 0 below): the same ``alphaᵀ Ω alpha``.
    """
    singles = np.asarray(singles, dtype=float)
    n_layers, n_bits = singles.shape
    omega = np.zeros((n_layers * n_bits, n_layers * n_bits))
    idx = np.arange(n_layers * n_bits)
    omega[idx, idx] = (singles - base).ravel()
    for (i, j, m, k), value in pairs.items():
        if i == m:
            raise ValueError(f"pair ({i}, {j}, {m}, {k}) pairs a layer with itself")
        if i > m:
            i, j, m, k = m, k, i, j
        half = interaction(value, singles[i, j], singles[m, k], base)
        r, c = i * n_bits + j, m * n_bits + k
        if symmetric:
            omega[r, c] = omega[c, r] = half
        else:
            omega[r, c] = 2.0 * half
    return omega


def objective_terms(
    omega: np.ndarray, layers: Sequence[str], bits: Sequence[int]
) -> tuple[np.ndarray, dict[tuple[str, int, str, int], float]]:
    """``unary`` and ``pairs`` of the objective whose value is ``alphaᵀ Ω alpha``.

    Works for any square Ω (symmetric or not): a pair term is ``Ω_ij + Ω_ji``.
    Entries between two bit-widths of one layer are ignored (a one-hot alpha never selects
    both); zero pair terms are left out.
    """
    n_layers, n_bits = len(layers), len(bits)
    omega = np.asarray(omega, dtype=float)
    if omega.shape != (n_layers * n_bits,) * 2:
        raise ValueError(f"omega has shape {omega.shape}, expected {(n_layers * n_bits,) * 2}")
    unary = np.diag(omega).reshape(n_layers, n_bits).copy()
    both = omega + omega.T
    blocks = both.reshape(n_layers, n_bits, n_layers, n_bits)
    pairs: dict[tuple[str, int, str, int], float] = {}
    for i in range(n_layers):
        for m in range(i + 1, n_layers):
            block = blocks[i, :, m, :]
            rows, cols = np.nonzero(block)
            for j, k in zip(rows.tolist(), cols.tolist(), strict=True):
                pairs[(layers[i], int(bits[j]), layers[m], int(bits[k]))] = float(block[j, k])
    return unary, pairs


def omega_matrix(objective: Objective) -> np.ndarray:
    """The symmetric Ω of an objective: ``diag = unary``, off-diagonal ``pairs / 2``."""
    layers, bits = list(objective.layers), list(objective.bits)
    n_bits = len(bits)
    lpos = {name: i for i, name in enumerate(layers)}
    bpos = {b: j for j, b in enumerate(bits)}
    n = len(layers) * n_bits
    omega = np.zeros((n, n))
    omega[np.arange(n), np.arange(n)] = np.asarray(objective.unary, dtype=float).ravel()
    for (a, ba, c, bc), value in objective.pairs.items():
        r, s = lpos[a] * n_bits + bpos[ba], lpos[c] * n_bits + bpos[bc]
        omega[r, s] += 0.5 * value
        omega[s, r] += 0.5 * value
    return omega


def one_hot(allocation: Mapping[str, int], layers: Sequence[str], bits: Sequence[int]) -> np.ndarray:
    """alpha: one 1 per layer, at the allocated bit-width (layers absent: all zeros)."""
    bpos = {int(b): j for j, b in enumerate(bits)}
    alpha = np.zeros(len(layers) * len(bits))
    for i, name in enumerate(layers):
        if name in allocation:
            alpha[i * len(bits) + bpos[int(allocation[name])]] = 1.0
    return alpha


def quadratic_value(
    omega: np.ndarray, allocation: Mapping[str, int], layers: Sequence[str], bits: Sequence[int]
) -> float:
    """alphaᵀ Ω alpha for an allocation: CLADO's predicted loss change."""
    alpha = one_hot(allocation, layers, bits)
    return float(alpha @ np.asarray(omega) @ alpha)


def project_psd(omega: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """The nearest (Frobenius) positive semidefinite matrix to the symmetric part of Ω.

    Eigen-decompose ``(Ω + Ωᵀ)/2`` and clip its negative eigenvalues to 0, as CLADO's
    optional convexification does. Returns the projected matrix and diagnostics.
    """
    sym = 0.5 * (np.asarray(omega, dtype=float) + np.asarray(omega, dtype=float).T)
    if sym.size == 0:
        return sym, {"min_eigenvalue": 0.0, "negative_eigenvalues": 0, "relative_change": 0.0}
    values, vectors = np.linalg.eigh(sym)
    clipped = np.clip(values, 0.0, None)
    projected = (vectors * clipped) @ vectors.T
    projected = 0.5 * (projected + projected.T)
    norm = float(np.linalg.norm(sym))
    info = {
        "min_eigenvalue": float(values[0]),
        "negative_eigenvalues": int((values < 0).sum()),
        "relative_change": float(np.linalg.norm(projected - sym) / norm) if norm > 0 else 0.0,
    }
    return projected, info
