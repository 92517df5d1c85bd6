"""ALPS for mpq: per-layer score drop from a base precision, optionally after fine-tuning.

``mpqcore.search(model, calibration, method="alps", metric=..., method_options={"finetune_steps": 20})``
"""

from mpqcore_alps.drops import Scorer, drop_table
from mpqcore_alps.method import TIE_BREAKS, AccuracyAwareSelection
from mpqcore_alps.tiebreak import is_lattice, smallest_gap, tie_break_weight, tie_broken

__all__ = [
    "TIE_BREAKS",
    "AccuracyAwareSelection",
    "Scorer",
    "drop_table",
    "is_lattice",
    "smallest_gap",
    "tie_break_weight",
    "tie_broken",
]
__version__ = "0.1.0"
