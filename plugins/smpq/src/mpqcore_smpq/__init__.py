"""SMPQ for mpq: Shapley values of bit-width choices as a mixed-precision objective.

The estimators in :mod:`mpqcore_smpq.shapley` are pure functions over a value
function ``v(frozenset) -> float``; :class:`ShapleyBitWidth` (registered as ``smpq``)
plays the bit-width game on a model through mpq's shared evaluator.
"""

from typing import TYPE_CHECKING

from mpqcore.lazy_imports import lazy_exports

if TYPE_CHECKING:
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

# loaded on first use, so that loading the entry point (mpq plugins) never imports torch
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "PLAYER_MODES": "mpqcore_smpq.method",
        "ShapleyBitWidth": "mpqcore_smpq.method",
        "SmpqResult": "mpqcore_smpq.method",
        "EXACT_MAX_PLAYERS": "mpqcore_smpq.shapley",
        "BudgetExhausted": "mpqcore_smpq.shapley",
        "CachedGame": "mpqcore_smpq.shapley",
        "EvaluationStore": "mpqcore_smpq.shapley",
        "InteractionEstimate": "mpqcore_smpq.shapley",
        "ShapleyEstimate": "mpqcore_smpq.shapley",
        "exact_interactions": "mpqcore_smpq.shapley",
        "exact_shapley": "mpqcore_smpq.shapley",
        "monte_carlo_shapley": "mpqcore_smpq.shapley",
        "sample_interactions": "mpqcore_smpq.shapley",
    },
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
