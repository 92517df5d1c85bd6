"""The semidefinite relaxation of a dense pair objective, and its dual as a certificate.

A one-hot allocation ``x`` (one 1 per group) lifts to ``Y = [1; x] [1; x]^T``, and the
objective ``u.x + sum_{g<h} P[g, x_g, h, x_h]`` is linear in ``Y``: ``<C, Y>``. The
relaxation keeps of ``Y`` only what every lifted allocation has (Shor's relaxation with
RLT and doubly nonnegative rows):

* ``Y >= 0`` semidefinite, ``Y[0, 0] = 1``, ``diag X = x`` (``x`` binary);
* one-hot: ``sum_j x[g, j] = 1``, ``X[(g, j), (g, k)] = 0`` for ``j != k``, and the RLT
  rows ``sum_j X[(g, j), (h, k)] = x[h, k]`` for every other group ``h``;
* ``X >= 0`` entrywise and the budget rows ``w.x <= cap``.

It is solved, to moderate accuracy, by SCS (a first-order conic solver; the ``sdp``
extra). Only the dual slack ``S`` of the semidefinite cone is kept, shifted by its least
eigenvalue so that it is a *certificate* whatever the solver's accuracy: ``q(x) = [1; x]^T S [1; x]``
is ``>= 0`` for every ``x``, so ``f(x) - q(x)`` is a lower bound of the objective that
is again a pair objective (:func:`split_objective`), which the RLT LP and the
branch-and-bound of :mod:`.pairs_bnb` bound much more tightly than ``f`` itself. An
inaccurate ``S`` only weakens the bound; it never makes it wrong.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import numpy as np

__all__ = ["budget_multipliers", "face_certificate", "per_group_bound", "psd_certificate", "split_objective"]

_SQRT2 = math.sqrt(2.0)


def _svec_index(N: int) -> np.ndarray:
    """``idx[i, j]``: the position of ``Y[i, j]`` in SCS's svec (lower triangle, column by column)."""
    idx = np.zeros((N, N), dtype=np.int64)
    pos = 0
    for j in range(N):
        idx[j:, j] = pos + np.arange(N - j)
        pos += N - j
    upper = np.triu_indices(N, 1)
    idx[upper] = idx.T[upper]
    return idx


