"""ALPS for mpq: per-layer score drop from a base precision, optionally after fine-tuning.

``mpqcore.search(model, calibration, method="alps", metric=..., method_options={"finetune_steps": 20})``
"""

from typing import TYPE_CHECKING

from mpqcore.lazy_imports import lazy_exports

if TYPE_CHECKING:
    from mpqcore_alps.drops import Scorer, drop_table
    from mpqcore_alps.method import TIE_BREAKS, AccuracyAwareSelection
    from mpqcore_alps.tiebreak import is_lattice, smallest_gap, tie_break_weight, tie_broken

# loaded on first use, so that loading the entry point (mpq plugins) never imports torch
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "Scorer": "mpqcore_alps.drops",
        "drop_table": "mpqcore_alps.drops",
        "TIE_BREAKS": "mpqcore_alps.method",
        "AccuracyAwareSelection": "mpqcore_alps.method",
        "is_lattice": "mpqcore_alps.tiebreak",
        "smallest_gap": "mpqcore_alps.tiebreak",
        "tie_break_weight": "mpqcore_alps.tiebreak",
        "tie_broken": "mpqcore_alps.tiebreak",
    },
)
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
