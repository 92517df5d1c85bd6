"""CLADO for mpq: cross-layer-dependency-aware mixed-precision quantization.

``Clado`` measures single and pairwise loss changes with forward passes only and turns
them into an objective with pair terms (``alphaᵀ Ω alpha``) that the ``highs`` solver takes.
"""

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