def psd_certificate(
    unary: np.ndarray,
    P: np.ndarray,
    allowed: np.ndarray,
    weights: np.ndarray,
    caps: np.ndarray,
    *,
    time_limit: float,
    eps: float = 1e-6,
    polish: float = 0.0,
) -> dict[str, Any]:
    """``{S, seconds, status, iterations, value, least_eigenvalue}``: the certificate ``S``
    (``(n + 1) x (n + 1)``, ``n = groups * bits``, index 0 the constant), semidefinite by
    construction, or ``S = None`` when SCS returns no usable dual. ``value`` is SCS's own
    (unproven) dual objective and ``least_eigenvalue`` that of the implied dual slack
    before the shift (its size times ``1 + groups`` is what SCS's inaccuracy costs the
    bound): diagnostics only. ``time_limit`` seconds for SCS, ``eps`` its tolerance,
    ``polish`` seconds for :func:`_polish` after it.

    Disallowed choices are fixed to 0 by their own rows; ``P`` is symmetric and zero
    within groups (:func:`~mpqcore.solvers.pairs_bnb.dense_pairs`)."""
    import scipy.sparse as sp
    import scs

    started = time.perf_counter()
    G, B = unary.shape
    n = G * B
    N = n + 1
    idx = _svec_index(N)
    m = N * (N + 1) // 2
    # Scale of z = svec(Y): off-diagonal entries are sqrt(2) Y_ij.
    coef = np.where(np.eye(N, dtype=bool), 1.0, 1.0 / _SQRT2)  # Y_ij = coef_ij * z[idx_ij]

    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    b: list[np.ndarray] = []
    n_row = 0

    def add(r_local: np.ndarray, i: np.ndarray, j: np.ndarray, v: np.ndarray, rhs: np.ndarray) -> None:
        """Rows ``n_row + r_local`` gain ``v * Y[i, j]``; ``rhs`` one per new row."""
        nonlocal n_row
        rows.append(n_row + r_local)
        cols.append(idx[i, j])
        vals.append(v * coef[i, j])
        b.append(rhs)
        n_row += len(rhs)

    xi = 1 + np.arange(n).reshape(G, B)  # the index of x[g, j] in Y
    flat = xi.ravel()
    zero_rows = 0
    # Y00 = 1
    add(np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64), np.ones(1), np.ones(1))
    # diag X - x = 0
    r = np.arange(n)
    add(
        np.concatenate([r, r]),
        np.concatenate([flat, flat]),
        np.concatenate([flat, np.zeros(n, dtype=np.int64)]),
        np.concatenate([np.ones(n), -np.ones(n)]),
        np.zeros(n),
    )
    # one-hot sums
    add(np.repeat(np.arange(G), B), np.zeros(n, dtype=np.int64), flat, np.ones(n), np.ones(G))
    # disallowed choices: x = 0
    off = np.nonzero(~allowed.ravel())[0]
    if len(off):
        add(np.arange(len(off)), np.zeros(len(off), dtype=np.int64), flat[off], np.ones(len(off)), np.zeros(len(off)))
    # within a group, X[(g, j), (g, k)] = 0
    jj, kk = np.triu_indices(B, 1)
    wi = xi[:, jj].ravel()
    wk = xi[:, kk].ravel()
    add(np.arange(len(wi)), wi, wk, np.ones(len(wi)), np.zeros(len(wi)))
    # RLT: for every group g and every (h, k) with h != g: sum_j X[(g, j), (h, k)] - x[h, k] = 0
    g_idx, h_idx = np.nonzero(~np.eye(G, dtype=bool))
    n_rlt = len(g_idx) * B
    rr = np.arange(n_rlt).reshape(len(g_idx), B)  # row per (g, h, k)
    rj = np.repeat(rr[:, :, None], B, axis=2)  # (pairs, k, j)
    ii = np.broadcast_to(xi[g_idx][:, None, :], (len(g_idx), B, B))  # (g, j)
    kk2 = np.broadcast_to(xi[h_idx][:, :, None], (len(g_idx), B, B))  # (h, k)
    add(
        np.concatenate([rj.ravel(), rr.ravel()]),
        np.concatenate([ii.ravel(), np.zeros(n_rlt, dtype=np.int64)]),
        np.concatenate([kk2.ravel(), xi[h_idx].ravel()]),
        np.concatenate([np.ones(rj.size), -np.ones(n_rlt)]),
        np.zeros(n_rlt),
    )
    zero_rows = n_row
    # Nonnegative rows (s = b - A z >= 0). Budgets: w.x <= cap.
    nb = len(caps)
    scale = np.array([max(float(np.abs(w).max()), 1e-300) for w in weights])
    ws = weights.reshape(nb, n) / scale[:, None]
    cs = caps / scale
    for t in range(nb):
        add(np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64), flat, ws[t], cs[t : t + 1])
    # X_ij >= 0 across groups: -X_ij <= 0.
    ci, cj = np.triu_indices(n, 1)
    cross = (ci // B) != (cj // B)
    ci, cj = flat[ci[cross]], flat[cj[cross]]
    add(np.arange(len(ci)), ci, cj, -np.ones(len(ci)), np.zeros(len(ci)))
    lin_rows = n_row - zero_rows
    # The semidefinite cone: s = z (A = -I, b = 0).
    rows.append(n_row + np.arange(m))
    cols.append(np.arange(m))
    vals.append(-np.ones(m))
    b.append(np.zeros(m))
    psd_rows = slice(n_row, n_row + m)
    n_row += m
    A = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_row, m))
    A.sum_duplicates()
    bvec = np.concatenate(b)
    # Objective <C, Y>: u_i Y_0i + P_ij Y_ij over i < j (P symmetric, so each pair once).
    obj_scale = max(float(np.abs(np.where(allowed, unary, 0.0)).max()), float(np.abs(P).max()), 1e-300)
    c = np.zeros(m)
    u = np.where(allowed, unary, 0.0).ravel() / obj_scale
    c[idx[0, flat]] += u / _SQRT2
    M = P.reshape(n, n) / obj_scale
    pi, pj = np.triu_indices(n, 1)
    c[idx[flat[pi], flat[pj]]] += M[pi, pj] / _SQRT2
    remaining = time_limit - (time.perf_counter() - started)
    out: dict[str, Any] = {
        "S": None,
        "status": "not run",
        "iterations": 0,
        "value": -math.inf,
        "least_eigenvalue": None,
    }
    if remaining <= 0:
        out["seconds"] = time.perf_counter() - started
        return out
    solver = scs.SCS(
        {"A": A, "b": bvec, "c": c},
        {"z": zero_rows, "l": lin_rows, "s": [N]},
        verbose=False,
        eps_abs=eps,
        eps_rel=eps,
        max_iters=100_000,
        time_limit_secs=remaining,
    )
    sol = solver.solve()
    info = sol["info"]
    out.update(status=str(info["status"]), iterations=int(info["iter"]), value=float(info["dobj"]) * obj_scale)
    y = np.asarray(sol["y"])
    if y.shape[0] == n_row and np.all(np.isfinite(y)):
        # The dual slack the other rows' multipliers imply (SCS's own PSD block carries its
        # residual): with it, f(x) - q(x) is the multipliers' affine function exactly.
        yr = y[: psd_rows.start].copy()
        if polish > 0:
            yr = _polish(A[: psd_rows.start], bvec[: psd_rows.start], c, yr, zero_rows, idx, coef, G + 1.0, polish, out)
        z = c + A[: psd_rows.start].T @ yr
        S = z[idx] * coef
        least = float(np.linalg.eigvalsh(S)[0])
        # Shift by the least eigenvalue: <I, Y> = 1 + groups on every lifted allocation, so the
        # shift only moves a constant into f - q, and S becomes semidefinite.
        S -= min(0.0, least * (1 + 1e-9) - 1e-15) * np.eye(N)
        out.update(S=S * obj_scale, least_eigenvalue=least * obj_scale)
    out["seconds"] = time.perf_counter() - started
    return out


