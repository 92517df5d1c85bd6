"""The ``pairs-bnb`` solver: dense pair objectives by branch-and-bound over the layer groups.

A pair objective (CLADO's ``sum u[g, x_g] + sum_{g<h} P[g, x_g, h, x_h]``) under budgets
is a quadratic semi-assignment problem with knapsack rows. This solver:

1. **Reparametrizes** the objective with the duals of its LP relaxation (the one-hot
   RLT linearization ``highs`` uses, solved once as an LP on HiGHS): a pair block
   ``P[g, :, h, :]`` gives ``a[j] + b[k]`` to the unary terms of ``g`` and ``h``. Every
   allocation keeps its objective exactly, but pair blocks become nonnegative where the
   LP is tight, which is what makes the bound below strong. The budget rows' duals are
   the Lagrange multipliers ``lam``. Any multipliers give a valid bound; the LP's are
   the best of this kind at the root (a stopped LP still gives valid, weaker ones).
2. **Branches** on the groups in a fixed order (strongest interactions first) and bounds
   a partial allocation by what is fixed, plus, per free group ``h``, the least over its
   choices ``k`` of: its unary term, what the fixed groups add to it, and for each later
   free group the least pair entry ``min_k' P[h, k, h', k']`` (every pair counted once,
   at the earlier group), plus ``lam`` times the budget terms (Lagrangian relaxation,
   several ``lam`` tried, the largest bound kept). A partial allocation whose bound
   reaches the incumbent, or that cannot meet a budget with the cheapest choices left,
   is dropped.
3. Searches **depth-first in batches**: a few thousand partial allocations of one depth
   are bounded together in numpy, their children sorted so the most promising batch is
   searched first (a first allocation is found in one dive); every improved allocation
   is polished by 1-swaps.

With ``sdp=True`` a search bounded this way runs for ``lp_share`` of the time; if it
does not finish, the semidefinite relaxation's certificate ``q`` (:mod:`.sdp_bound`)
splits the objective into ``q >= 0`` and a pair objective ``f - q`` that the same LP
bounds far more tightly, and a second search from the root (the incumbent kept) takes
the larger of two bounds per partial allocation (:class:`Bounding`).

``time_limit`` covers everything (LP, certificate, search): the incumbent comes back with status
``time_limit`` and the least bound of the partial allocations still open, a proven lower
bound. Memory: the pair tensor is dense, ``(groups * bits)**2`` floats (1.9 MB at 52
layers x 3 widths); ``max_entries`` refuses larger ones with a :class:`ConfigError`
before building them. A separable objective goes to ``mckp``.
"""

from __future__ import annotations

import math
import time
from typing import Any

import attrs
import numpy as np

from mpqcore.constraints import budget_slack, within_budget
from mpqcore.errors import ConfigError, MpqError
from mpqcore.options import option
from mpqcore.problem import ReducedProblem, raise_jointly_infeasible
from mpqcore.solvers._common import effective_terms, local_search, make_allocation, prepare, relative_gap
from mpqcore.types import Allocation, Problem

__all__ = ["PairsBnBSolver", "dense_pairs", "is_dense", "rlt_reparametrization"]

#: Bounds within this fraction of the objective's scale of the incumbent prune: the
#: reparametrized sums differ from the plain ones by rounding (about 1e-16 per term).
_BOUND_RTOL = 1e-10

#: The multipliers tried per partial allocation, as multiples of the LP's budget duals.
_LAMBDA_FACTORS = (1.0, 0.0)


#: How ``sdp=True`` solves the semidefinite relaxation (:mod:`.sdp_bound`): ADMM on its face
#: (:func:`~.sdp_bound.face_certificate`), or SCS and a polish (:func:`~.sdp_bound.psd_certificate`).
CERTIFICATES = ("admm", "scs")

#: The largest dense pair tensor, ``(groups * bits)**2`` floats, the solver builds by default (200 MB).
MAX_ENTRIES = 25_000_000


