"""CLADO for mpq: cross-layer-dependency-aware mixed-precision quantization.

``Clado`` measures single and pairwise loss changes with forward passes only and turns
them into an objective with pair terms (``alphaᵀ Ω alpha``) that the ``highs`` solver takes.
"""

from typing import TYPE_CHECKING

from mpqcore.lazy_imports import lazy_exports

if TYPE_CHECKING:
    from mpqcore_clado.method import Clado
    from mpqcore_clado.omega import (
        interaction,
        objective_terms,
        omega_from_losses,
        omega_matrix,
        one_hot,
        project_psd,
        quadratic_value,
    )
    from mpqcore_clado.pairs import PAIR_MODES, block_of, expected_evaluations, layer_pairs

# loaded on first use, so that loading the entry point (mpq plugins) never imports torch
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "Clado": "mpqcore_clado.method",
        "interaction": "mpqcore_clado.omega",
        "objective_terms": "mpqcore_clado.omega",
        "omega_from_losses": "mpqcore_clado.omega",
        "omega_matrix": "mpqcore_clado.omega",
        "one_hot": "mpqcore_clado.omega",
        "project_psd": "mpqcore_clado.omega",
        "quadratic_value": "mpqcore_clado.omega",
        "PAIR_MODES": "mpqcore_clado.pairs",
        "block_of": "mpqcore_clado.pairs",
        "expected_evaluations": "mpqcore_clado.pairs",
        "layer_pairs": "mpqcore_clado.pairs",
    },
)
__version__ = "0.1.0"

__all__ = [
    "PAIR_MODES",
    "Clado",
    "block_of",
    "expected_evaluations",
    "interaction",
    "layer_pairs",
    "objective_terms",
    "omega_from_losses",
    "omega_matrix",
    "one_hot",
    "project_psd",
    "quadratic_value",
]