def split_objective(unary: np.ndarray, P: np.ndarray, S: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """``(const, unary_r, P_r)`` with ``f(x) = q(x) + const + unary_r.x + sum_{g<h} P_r[g, x_g, h, x_h]``
    on every one-hot ``x``, where ``q(x) = [1; x]^T S [1; x]``: the objective less the certificate."""
    G, B = unary.shape
    s0, s, Sx = S[0, 0], S[0, 1:], S[1:, 1:]
    unary_r = unary - (2 * s + np.diag(Sx)).reshape(G, B)
    P_r = P - 2 * Sx.reshape(G, B, G, B)
    P_r[np.arange(G), :, np.arange(G), :] = 0.0  # x[g, j] x[g, k] = 0 for j != k; the diagonal is in unary_r
    return -float(s0), unary_r, P_r


def _polish(A, b, c, y, zero_rows, idx, coef, trace, seconds, out):
    """SCS's multipliers ``y`` improved for ``seconds`` by L-BFGS-B on
    ``-b.y + trace * lambda_min(smat(c + A^T y))``: the bound every ``y`` with nonnegative
    inequality multipliers proves (``<I, Y> = trace`` on every lifted allocation). SCS's
    own ``y`` leaves the dual slack's least eigenvalue around ``-3e-4`` on the measured
    52-layer problem, which costs ``trace`` times that; the polish is what makes the
    certificate tight (docs/solvers.md). ``out["polished"]`` gets the bound reached (scaled)."""
    from scipy.optimize import Bounds, minimize

    AT = A.T.tocsr()
    m = len(c)
    deadline = time.perf_counter() + seconds
    best = {"v": -math.inf, "y": y}

    def fun(yy):
        S = (c + AT @ yy)[idx] * coef
        w, V = np.linalg.eigh(S)
        val = -b @ yy + trace * w[0]
        if val > best["v"]:
            best["v"], best["y"] = val, yy.copy()
        if time.perf_counter() > deadline:
            raise StopIteration
        v = V[:, 0]
        gz = np.bincount(idx.ravel(), weights=(np.outer(v, v) * coef).ravel(), minlength=m)
        return -val, -(-b + trace * (A @ gz))

    lo = np.concatenate([np.full(zero_rows, -np.inf), np.zeros(len(y) - zero_rows)])
    y0 = np.concatenate([y[:zero_rows], np.maximum(y[zero_rows:], 0.0)])
    with contextlib.suppress(StopIteration):  # the deadline: best["y"] is kept
        minimize(
            fun,
            y0,
            jac=True,
            method="L-BFGS-B",
            bounds=Bounds(lo, np.full(len(y), np.inf)),
            options={"maxiter": 10**6, "maxfun": 10**6, "gtol": 1e-10, "ftol": 1e-13, "maxcor": 20},
        )
    out["polished"] = best["v"]
    return best["y"]


def face_certificate(
    unary: np.ndarray,
    P: np.ndarray,
    allowed: np.ndarray,
    weights: np.ndarray,
    caps: np.ndarray,
    *,
    time_limit: float,
    beta: float = 0.03,
    max_iterations: int = 100_000,
    check_every: int = 200,
    stall_checks: int = 5,
    stop_gap: float = 1e-4,
    triangles: int = 0,
    cut_step: float = 1e-3,
) -> dict[str, Any]:
    """The same relaxation solved on its face by ADMM, without a conic solver.

    Every lifted allocation satisfies ``K [1; x] = 0`` (``K``: the one-hot rows ``sum_j x[g, j]
    = 1`` and ``x = 0`` on disallowed choices), so ``Y = V R V^T`` with ``V`` an orthonormal
    basis of ``K``'s null space (``1 + groups * (bits - 1)`` columns) and ``R >= 0``: the RLT
    rows hold on that face by construction. What is left is the box ``0 <= Y <= 1``,
    ``Y[0, 0] = 1``, ``diag X = x``, zero within groups and the budget rows (a set with an
    easy projection): ADMM alternates a projection onto the semidefinite cone (one
    eigendecomposition of the ``V^T (.) V`` matrix) and one onto that set, with multiplier
    ``Z`` for ``Y = V R V^T`` (Oliveira, Wolkowicz and Xu's scheme for the QAP).

    Any ``Z`` is a certificate: with ``W = -V^T Z V`` and ``mu`` its least eigenvalue,
    ``q(x) = [1; x]^T V (W - mu I) V^T [1; x] >= 0`` for every ``x`` (semidefinite), and on
    every lifted allocation (``||V^T [1; x]||^2 = 1 + groups``) ``f(x) - q(x) = <L + Z, Y> +
    mu (1 + groups)``, a pair objective whose coefficients are those of ``L + Z`` (the
    objective's matrix plus the multiplier), which the search bounds per group
    (:func:`per_group_bound`). Every ``check_every`` steps that bound is computed and the best
    ``Z`` kept; ADMM stops when the last ``stall_checks`` checks raised it by less than
    ``stop_gap`` of its size, after ``time_limit`` seconds, or after ``max_iterations`` steps.

    ``triangles > 0`` strengthens the relaxation with up to that many triangle inequalities of
    ``Y`` (:class:`_CutPool`: the most violated ones, separated at every check), dualized: their
    multipliers ``lam_t >= 0`` take a step of ``cut_step * beta`` times their violation at every
    ADMM step (halved whenever the residual grows by half between checks) and add ``lam_t
    (<A_t, Y> - rhs_t) <= 0`` to the objective, so ``f >= q + it`` (no longer equal) and the bound
    stays proven at any iteration. On the 72-layer x 3-width dense problem the relaxation's
    optimum violates 89,000 of them (up to 0.09).

    Returns ``{S, const, unary, P, lam, bound, seconds, iterations, residual, cuts}``: ``S`` the
    certificate (``(n + 1) x (n + 1)``, semidefinite), ``const + unary.x + sum_{g<h} P[g, x_g,
    h, x_h]`` that pair objective (``f = q + it`` on every allocation when ``cuts`` is 0, ``f >=
    q + it`` otherwise), ``lam`` its budget multipliers and ``bound`` its per-group bound (a
    proven lower bound of ``f``), ``cuts`` the triangle
    inequalities in the pool at the end. ``beta``: the penalty on the scaled objective (largest entry 1)."""
    started = time.perf_counter()
    G, B = unary.shape
    n = G * B
    N = n + 1
    trace = 1.0 + G
    K = np.zeros((G, N))
    K[:, 0] = -1.0
    K[np.repeat(np.arange(G), B), 1 + np.arange(n)] = 1.0
    off = np.nonzero(~allowed.ravel())[0]
    if len(off):
        E = np.zeros((len(off), N))
        E[np.arange(len(off)), 1 + off] = 1.0
        K = np.vstack([K, E])
    _, sing, Vt = np.linalg.svd(K)  # the null space: the right singular vectors past K's rank
    rank = int((sing > 1e-10 * sing[0]).sum())
    V = Vt[rank:].T  # (N, N - rank), orthonormal columns
    u = np.where(allowed, unary, 0.0).ravel()
    scale = max(float(np.abs(u).max()), float(np.abs(P).max()), 1e-300)
    L = np.zeros((N, N))
    L[0, 1:] = L[1:, 0] = u / (2 * scale)
    L[1:, 1:] = P.reshape(n, n) / (2 * scale)
    group = np.arange(n) // B
    fixed_zero = np.zeros((N, N), dtype=bool)
    fixed_zero[1:, 1:] = (group[:, None] == group[None, :]) & ~np.eye(n, dtype=bool)
    fixed_zero[1 + off, :] = fixed_zero[:, 1 + off] = True
    d = np.arange(1, N)
    wscale = np.array([max(float(np.abs(w).max()), 1e-300) for w in weights])
    ws = weights.reshape(len(caps), n) / wscale[:, None]
    cs = caps / wscale

    def project(M: np.ndarray) -> np.ndarray:
        Y = np.clip(M, 0.0, 1.0)
        Y[fixed_zero] = 0.0
        a = _box_budget_projection((M[0, 1:] + M[1:, 0] + M[d, d]) / 3, ws, cs)
        a[off] = 0.0
        Y[0, 1:] = Y[1:, 0] = Y[d, d] = a
        Y[0, 0] = 1.0
        return Y

    pool = _CutPool(N, group, max_cuts=triangles)

    def certificate(Z: np.ndarray, residual: float) -> dict[str, Any]:
        Z = (Z + Z.T) / 2
        W = -V.T @ Z @ V
        W = (W + W.T) / 2
        mu = float(np.linalg.eigvalsh(W)[0])
        # A margin on the shift so that rounding in S = V W' V^T cannot make q negative.
        mu -= 1e-12 * max(1.0, float(np.abs(W).max())) * W.shape[0]
        C = (L + pool.matrix() + Z) * scale
        unary_r = np.where(allowed, (2 * C[0, 1:] + C[d, d]).reshape(G, B), np.inf)
        P_r = 2 * C[1:, 1:].reshape(G, B, G, B)
        P_r[np.arange(G), :, np.arange(G), :] = 0.0  # x[g, j] x[g, k] = 0 for j != k
        const = float(C[0, 0] + (mu * trace - pool.offset()) * scale)
        lam = budget_multipliers(unary_r, P_r, allowed, weights, caps)
        return {
            "W": W,
            "mu": mu,
            "const": const,
            "unary": unary_r,
            "P": P_r,
            "lam": lam,
            "bound": const + per_group_bound(unary_r, P_r, allowed, weights, caps, lam),
            "residual": residual,
        }

    Y = project(np.eye(N) / B)
    Z = np.zeros((N, N))
    gamma = 1.6  # the dual step, in (1, golden ratio): faster than 1 and still convergent
    best: dict[str, Any] = certificate(Z, math.inf)
    history: list[float] = []
    iterations = 0
    step, last_residual = cut_step, math.inf
    while iterations < max_iterations and time.perf_counter() - started < time_limit:
        ev, Q = np.linalg.eigh(V.T @ (Y + Z / beta) @ V)
        keep = ev > 0
        VRV = V @ ((Q[:, keep] * ev[keep]) @ Q[:, keep].T) @ V.T
        Y = project(VRV - (L + pool.matrix() + Z) / beta)
        diff = Y - VRV
        Z += gamma * beta * diff
        pool.step(Y, step * beta)
        iterations += 1
        if iterations % check_every == 0:
            now = certificate(Z, float(np.linalg.norm(diff)))
            if triangles:
                # The cut multipliers' step halves whenever ADMM's residual grows (they move too fast).
                if now["residual"] > 1.5 * last_residual:
                    step /= 2
                last_residual = now["residual"]
                pool.separate(Y)
            if now["bound"] > best["bound"]:
                best = now
            history.append(best["bound"])
            # Stalled: the last ``stall_checks`` checks gained less than stop_gap of the bound.
            if len(history) > stall_checks and history[-1] - history[-1 - stall_checks] <= stop_gap * abs(history[-1]):
                break
    W, mu = best["W"], best["mu"]
    S = V @ (W - mu * np.eye(W.shape[0])) @ V.T
    S = (S + S.T) / 2 * scale
    out = {k: best[k] for k in ("const", "unary", "P", "lam", "bound", "residual")}
    out.update(S=S, seconds=time.perf_counter() - started, iterations=iterations, cuts=len(pool.lam))
    return out


def _box_halfspace_projection(v: np.ndarray, w: np.ndarray, c: float) -> np.ndarray:
    """The nearest point to ``v`` in ``[0, 1]^n`` with ``w.a <= c``: ``clip(v - t w, 0, 1)`` for the
    least multiplier ``t >= 0`` that meets the row (the limit ``t -> inf`` when none does).

    ``g(t) = w . clip(v - t w, 0, 1)`` is continuous, piecewise linear and non-increasing, with knots
    where an entry reaches 0 or 1: one sort of the (at most ``2n``) knots and cumulative sums of the
    changes of its value and slope give ``g`` at every knot, and it is solved on the segment where it
    crosses ``c``. Exact, and a few array operations where bisection took 60: ADMM projects once a
    step, and that bisection was over half of the certificate's time."""
    a = np.clip(v, 0.0, 1.0)
    g0 = float(w @ a)
    if g0 <= c or not np.any(w > 0):
        return a
    moving = w != 0
    wm, vm = w[moving], v[moving]
    at_one, at_zero = (vm - 1.0) / wm, vm / wm
    enter, leave = np.minimum(at_one, at_zero), np.maximum(at_one, at_zero)  # the entry is linear in between
    before = np.where(wm > 0, wm, 0.0)  # w * a before the entry moves (a = 1 where w > 0, else 0), and after
    after = np.where(wm > 0, 0.0, wm)
    # g = const + slope * t between knots: its value at 0, and its changes where an entry starts or stops moving
    waiting, ahead = enter > 0, leave > 0  # not moving yet at 0; not saturated yet at 0
    moving_now = ahead & ~waiting
    const0 = float(before[waiting].sum() + (wm * vm)[moving_now].sum() + after[~ahead].sum())
    slope0 = float(-(wm[moving_now] ** 2).sum())
    t = np.concatenate((enter[waiting], leave[ahead]))
    d_const = np.concatenate(((wm * vm - before)[waiting], (after - wm * vm)[ahead]))
    d_slope = np.concatenate((-(wm[waiting] ** 2), wm[ahead] ** 2))
    if t.size == 0:
        return a
    order = np.argsort(t, kind="stable")
    t = t[order]
    g = const0 + np.cumsum(d_const[order]) + (slope0 + np.cumsum(d_slope[order])) * t  # g at each knot
    below = g <= c
    if not below.any():
        return np.clip(v - t[-1] * w, 0.0, 1.0)  # every moving entry saturated: the limit
    k = int(np.argmax(below))
    lo, g_lo = (0.0, g0) if k == 0 else (float(t[k - 1]), float(g[k - 1]))
    hi, g_hi = float(t[k]), float(g[k])
    x = hi if g_lo == g_hi else lo + (g_lo - c) / (g_lo - g_hi) * (hi - lo)
    return np.clip(v - min(max(x, lo), hi) * w, 0.0, 1.0)


def _box_budget_projection(m: np.ndarray, ws: np.ndarray, cs: np.ndarray, rounds: int = 30) -> np.ndarray:
    """The nearest point to ``m`` in ``[0, 1]^n`` with ``ws[t].a <= cs[t]`` for every budget row
    ``t``: exact for one row (:func:`_box_halfspace_projection`), Dykstra's alternation over the rows for
    several (``rounds`` of it; an approximate projection only slows ADMM, the certificate stays valid)."""
    if len(cs) == 1:
        return _box_halfspace_projection(m, ws[0], float(cs[0]))
    a = np.clip(m, 0.0, 1.0)
    corr = np.zeros((len(cs), len(m)))
    for _ in range(rounds):
        for t in range(len(cs)):
            v = a + corr[t]
            a = _box_halfspace_projection(v, ws[t], float(cs[t]))
            corr[t] = v - a
    return a


def per_group_bound(unary, P, allowed, weights, caps, lam) -> float:
    """The search's root bound of a pair objective: per group the least over its choices of the
    unary term, ``lam`` times the budget terms, and per later group the least pair entry, less
    ``lam . caps`` (Lagrangian relaxation of the budgets); ``-inf`` when a group has no choice."""
    G = unary.shape[0]
    later = np.triu(np.ones((G, G), dtype=bool), 1)
    ahead = np.where(later[:, None, :], np.where(allowed[None, None], P, np.inf).min(axis=3), 0.0).sum(axis=2)
    pen = np.einsum("b,bgj->gj", lam, weights)
    return float(np.where(allowed, unary + ahead + pen, np.inf).min(axis=1).sum() - lam @ caps)


def budget_multipliers(unary, P, allowed, weights, caps, rounds: int = 3, steps: int = 60) -> np.ndarray:
    """Budget multipliers ``lam >= 0`` that make :func:`per_group_bound` large: it is concave in
    ``lam``, so a ternary search per budget (coordinate ascent, ``rounds`` passes) finds them."""
    lam = np.zeros(len(caps))

    def at(t: int, value: float) -> float:
        trial = lam.copy()
        trial[t] = value
        return per_group_bound(unary, P, allowed, weights, caps, trial)

    for _ in range(rounds if len(caps) > 1 else 1):
        for t in range(len(caps)):
            wmax = float(np.abs(weights[t]).max())
            if wmax == 0.0:
                continue
            # The bound falls once lam[t] moves every group to its lightest choice: bracket past that.
            spread = np.where(allowed, unary, np.nan)
            hi = 2.0 * float(np.nanmax(spread) - np.nanmin(spread) + np.abs(P).max() * unary.shape[0]) / wmax
            hi = max(hi, 1e-300)
            while at(t, 2 * hi) > at(t, hi) and hi < 1e300:
                hi *= 2
            lo, up = 0.0, 2 * hi
            for _ in range(steps):
                m1, m2 = lo + (up - lo) / 3, up - (up - lo) / 3
                if at(t, m1) < at(t, m2):
                    lo = m1
                else:
                    up = m2
            best = (lo + up) / 2
            lam[t] = best if at(t, best) > at(t, 0.0) else 0.0
    return lam


class _CutPool:
    """Triangle inequalities of the lifted matrix, dualized: ``lam >= 0`` per cut.

    Every lifted allocation ``Y = y y^T`` (``y = [1; x]`` binary) satisfies, for indices
    ``a, b, c`` of three different groups (index 0, the constant, its own group),
    ``Y_ab + Y_ac - Y_bc <= Y_aa`` (apex ``a``) and ``Y_aa + Y_bb + Y_cc - Y_ab - Y_ac - Y_bc <= 1``
    (with ``a = 0`` the first is ``x_b + x_c - X_bc <= 1``). As ``<A_t, Y> <= rhs_t``,
    ``f(x) >= <L + sum_t lam_t A_t, Y> - lam.rhs`` on every allocation whatever ``lam >= 0``, so
    the certificate built from ``L`` plus :meth:`matrix` and less :meth:`offset` stays a proven
    bound at any iteration; :meth:`step` moves ``lam`` by the cuts' violations (Uzawa),
    :meth:`separate` adds the most violated ones and drops slack cuts with ``lam = 0``."""

    def __init__(self, N: int, group: np.ndarray, max_cuts: int, per_round: int = 2000, tol: float = 1e-4):
        self.N = N
        self.group = np.concatenate([[-1], group])
        self.max_cuts = max_cuts
        self.per_round = per_round
        self.tol = tol
        self.r = np.zeros((0, 6), dtype=np.int64)
        self.c = np.zeros((0, 6), dtype=np.int64)
        self.v = np.zeros((0, 6))
        self.rhs = np.zeros(0)
        self.lam = np.zeros(0)
        self.keys = np.zeros(0, dtype=np.int64)
        self._matrix: np.ndarray = np.zeros((N, N))

    def matrix(self) -> np.ndarray:
        """``sum_t lam_t A_t`` (symmetric)."""
        return self._matrix

    def offset(self) -> float:
        return float(self.lam @ self.rhs)

    def _rebuild(self) -> None:
        N = self.N
        w = (self.lam[:, None] * self.v / 2).ravel()
        half = np.bincount((self.r * N + self.c).ravel(), weights=w, minlength=N * N).reshape(N, N)
        self._matrix = half + half.T

    def values(self, Y: np.ndarray) -> np.ndarray:
        """``<A_t, Y> - rhs_t``: positive where ``Y`` violates cut ``t``."""
        return (self.v * Y[self.r, self.c]).sum(axis=1) - self.rhs

    def step(self, Y: np.ndarray, size: float) -> None:
        if len(self.lam):
            self.lam = np.maximum(0.0, self.lam + size * self.values(Y))
            self._rebuild()

    def separate(self, Y: np.ndarray) -> None:
        N, grp = self.N, self.group
        D = np.diag(Y).copy()
        distinct = grp[:, None] != grp[None, :]
        upper = np.triu(np.ones((N, N), dtype=bool), 1) & distinct
        found_v: list[np.ndarray] = []
        found_k: list[np.ndarray] = []
        for a in range(N):
            ok = upper & (grp[a] != grp)[:, None] & (grp[a] != grp)[None, :]
            apex = Y[a][:, None] + Y[a][None, :] - Y - D[a]
            tri = D[a] + D[:, None] + D[None, :] - Y[a][:, None] - Y[a][None, :] - Y - 1.0
            for t, viol, mask in ((0, apex, ok), (1, tri, ok & (np.arange(N) > a)[:, None])):
                b, c = np.nonzero(mask & (viol > self.tol))
                if len(b) > self.per_round:
                    top = np.argpartition(-viol[b, c], self.per_round)[: self.per_round]
                    b, c = b[top], c[top]
                found_v.append(viol[b, c])
                found_k.append(((t * N + a) * N + b) * N + c)
        viol = np.concatenate(found_v)
        keys = np.concatenate(found_k)
        fresh = ~np.isin(keys, self.keys)
        viol, keys = viol[fresh], keys[fresh]
        keep_old = (self.lam > 0) | (self.values(Y) > -self.tol)
        room = max(0, self.max_cuts - int(keep_old.sum()))
        order = np.argsort(-viol)[: min(room, self.per_round)]
        keys = keys[order]
        kind, rest = np.divmod(keys, N**3)
        ia, rest = np.divmod(rest, N * N)
        ib, ic = np.divmod(rest, N)
        z = np.zeros_like(ia)
        r_apex = np.stack([ia, ia, ib, ia, z, z], axis=1)
        c_apex = np.stack([ib, ic, ic, ia, z, z], axis=1)
        v_apex = np.array([1.0, 1.0, -1.0, -1.0, 0.0, 0.0])
        r_tri = np.stack([ia, ib, ic, ia, ia, ib], axis=1)
        c_tri = np.stack([ia, ib, ic, ib, ic, ic], axis=1)
        v_tri = np.array([1.0, 1.0, 1.0, -1.0, -1.0, -1.0])
        is_tri = (kind == 1)[:, None]
        self.r = np.concatenate([self.r[keep_old], np.where(is_tri, r_tri, r_apex)])
        self.c = np.concatenate([self.c[keep_old], np.where(is_tri, c_tri, c_apex)])
        self.v = np.concatenate([self.v[keep_old], np.where(is_tri, v_tri, v_apex)])
        self.rhs = np.concatenate([self.rhs[keep_old], (kind == 1).astype(float)])
        self.lam = np.concatenate([self.lam[keep_old], np.zeros(len(keys))])
        self.keys = np.concatenate([self.keys[keep_old], keys])
        self._rebuild()
