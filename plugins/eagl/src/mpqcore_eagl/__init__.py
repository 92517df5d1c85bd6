"""EAGL for mpq: data-free layer sensitivity from the entropy of quantized weight codes.

``mpqcore.search(model, calibration, method="eagl", method_options={"scale": "params"})``
"""

from typing import TYPE_CHECKING

from mpqcore.lazy_imports import lazy_exports

if TYPE_CHECKING:
    from mpqcore_eagl.entropy import code_entropy, code_histogram, entropy_bits
    from mpqcore_eagl.method import SCALES, EntropyGuided, cost_scale, entropy_table

# loaded on first use, so that loading the entry point (mpq plugins) never imports torch
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "code_entropy": "mpqcore_eagl.entropy",
        "code_histogram": "mpqcore_eagl.entropy",
        "entropy_bits": "mpqcore_eagl.entropy",
        "SCALES": "mpqcore_eagl.method",
        "EntropyGuided": "mpqcore_eagl.method",
        "cost_scale": "mpqcore_eagl.method",
        "entropy_table": "mpqcore_eagl.method",
    },
)
__all__ = ["SCALES", "EntropyGuided", "code_entropy", "code_histogram", "cost_scale", "entropy_bits", "entropy_table"]
__version__ = "0.1.0"