def is_dense(problem: Problem) -> bool:
    """Pair terms couple at least half of the pairs of layers, and the dense tensor of
    ``(layers * bits)**2`` floats stays within :data:`MAX_ENTRIES`: what ``auto`` sends here."""
    L = len(problem.layers)
    if L < 2 or (L * len(problem.bits)) ** 2 > MAX_ENTRIES:
        return False
    coupled = {(a, c) if a < c else (c, a) for (a, _, c, _) in problem.objective.pairs if a != c}
    return 2 * len(coupled) >= L * (L - 1) // 2


@attrs.frozen
class PairsBnBSolver:
    """Exact solver for pair objectives: LP reparametrization, then batched branch-and-bound;
    with ``sdp`` the semidefinite certificate too (``lp_share``, ``sdp_share`` of the time).

    Any number of budgets, pins and ties. ``time_limit`` seconds for everything (an
    unproven incumbent comes back with status ``time_limit``, its proven bound and gap);
    ``batch`` partial allocations are bounded together; ``max_entries`` caps the dense
    pair tensor (``(groups * bits)**2``). Separable objectives are handed to ``mckp``.
    """

    name = "pairs-bnb"

    time_limit: float = option(float, default=60.0, greater_than=0.0, help="seconds before the incumbent is returned")
    batch: int = option(int, default=2048, minimum=1, help="partial allocations bounded together")
    max_entries: int = option(
        int, default=MAX_ENTRIES, minimum=1, help="largest dense pair tensor, (groups * bits)**2 floats"
    )
    sdp: bool = option(bool, default=False, help="bound with the semidefinite relaxation's certificate too")
    certificate: str = option(
        str,
        default="admm",
        choices=CERTIFICATES,
        help="with sdp: how the relaxation is solved: 'admm' on its face (numpy), or 'scs' (the sdp extra)",
    )
    lp_share: float = option(
        float,
        default=0.1,
        minimum=0.0,
        less_than=1.0,
        help="with sdp: fraction of the time the LP-bounded search gets first (problems it proves skip SCS)",
    )
    triangles: int = option(
        int,
        default=20_000,
        minimum=0,
        help="with sdp and certificate='admm': most triangle inequalities dualized in ADMM (0: none)",
    )
    sdp_share: float = option(
        float,
        default=0.3,
        greater_than=0.0,
        less_than=1.0,
        help="with sdp: fraction of the time left after that for the certificate (SCS, then polishing)",
    )

    def solve(self, problem: Problem) -> Allocation:
        if self.sdp and self.certificate == "scs":
            try:
                import scs  # noqa: F401
            except ImportError:
                raise ConfigError(
                    "solver 'pairs-bnb' with certificate='scs' needs the scs package: pip install 'mpq[sdp]', "
                    "or use certificate='admm' (numpy only)"
                ) from None
        started = time.perf_counter()
        deadline = started + self.time_limit
        reduced = prepare(problem)
        unary, pairs = effective_terms(reduced)
        if not pairs:
            from mpqcore.solvers.mckp import MCKPSolver

            out = MCKPSolver(time_limit=max(1e-3, deadline - time.perf_counter())).solve(problem)
            return attrs.evolve(out, solver=self.name, info={**out.info, "handed_to": "mckp"})
        G, B = reduced.n_groups, reduced.n_bits
        if self.max_entries < (G * B) ** 2:
            raise ConfigError(
                f"solver 'pairs-bnb' builds a dense pair tensor of (groups * bits)**2 = {(G * B) ** 2:,} floats "
                f"here ({G} groups x {B} bits), above max_entries={self.max_entries:,}; raise max_entries=... "
                "(8 bytes each) or use the 'highs' solver"
            )
        P = dense_pairs(pairs, G, B)
        names = list(reduced.problem.budgets)
        weights = np.array([reduced.costs[n] for n in names]).reshape(len(names), G, B)
        caps = np.array([reduced.problem.budgets[n] + budget_slack(reduced.problem.budgets[n]) for n in names])
        t_lp = time.perf_counter()
        rep = rlt_reparametrization(
            unary, P, reduced.allowed, weights, caps, time_limit=max(1e-3, 0.3 * (deadline - t_lp))
        )
        if rep["infeasible"]:
            raise_jointly_infeasible(reduced, self.name)
        lp_seconds = time.perf_counter() - t_lp
        boundings = [lp_bounding(rep)]
        info: dict[str, Any] = {
            "lp_bound": rep["bound"],
            "lp_seconds": round(lp_seconds, 3),
            "lp_status": rep["status"],
        }
        if self.sdp:
            # The LP bound alone first (easy problems end here), then the certificate and a
            # second search from the root that keeps the first one's incumbent.
            now = time.perf_counter()
            first_deadline = now + self.lp_share * (deadline - now)
            search = _Search(reduced, unary, P, boundings, weights, caps, self.batch, first_deadline)
            search.run()
            info["lp_search_nodes"] = search.nodes
            if not search.done:
                incumbent = (search.best, search.best_choice)
                boundings = self._certificate_boundings(
                    boundings[0], rep["basis"], unary, P, reduced.allowed, weights, caps, deadline, info
                )
                search = _Search(reduced, unary, P, boundings, weights, caps, self.batch, deadline)
                search.best, search.best_choice = incumbent
                search.run()
        else:
            search = _Search(reduced, unary, P, boundings, weights, caps, self.batch, deadline)
            search.run()
        if search.best_choice is None:
            if search.done:
                raise_jointly_infeasible(reduced, self.name)
            raise MpqError(
                f"solver 'pairs-bnb' found no allocation within its time limit ({self.time_limit:g} s; "
                f"{search.nodes:,} partial allocations bounded); raise time_limit=..."
            )
        choice = search.best_choice
        objective = reduced.objective_of(choice)
        info["nodes"] = search.nodes
        if search.done:
            return make_allocation(reduced, choice, solver=self.name, started=started, info=info)
        bound = min(search.open_bound, objective)
        return make_allocation(
            reduced,
            choice,
            solver=self.name,
            started=started,
            status="time_limit",
            gap=relative_gap(objective, bound),
            bound=bound,
            info=info,
        )

    def _certificate_boundings(
        self, plain, plain_basis, unary, P, allowed, weights, caps, deadline, info
    ) -> list[Bounding]:
        """``[exact, lower]`` from the semidefinite certificate (:mod:`.sdp_bound`), or ``[plain]``
        (the LP's) when SCS gives none; ``info`` gains ``sdp_bound``, ``sdp_seconds``, ``sdp_status``."""
        from mpqcore.solvers.sdp_bound import face_certificate, psd_certificate, split_objective

        t0 = time.perf_counter()
        share = max(1e-3, self.sdp_share * (deadline - t0))
        if self.certificate == "admm":
            face = face_certificate(unary, P, allowed, weights, caps, time_limit=share, triangles=self.triangles)
            S = face["S"]
            G, B = unary.shape
            ur, Pr = face["unary"], face["P"]
            lam = face["lam"]
            root = face["bound"]
            info.update(
                sdp_status=f"admm, residual {face['residual']:.1e}",
                sdp_iterations=face["iterations"],
                sdp_bound=root,
                sdp_seconds=round(time.perf_counter() - t0, 3),
                sdp_cuts=face["cuts"],
            )
            s2 = 2 * S[0, 1:].reshape(G, B)
            diag = np.diag(S)[1:].reshape(G, B)
            S4 = 2 * S[1:, 1:].reshape(G, B, G, B)
            S4[np.arange(G), :, np.arange(G), :] = 0.0
            # f >= q + (const + ur.x + pairs(Pr)) on every allocation (equal without cuts): the first
            # keeps the linearized q, lower drops q >= 0 (the relaxation's bound).
            exact = Bounding(face["const"] + S[0, 0], ur + s2 + diag, ur + s2, Pr + S4, Pr, lam, face["cuts"] == 0)
            return [exact, Bounding(face["const"], ur, ur, Pr, Pr, lam, False)]
        # A third for SCS, two thirds polishing its multipliers (what the bound gains most from).
        cert = psd_certificate(unary, P, allowed, weights, caps, time_limit=share / 3, polish=2 * share / 3)
        info.update(sdp_status=cert["status"], sdp_iterations=cert["iterations"])
        S = cert["S"]
        if S is None:
            info["sdp_seconds"] = round(time.perf_counter() - t0, 3)
            return [plain]
        const, unary_r, P_r = split_objective(unary, P, S)
        rep = rlt_reparametrization(
            unary_r,
            P_r,
            allowed,
            weights,
            caps,
            time_limit=max(1e-3, 0.5 * (deadline - time.perf_counter())),
            basis=plain_basis,
        )
        info.update(sdp_bound=const + rep["bound"], sdp_seconds=round(time.perf_counter() - t0, 3))
        if not math.isfinite(rep["bound"]):  # the LP of f - q did not finish: its split is no help
            return [plain]
        G, B = unary.shape
        s2 = 2 * S[0, 1:].reshape(G, B)
        diag = np.diag(S)[1:].reshape(G, B)
        S4 = 2 * S[1:, 1:].reshape(G, B, G, B)
        S4[np.arange(G), :, np.arange(G), :] = 0.0
        ut, Pt, lam = rep["unary"], rep["P"], rep["lam"]
        # exact: q(f + v) >= q(f) + 2 (s + S f).v (the free block's v^T S v >= 0 dropped);
        # lower: q >= 0 dropped whole (the relaxation's bound at the root).
        exact = Bounding(0.0, ut + s2 + diag, ut + s2, Pt + S4, Pt, lam, True)
        lower = Bounding(const, ut, ut, Pt, Pt, lam, False)
        return [exact, lower]


