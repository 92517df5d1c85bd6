"""Shapley values and pairwise Shapley interactions of a cooperative game.

Pure functions over a value function ``v(coalition: frozenset) -> float``: nothing
here knows about models, so synthetic games (additive, glove, ``x1 * x2``) test the
estimators directly.

- :func:`exact_shapley` and :func:`exact_interactions` enumerate all ``2**n``
  coalitions (``n <= EXACT_MAX_PLAYERS``).
- :func:`monte_carlo_shapley` samples permutations in antithetic pairs (a permutation
  and its reverse), truncates a permutation once the prefix value is within
  ``truncation`` of ``v(all)``, and stops when every standard error is at most
  ``tolerance`` or the evaluation budget is spent.
- :func:`sample_interactions` estimates the Shapley interaction index of chosen pairs
  by sampling coalitions, also in antithetic (complement) pairs.

Every value function is wrapped in a :class:`CachedGame`: a coalition (or whatever
``key`` maps it to) is evaluated once; ``evaluations`` counts the cache misses, which
is what a budget limits. A game given a ``batch`` value function evaluates the
coalitions known in advance in one call (every coalition of an exact enumeration; the
prefixes of an antithetic pair of permutations when nothing truncates the walks), so a
model evaluator can reuse prefixes and spread them over workers; only coalitions the
sequential walk would evaluate anyway, and only when the budget has room for all of
them, so the values and the counts are those of one evaluation at a time.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from typing import Any

import attrs
import numpy as np

__all__ = [
    "EXACT_MAX_PLAYERS",
    "BudgetExhausted",
    "CachedGame",
    "EvaluationStore",
    "InteractionEstimate",
    "ShapleyEstimate",
    "describe",
    "exact_interactions",
    "exact_shapley",
    "monte_carlo_shapley",
    "sample_interactions",
]

#: Exact enumeration visits 2**n coalitions; above this many players it is refused.
EXACT_MAX_PLAYERS = 12

Player = Hashable
ValueFunction = Callable[[frozenset], float]
BatchValueFunction = Callable[[list[frozenset]], list[float]]


class BudgetExhausted(Exception):
    """A new evaluation was needed but the evaluation budget is spent."""


class EvaluationStore:
    """A cache of evaluated values, their count, and an optional evaluation limit.

    Several games may share one store (and so one cache and one budget): the
    bit-width game of each candidate bit-width in ``players="layer"`` mode does.
    """

    def __init__(self, limit: int | None = None):
        self.cache: dict[Hashable, float] = {}
        self.evaluations = 0
        self.limit = limit

    @property
    def remaining(self) -> float:
        return math.inf if self.limit is None else max(self.limit - self.evaluations, 0)

    @contextlib.contextmanager
    def budget(self, n: int | None) -> Iterator[None]:
        """At most ``n`` more evaluations inside the block (``None``: no new limit)."""
        saved = self.limit
        if n is not None:
            cap = self.evaluations + int(n)
            self.limit = cap if saved is None else min(saved, cap)
        try:
            yield
        finally:
            self.limit = saved

    def get(self, key: Hashable, compute: Callable[[], float]) -> float:
        try:
            return self.cache[key]
        except KeyError:
            pass
        if self.limit is not None and self.evaluations >= self.limit:
            raise BudgetExhausted
        value = float(compute())
        self.evaluations += 1
        self.cache[key] = value
        return value

    def put_many(self, keys: Sequence[Hashable], compute: Callable[[], list[float]]) -> bool:
        """Compute ``keys`` (distinct, none cached) in one call when the budget has room for all; else nothing."""
        if not keys or self.remaining < len(keys):
            return False
        values = compute()
        if len(values) != len(keys):
            raise ValueError(f"a batch value function returned {len(values)} values for {len(keys)} coalitions")
        for key, value in zip(keys, values, strict=True):
            self.cache[key] = float(value)
        self.evaluations += len(keys)
        return True


class CachedGame:
    """``value`` with a cache: ``game(coalition)`` evaluates each key once.

    ``key(coalition)`` names what is cached (default: the coalition itself); two
    coalitions with the same key share one evaluation. ``calls`` counts lookups,
    ``evaluations`` the misses (in the shared ``store``).
    """

    def __init__(
        self,
        value: ValueFunction,
        *,
        key: Callable[[frozenset], Hashable] | None = None,
        store: EvaluationStore | None = None,
        batch: BatchValueFunction | None = None,
    ):
        self.value = value
        self.batch = batch
        self.key = key
        self.store = store if store is not None else EvaluationStore()
        self.calls = 0

    @property
    def evaluations(self) -> int:
        return self.store.evaluations

    def budget(self, n: int | None):
        return self.store.budget(n)

    def __call__(self, coalition: frozenset) -> float:
        coalition = frozenset(coalition)
        self.calls += 1
        key = coalition if self.key is None else self.key(coalition)
        return self.store.get(key, lambda: self.value(coalition))

    def prefetch(self, coalitions: Iterable[frozenset]) -> None:
        """Evaluate the uncached ``coalitions`` in one ``batch`` call, when the game has one and
        the budget has room for all of them (else they are left to one-at-a-time calls)."""
        if self.batch is None:
            return
        missing: dict[Hashable, frozenset] = {}
        for c in coalitions:
            c = frozenset(c)
            key = c if self.key is None else self.key(c)
            if key not in self.store.cache and key not in missing:
                missing[key] = c
        batch = self.batch
        self.store.put_many(list(missing), lambda: [float(v) for v in batch(list(missing.values()))])


def _cached(value: ValueFunction | CachedGame) -> CachedGame:
    return value if isinstance(value, CachedGame) else CachedGame(value)


def _shapley_weights(n: int) -> np.ndarray:
    """``w[s] = s! (n-s-1)! / n!``: the weight of a coalition of size ``s`` without ``i``."""
    return np.array([math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n) for s in range(n)])


def _interaction_weights(n: int) -> np.ndarray:
    """``w[s] = s! (n-s-2)! / (n-1)!``: the weight of a coalition of size ``s`` without ``i, j``."""
    return np.array([math.factorial(s) * math.factorial(n - s - 2) / math.factorial(n - 1) for s in range(n - 1)])


@attrs.frozen(eq=False)
class ShapleyEstimate:
    """Shapley values of ``players`` (in that order) and how they were obtained.

    ``pair_means[k, i]`` is player ``i``'s marginal contribution averaged over the
    ``k``-th antithetic pair of permutations (``None`` for exact values); estimates are
    their column means and standard errors their column standard deviations over
    ``sqrt(n_pairs)``. ``evaluations`` counts the new evaluations this estimate made
    (cache misses), ``evaluation_trace[k]`` the total after pair ``k``. ``stopped`` is
    ``exact``, ``tolerance``, ``budget`` or ``max_permutations``.
    """

    players: tuple
    values: np.ndarray
    stderr: np.ndarray
    v_empty: float
    v_full: float
    n_permutations: int
    evaluations: int
    stopped: str
    truncated_permutations: int = 0
    pair_means: np.ndarray | None = None
    evaluation_trace: np.ndarray | None = None

    @property
    def exact(self) -> bool:
        return self.stopped == "exact"

    @property
    def n_pairs(self) -> int:
        return 0 if self.pair_means is None else len(self.pair_means)

    @property
    def efficiency_gap(self) -> float:
        """``sum(values) - (v_full - v_empty)``: 0 for exact values and untruncated samples."""
        return float(np.sum(self.values) - (self.v_full - self.v_empty))

    def index(self, player: Player) -> int:
        return self.players.index(player)

    def stderr_of_combination(self, weights: Sequence[float] | np.ndarray) -> float:
        """The standard error of ``weights @ values``, covariances included.

        The players' estimates come from the same permutations, so they are
        correlated; combining the per-pair samples first and taking the standard error
        of the combination accounts for that (no independence assumption). 0 for
        exact values, NaN with fewer than two pairs.
        """
        w = np.asarray(weights, dtype=float)
        if self.pair_means is None or not np.any(w):
            return 0.0
        if self.n_pairs < 2:
            return math.nan
        combined = self.pair_means @ w
        return float(np.std(combined, ddof=1) / math.sqrt(self.n_pairs))

    def stderr_of_sum(self, indices: Sequence[int]) -> float:
        """The standard error of ``sum(values[indices])`` (see :meth:`stderr_of_combination`)."""
        w = np.zeros(len(self.players))
        w[list(indices)] = 1.0
        return self.stderr_of_combination(w)

    def history(self) -> tuple[np.ndarray, np.ndarray]:
        """Running estimates and standard errors after each antithetic pair (``[pairs, players]``)."""
        if self.pair_means is None:
            raise ValueError("exact Shapley values have no sampling history")
        mean = np.empty_like(self.pair_means)
        se = np.full_like(self.pair_means, np.nan)
        running = np.zeros(self.pair_means.shape[1])
        squares = np.zeros_like(running)  # Welford: sum of squared deviations, stable
        for k, x in enumerate(self.pair_means, start=1):
            delta = x - running
            running = running + delta / k
            squares = squares + delta * (x - running)
            mean[k - 1] = running
            if k >= 2:
                se[k - 1] = np.sqrt(squares / (k - 1) / k)
        return mean, se


def exact_shapley(players: Sequence[Player], value: ValueFunction | CachedGame) -> ShapleyEstimate:
    """Exact Shapley values by enumerating all ``2**n`` coalitions (``n <= EXACT_MAX_PLAYERS``)."""
    players = tuple(players)
    game = _cached(value)
    start = game.evaluations
    table = _value_table(players, game)
    n = len(players)
    phi = np.zeros(n)
    if n:
        masks = np.arange(2**n)
        sizes = _popcount(masks)
        w = _shapley_weights(n)
        for i in range(n):
            without = masks[(masks >> i) & 1 == 0]
            phi[i] = float(np.sum(w[sizes[without]] * (table[without | (1 << i)] - table[without])))
    return ShapleyEstimate(
        players=players, values=phi, stderr=np.zeros(n), v_empty=float(table[0]), v_full=float(table[-1]),
        n_permutations=0, evaluations=game.evaluations - start, stopped="exact",
    )  # fmt: skip


def _popcount(masks: np.ndarray) -> np.ndarray:
    out = np.zeros_like(masks)
    m = masks.copy()
    while np.any(m):
        out += m & 1
        m >>= 1
    return out


def _value_table(players: tuple, game: CachedGame) -> np.ndarray:
    n = len(players)
    if n > EXACT_MAX_PLAYERS:
        raise ValueError(
            f"exact Shapley values enumerate 2**n coalitions; {n} players is above the limit of {EXACT_MAX_PLAYERS}"
        )
    coalitions = [frozenset(p for i, p in enumerate(players) if mask >> i & 1) for mask in range(2**n)]
    game.prefetch(coalitions)
    table = np.empty(2**n)
    for mask, coalition in enumerate(coalitions):
        table[mask] = game(coalition)
    return table


def monte_carlo_shapley(
    players: Sequence[Player],
    value: ValueFunction | CachedGame,
    *,
    rng: np.random.Generator,
    tolerance: float = 0.0,
    truncation: float = 0.0,
    relative: bool = False,
    min_permutations: int = 20,
    max_permutations: int = 2000,
    max_evaluations: int | None = None,
) -> ShapleyEstimate:
    """Permutation-sampling estimate of the Shapley values, in antithetic pairs.

    Each round draws a permutation and also walks its reverse; the two marginal
    vectors are averaged into one sample, and standard errors are taken over those
    pair samples (the two halves of a pair are correlated, not independent). A walk is
    truncated once ``|v(all) - v(prefix)| < truncation``: the players left get a zero
    marginal in that permutation. Sampling stops after at least ``min_permutations``
    when every standard error is ``<= tolerance``, after ``max_permutations``, or when
    a new evaluation would exceed ``max_evaluations`` (counted as new cache misses of
    ``value``; the unfinished pair is dropped, so the budget is never exceeded). With
    ``relative=True`` both ``tolerance`` and ``truncation`` are fractions of
    ``|v(all) - v(empty)|``.
    """
    players = tuple(players)
    n = len(players)
    game = _cached(value)
    start = game.evaluations
    samples: list[np.ndarray] = []
    trace: list[int] = []
    truncated = 0
    stopped = "max_permutations"
    with game.budget(max_evaluations):
        try:
            v_empty = game(frozenset())
            v_full = game(frozenset(players))
        except BudgetExhausted:
            nan = np.full(n, np.nan)
            return ShapleyEstimate(players, nan, nan, math.nan, math.nan, 0, game.evaluations - start, "budget")
        scale = abs(v_full - v_empty) if relative else 1.0
        tol, trunc = tolerance * scale, truncation * scale
        min_pairs = max(2, math.ceil(min_permutations / 2))
        max_pairs = max(min_pairs, max_permutations // 2)
        while len(samples) < max_pairs:
            order = rng.permutation(n)
            if trunc == 0.0:  # both walks visit every prefix: evaluate them together
                game.prefetch(_prefixes(order, players) + _prefixes(order[::-1], players))
            try:
                first, cut1 = _walk(order, players, game, v_empty, v_full, trunc)
                second, cut2 = _walk(order[::-1], players, game, v_empty, v_full, trunc)
            except BudgetExhausted:
                stopped = "budget"
                break
            truncated += cut1 + cut2
            samples.append((first + second) / 2.0)
            trace.append(game.evaluations - start)
            if len(samples) >= min_pairs:
                se = np.std(samples, axis=0, ddof=1) / math.sqrt(len(samples))
                if np.all(se <= tol):
                    stopped = "tolerance"
                    break
    pairs = np.array(samples).reshape(len(samples), n)
    k = len(samples)
    values = pairs.mean(axis=0) if k else np.full(n, np.nan)
    stderr = pairs.std(axis=0, ddof=1) / math.sqrt(k) if k >= 2 else np.full(n, np.nan)
    return ShapleyEstimate(
        players=players, values=values, stderr=stderr, v_empty=v_empty, v_full=v_full, n_permutations=2 * k,
        evaluations=game.evaluations - start, stopped=stopped, truncated_permutations=truncated,
        pair_means=pairs, evaluation_trace=np.array(trace, dtype=int),
    )  # fmt: skip


def _prefixes(order, players) -> list[frozenset]:
    """The coalitions a walk along ``order`` evaluates (every prefix but the empty and the full one)."""
    return [frozenset(players[i] for i in order[: k + 1]) for k in range(len(order) - 1)]


def _walk(order, players, game, v_empty, v_full, truncation) -> tuple[np.ndarray, int]:
    """Marginal contributions along one permutation; 1 if it was truncated."""
    n = len(players)
    marginals = np.zeros(n)
    prefix: set = set()
    previous = v_empty
    for position, i in enumerate(order):
        if abs(v_full - previous) < truncation:
            return marginals, 1
        prefix.add(players[i])
        current = v_full if position == n - 1 else game(frozenset(prefix))
        marginals[i] = current - previous
        previous = current
    return marginals, 0


@attrs.frozen(eq=False)
class InteractionEstimate:
    """Shapley interaction indices of ``pairs`` (tuples of two players).

    ``samples[k]`` is the number of antithetic coalition pairs behind ``values[k]``
    (0 for exact values); ``stderr`` is the standard error over those pairs.
    """

    pairs: tuple
    values: np.ndarray
    stderr: np.ndarray
    samples: np.ndarray
    evaluations: int
    stopped: str

    def as_dict(self) -> dict[tuple, float]:
        return {p: float(v) for p, v in zip(self.pairs, self.values, strict=True)}


def _delta(game: CachedGame, coalition: frozenset, i: Player, j: Player) -> float:
    """The discrete mixed difference ``v(S+ij) - v(S+i) - v(S+j) + v(S)``."""
    return game(coalition | {i, j}) - game(coalition | {i}) - game(coalition | {j}) + game(coalition)


def exact_interactions(
    players: Sequence[Player], value: ValueFunction | CachedGame, pairs: Sequence[tuple]
) -> InteractionEstimate:
    """Exact Shapley interaction indices (Grabisch 1997) of ``pairs`` by enumeration.

    ``I_ij = sum over S in N minus {i, j} of |S|! (n - |S| - 2)! / (n - 1)! * delta_ij(S)``.
    """
    players = tuple(players)
    pairs = tuple(tuple(p) for p in pairs)
    game = _cached(value)
    start = game.evaluations
    table = _value_table(players, game)
    n = len(players)
    masks = np.arange(2**n)
    sizes = _popcount(masks)
    w = _interaction_weights(n) if n >= 2 else np.zeros(0)
    out = np.zeros(len(pairs))
    for k, (a, b) in enumerate(pairs):
        i, j = players.index(a), players.index(b)
        bi, bj = 1 << i, 1 << j
        rest = masks[(masks & (bi | bj)) == 0]
        delta = table[rest | bi | bj] - table[rest | bi] - table[rest | bj] + table[rest]
        out[k] = float(np.sum(w[sizes[rest]] * delta))
    zeros = np.zeros(len(pairs))
    return InteractionEstimate(pairs, out, zeros, zeros.astype(int), game.evaluations - start, "exact")


def sample_interactions(
    players: Sequence[Player],
    value: ValueFunction | CachedGame,
    pairs: Sequence[tuple],
    *,
    rng: np.random.Generator,
    samples: int = 32,
    max_evaluations: int | None = None,
) -> InteractionEstimate:
    """Sampled Shapley interaction indices of ``pairs``.

    The index is an expectation: draw a size ``s`` uniformly from ``0..n-2``, then a
    coalition ``S`` of that size uniformly from the other players; ``delta_ij(S)`` is
    unbiased for ``I_ij``. Each draw is paired with its complement among the other
    players (whose size is also uniform), the two deltas are averaged into one sample,
    and the standard error is taken over those antithetic pairs. Pairs are served
    round-robin (one antithetic pair each per round) for ``samples`` rounds or until
    the budget runs out, so all pairs get the same number of samples give or take one.
    """
    players = tuple(players)
    pairs = tuple(tuple(p) for p in pairs)
    game = _cached(value)
    start = game.evaluations
    draws: list[list[float]] = [[] for _ in pairs]
    stopped = "samples"
    others_of = [tuple(p for p in players if p not in pair) for pair in pairs]
    with game.budget(max_evaluations):
        try:
            for _ in range(samples):
                for k, (i, j) in enumerate(pairs):
                    others = others_of[k]
                    s = int(rng.integers(0, len(others) + 1))
                    chosen = rng.permutation(len(others))[:s]
                    inside = frozenset(others[c] for c in chosen)
                    outside = frozenset(others) - inside
                    draws[k].append((_delta(game, inside, i, j) + _delta(game, outside, i, j)) / 2.0)
        except BudgetExhausted:
            stopped = "budget"
    counts = np.array([len(d) for d in draws], dtype=int)
    values = np.array([np.mean(d) if d else 0.0 for d in draws])
    stderr = np.array([np.std(d, ddof=1) / math.sqrt(len(d)) if len(d) >= 2 else math.nan for d in draws])
    return InteractionEstimate(pairs, values, stderr, counts, game.evaluations - start, stopped)


def describe(estimate: ShapleyEstimate) -> dict[str, Any]:
    """A JSON-friendly summary of an estimate (no per-pair samples)."""
    return {
        "estimator": "exact" if estimate.exact else "monte-carlo",
        "permutations": estimate.n_permutations,
        "evaluations": estimate.evaluations,
        "stopped": estimate.stopped,
        "truncated_permutations": estimate.truncated_permutations,
        "v_empty": estimate.v_empty,
        "v_full": estimate.v_full,
        "efficiency_gap": estimate.efficiency_gap,
        "max_stderr": float(np.max(estimate.stderr)) if len(estimate.stderr) else 0.0,
    }
