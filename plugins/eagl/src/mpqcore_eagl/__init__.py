"""EAGL for mpq: data-free layer sensitivity from the entropy of quantized weight codes.

``mpqcore.search(model, calibration, method="eagl", method_options={"scale": "params"})``
"""

from mpqcore_eagl.entropy import code_entropy, code_histogram, entropy_bits
from mpqcore_eagl.method import SCALES, EntropyGuided, cost_scale, entropy_table

__all__ = ["SCALES", "EntropyGuided", "code_entropy", "code_histogram", "cost_scale", "entropy_bits", "entropy_table"]
__version__ = "0.1.0"