def dense_pairs(pairs: dict[tuple[int, int, int, int], float], G: int, B: int) -> np.ndarray:
    """``P[g, j, h, k]``, symmetric (``P[h, k, g, j]`` the same term), zero within a group."""
    P = np.zeros((G, B, G, B))
    if pairs:
        keys = np.array(list(pairs), dtype=int)
        vals = np.array(list(pairs.values()), dtype=float)
        np.add.at(P, (keys[:, 0], keys[:, 1], keys[:, 2], keys[:, 3]), vals)
        np.add.at(P, (keys[:, 2], keys[:, 3], keys[:, 0], keys[:, 1]), vals)
    return P


def rlt_reparametrization(
    unary: np.ndarray,
    P: np.ndarray,
    allowed: np.ndarray,
    weights: np.ndarray,
    caps: np.ndarray,
    *,
    time_limit: float,
    basis: Any = None,
) -> dict[str, Any]:
    """The one-hot RLT LP relaxation on HiGHS, turned into an equivalent objective.

    Returns ``{unary, P, lam, bound, status, infeasible, basis}``: ``unary + sum P`` equals the
    given objective on every allocation (the LP's row duals moved from the pair blocks
    into the unary terms), ``lam >= 0`` one multiplier per budget, and ``bound`` the LP
    bound (``-inf`` when the LP did not finish: the reparametrization is then weaker, but
    still exact). Groups with no free choice couple nothing (their pairs are folded in).
    ``basis``: HiGHS's optimal basis, or None; passing one back starts an LP of the same
    shape (other costs, the same allowed choices and budgets) from it.
    """
    import highspy

    from mpqcore.solvers.highs import _quiet_highs, _scale

    G, B = unary.shape
    nb = len(caps)
    finite_u = np.where(allowed, unary, 0.0)
    gi, hi = np.triu_indices(G, 1)
    npair = len(gi)
    nx = G * B
    n_col = nx + npair * B * B
    x_col = np.arange(nx).reshape(G, B)
    y_col = nx + np.arange(npair * B * B).reshape(npair, B, B)
    # Rows: G one-hot, nb budgets, then per pair B rows (sum_k y[j, k] = x[g, j]) and B (sum_j y = x[h, k]).
    r0 = G + nb
    row_j = r0 + (np.arange(npair)[:, None] * 2 * B + np.arange(B)[None, :])  # (npair, B)
    row_k = row_j + B
    rows = [np.repeat(np.arange(G), B), np.repeat(G + np.arange(nb), nx)]
    cols = [x_col.ravel(), np.tile(x_col.ravel(), nb)]
    scales = [_scale(w.ravel()) for w in weights]
    vals = [np.ones(nx), *(w.ravel() / s for w, s in zip(weights, scales, strict=True))]
    rows += [np.repeat(row_j, B, axis=1).ravel(), row_j.ravel()]
    cols += [y_col.ravel(), x_col[gi].ravel()]
    vals += [np.ones(npair * B * B), -np.ones(npair * B)]
    rows += [np.broadcast_to(row_k[:, None, :], (npair, B, B)).ravel(), row_k.ravel()]
    cols += [y_col.ravel(), x_col[hi].ravel()]
    vals += [np.ones(npair * B * B), -np.ones(npair * B)]
    r = np.concatenate(rows).astype(np.int64)
    c = np.concatenate(cols).astype(np.int64)
    v = np.concatenate(vals)
    order = np.lexsort((c, r))
    r, c, v = r[order], c[order], v[order]
    n_row = r0 + 2 * B * npair
    cost = np.concatenate([finite_u.ravel(), P[gi, :, hi, :].ravel()])
    obj_scale = _scale(cost)
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = n_col, n_row
    lp.col_cost_ = cost / obj_scale
    lp.col_lower_ = np.zeros(n_col)
    lp.col_upper_ = np.concatenate([allowed.ravel().astype(float), np.ones(npair * B * B)])
    inf = highspy.kHighsInf
    lp.row_lower_ = np.concatenate([np.ones(G), np.full(nb, -inf), np.zeros(2 * B * npair)])
    lp.row_upper_ = np.concatenate(
        [np.ones(G), caps / np.array(scales, dtype=float).reshape(nb), np.zeros(2 * B * npair)]
    )
    lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
    lp.a_matrix_.start_ = np.searchsorted(r, np.arange(n_row + 1)).astype(np.int32)
    lp.a_matrix_.index_ = c.astype(np.int32)
    lp.a_matrix_.value_ = v
    h = _quiet_highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(time_limit))
    h.passModel(lp)
    if basis is not None:  # the same rows and columns solved before for other costs: start there
        h.setBasis(basis)
    h.run()
    status = h.getModelStatus()
    out: dict[str, Any] = {"unary": unary, "P": P, "lam": np.zeros(nb), "bound": -math.inf, "infeasible": False}
    out["status"] = h.modelStatusToString(status)
    out["basis"] = h.getBasis() if status == highspy.HighsModelStatus.kOptimal else None
    if status == highspy.HighsModelStatus.kInfeasible:
        out["infeasible"] = True
        return out
    sol = h.getSolution()
    if status != highspy.HighsModelStatus.kOptimal or not sol.dual_valid:
        return out  # no duals to use: the plain objective, lam = 0
    dual = np.asarray(sol.row_dual) * obj_scale
    lam = np.maximum(0.0, -dual[G : G + nb] / np.array(scales, dtype=float).reshape(nb))
    a, b = dual[row_j], dual[row_k]  # (npair, B) each
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return out
    ut = unary.copy()
    np.add.at(ut, gi, a)
    np.add.at(ut, hi, b)
    Pt = P.copy()
    block = P[gi, :, hi, :] - a[:, :, None] - b[:, None, :]
    Pt[gi, :, hi, :] = block
    Pt[hi, :, gi, :] = block.transpose(0, 2, 1)
    out.update(
        unary=np.where(allowed, ut, np.inf), P=Pt, lam=lam, bound=h.getInfo().objective_function_value * obj_scale
    )
    return out


