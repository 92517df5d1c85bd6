"""SMPQ for mpq: Shapley values of bit-width choices as a mixed-precision objective.

The estimators in :mod:`mpqcore_smpq.shapley` are pure functions over a value
function ``v(frozenset) -> float``; :class:`ShapleyBitWidth` (registered as ``smpq``)
plays the bit-width game on a model through mpq's shared evaluator.
"""

from mpqcore_smpq.method import PLAYER_MODES, ShapleyBitWidth, SmpqResult
from mpqcore_smpq.shapley import (
    EXACT_MAX_PLAYERS,
    BudgetExhausted,
    CachedGame,
    EvaluationStore,
    InteractionEstimate,
    ShapleyEstimate,
    exact_interactions,
    exact_shapley,
    monte_carlo_shapley,
    sample_interactions,
)

__version__ = "0.1.0"

__all__ = [
    "EXACT_MAX_PLAYERS",
    "PLAYER_MODES",
    "BudgetExhausted",
    "CachedGame",
    "EvaluationStore",
    "InteractionEstimate",
    "ShapleyBitWidth",
    "ShapleyEstimate",
    "SmpqResult",
    "exact_interactions",
    "exact_shapley",
    "monte_carlo_shapley",
    "sample_interactions",
]
