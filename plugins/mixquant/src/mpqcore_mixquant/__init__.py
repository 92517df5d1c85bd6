"""MixQuant for mpq: weight quantization error per layer, as an objective and as the QEM rule.

``mpqcore.search(model, calib, method="mixquant")`` solves the error with the knapsack;
``mpqcore.search(model, calib, method="mixquant", solver="mixquant-qem",
solver_options={"qem": 2.0})`` applies the paper's rule (leave ``qem`` out to find the
smallest QEM that meets the budget).
"""

from typing import TYPE_CHECKING

from mpqcore.lazy_imports import lazy_exports

if TYPE_CHECKING:
    from mpqcore_mixquant.error import error_table, quantization_error
    from mpqcore_mixquant.method import SCALES, QuantizationErrorMethod
    from mpqcore_mixquant.rule import group_choice, rule_choice, thresholds
    from mpqcore_mixquant.solver import QEMSolver

# loaded on first use, so that loading the entry point (mpq plugins) never imports torch
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "error_table": "mpqcore_mixquant.error",
        "quantization_error": "mpqcore_mixquant.error",
        "SCALES": "mpqcore_mixquant.method",
        "QuantizationErrorMethod": "mpqcore_mixquant.method",
        "group_choice": "mpqcore_mixquant.rule",
        "rule_choice": "mpqcore_mixquant.rule",
        "thresholds": "mpqcore_mixquant.rule",
        "QEMSolver": "mpqcore_mixquant.solver",
    },
)
__all__ = [
    "SCALES",
    "QEMSolver",
    "QuantizationErrorMethod",
    "error_table",
    "group_choice",
    "quantization_error",
    "rule_choice",
    "thresholds",
]
__version__ = "0.1.0"