@attrs.frozen
class Bounding:
    """One lower-bounding objective of the search: on a partial allocation with fixed
    choices ``f`` and free ones ``v``, ``const + u_fix.f + pairs(Pc, f, f) + pairs(Pc, f, v)
    + u_free.v + pairs(Pr, v, v)`` is at most the objective of every completion (``lam``
    its budget multipliers). ``exact`` when it equals the objective on complete allocations."""

    const: float
    u_fix: np.ndarray
    u_free: np.ndarray
    Pc: np.ndarray
    Pr: np.ndarray
    lam: np.ndarray
    exact: bool


def lp_bounding(rep: dict[str, Any]) -> Bounding:
    """The RLT reparametrization as a :class:`Bounding` (exact)."""
    return Bounding(0.0, rep["unary"], rep["unary"], rep["P"], rep["P"], rep["lam"], True)


class _Search:
    """The batched depth-first branch-and-bound over one or more lower-bounding objectives
    (the first exact); every partial allocation gets the largest of their bounds."""

    def __init__(self, reduced: ReducedProblem, unary, P, boundings, weights, caps, batch: int, deadline: float):
        G, B = unary.shape
        self.reduced, self.batch, self.deadline = reduced, batch, deadline
        allowed = reduced.allowed
        self.plain_unary = np.where(allowed, unary, np.inf)
        self.plain_P = P
        #: Whether the first bounding's value of a complete allocation is its objective (else a lower
        #: bound: the leaves are then ranked by their objectives, computed here).
        self.exact = boundings[0].exact
        # Fixed groups first, then the strongest interactions (and largest unary spread).
        free = allowed.sum(axis=1) > 1
        spread = np.where(allowed, unary, np.nan)
        spread = np.nan_to_num(np.nanmax(spread, axis=1) - np.nanmin(spread, axis=1))
        strength = np.abs(P).sum(axis=(1, 2, 3)) + spread
        self.order = np.lexsort((-strength, free))
        o = self.order
        al = allowed[o]
        self.const = np.array([bd.const for bd in boundings])  # (K,)
        self.u = np.stack([np.where(allowed, bd.u_free, np.inf)[o] for bd in boundings])  # (K, G, B)
        self.du = np.stack(
            [(np.where(allowed, bd.u_fix, 0.0) - np.where(allowed, bd.u_free, 0.0))[o] for bd in boundings]
        )
        self.P = np.stack([bd.Pc[o][:, :, o, :] for bd in boundings])  # (K, G, B, G, B)
        later = np.triu(np.ones((G, G), dtype=bool), 1)
        R = []
        for bd in boundings:
            masked = np.where(al[None, None, :, :], bd.Pr[o][:, :, o, :], np.inf).min(axis=3)  # (G, B, G)
            R.append(np.where(later[:, None, :], masked, 0.0).sum(axis=2))  # (G, B)
        self.R = np.stack(R)  # (K, G, B)
        self.W = weights[:, o, :]  # (nb, G, B)
        self.caps = caps + 1e-12 * np.maximum(1.0, np.abs(caps))  # only sure overshoots prune
        Wmin = np.where(al[None], self.W, np.inf).min(axis=2)  # (nb, G)
        self.suffix_min = np.concatenate(
            [np.cumsum(Wmin[:, ::-1], axis=1)[:, ::-1], np.zeros((len(caps), 1))], axis=1
        )  # (nb, G + 1)
        #: Per bounding, the multipliers tried (L, nb) and their budget terms (L, G, B).
        self.lams = [np.array([f * bd.lam for f in _LAMBDA_FACTORS] if bd.lam.any() else [bd.lam]) for bd in boundings]
        self.penalty = [np.einsum("lb,bgj->lgj", lam, self.W) for lam in self.lams]
        scale = float(np.nansum(np.abs(np.where(allowed, unary, 0.0)).max(axis=1))) + float(np.abs(P).sum()) / 2
        self.tol = _BOUND_RTOL * max(scale, 1e-300)
        self.G, self.B = G, B
        self.best = math.inf
        self.best_choice: np.ndarray | None = None
        self.nodes = 0
        self.done = False
        self.open_bound = -math.inf

    def improve(self, prefix: np.ndarray) -> None:
        """An allocation (in branching order) as the incumbent if it meets every budget; 1-swaps on it."""
        choice = np.empty(self.G, dtype=int)
        choice[self.order] = prefix
        reduced = self.reduced
        costs = reduced.costs_of(choice)
        if not all(within_budget(costs[n], lim) for n, lim in reduced.problem.budgets.items()):
            return
        choice = local_search(reduced, choice, max_moves=200)
        value = self.value(choice)
        if value < self.best:
            self.best, self.best_choice = value, choice

    def value(self, choice: np.ndarray) -> float:
        rows = np.arange(self.G)
        return float(self.plain_unary[rows, choice].sum() + self.plain_P[rows, choice][:, rows, choice].sum() / 2)

    def values(self, prefixes: np.ndarray, chunk: int = 256) -> np.ndarray:
        """The objective of complete allocations given in branching order (one per row)."""
        rows = np.arange(self.G)
        out = np.empty(len(prefixes))
        for a in range(0, len(prefixes), chunk):
            choice = np.empty((len(prefixes[a : a + chunk]), self.G), dtype=int)
            choice[:, self.order] = prefixes[a : a + chunk]
            pair = self.plain_P[rows[None, :, None], choice[:, :, None], rows[None, None, :], choice[:, None, :]]
            out[a : a + chunk] = self.plain_unary[rows[None], choice].sum(axis=1) + pair.sum(axis=(1, 2)) / 2
        return out

    def run(self) -> None:
        G, nb, K = self.G, len(self.caps), len(self.const)
        stack: list[tuple[Any, ...]] = [
            (
                0,
                self.const[:, None].copy(),
                np.zeros((1, nb)),
                self.u[:, None].copy(),
                np.zeros((1, 0), dtype=int),
                np.full(1, -np.inf),
            )
        ]
        while stack:
            if time.perf_counter() > self.deadline:
                live = [lb.min() for (*_, lb) in stack if len(lb)]
                self.open_bound = min(live) if live else math.inf
                return
            d, fixed, used, coup, prefix, _lb = stack.pop()
            N = fixed.shape[1]
            self.nodes += N
            # (K, N, B): each bounding's value with group d at each choice.
            value = fixed[:, :, None] + coup[:, :, 0, :] + self.du[:, d][:, None, :]
            spent = used[:, None, :] + self.W[:, d, :].T[None]  # (N, B, nb)
            fits = np.all(spent + self.suffix_min[:, d + 1] <= self.caps, axis=2)
            if d + 1 == G:
                self._leaves(np.where(fits, value[0], np.inf), prefix)
                continue
            # What group d's choice k adds to the later groups: P[d, k, d+1:, :]. The sums for
            # every child are only reduced here; the children kept are built below.
            later = self.P[:, d][:, :, d + 1 :, :]  # (K, B, G-d-1, B)
            over = spent - self.caps  # (N, B, nb)
            lb = np.full((N, self.B), -np.inf)
            for v in range(K):
                ahead = coup[v, :, 1:, :] + self.R[v, d + 1 :][None]  # (N, G-d-1, B)
                for lam, pen in zip(self.lams[v], self.penalty[v], strict=True):
                    shifted = ahead + pen[d + 1 :][None]
                    term = np.stack([(shifted + later[v, k]).min(axis=2).sum(axis=1) for k in range(self.B)], axis=1)
                    lb = np.maximum(lb, value[v] + over @ lam + term)
            keep = fits & (lb < self.best - self.tol)
            n, k = np.nonzero(keep)
            if not len(n):
                continue
            worst_first = np.argsort(-lb[n, k], kind="stable")
            n, k = n[worst_first], k[worst_first]
            child = (
                value[:, n, k],
                spent[n, k],
                coup[:, n, 1:, :] + later[:, k],
                np.concatenate([prefix[n], k[:, None]], axis=1),
                lb[n, k],
            )
            for a in range(0, len(n), self.batch):
                stack.append(
                    (
                        d + 1,
                        child[0][:, a : a + self.batch],
                        child[1][a : a + self.batch],
                        child[2][:, a : a + self.batch],
                        child[3][a : a + self.batch],
                        child[4][a : a + self.batch],
                    )
                )
        self.done = True
        self.open_bound = self.best

    def _leaves(self, value: np.ndarray, prefix: np.ndarray) -> None:
        """Complete allocations, best first, until one passes the exact budget check."""
        flat = value.ravel()
        better = np.nonzero(flat < self.best - self.tol)[0]
        rank = flat[better]
        if not self.exact and len(better):
            n, k = np.divmod(better, self.B)
            rank = self.values(np.concatenate([prefix[n], k[:, None]], axis=1))
            better, rank = better[rank < self.best - self.tol], rank[rank < self.best - self.tol]
        for i in better[np.argsort(rank, kind="stable")]:
            before = self.best
            n, k = divmod(int(i), self.B)
            self.improve(np.concatenate([prefix[n], [k]]))
            if self.best < before:
                return
