"""The entropy of a layer's quantized weight codes, in bits.

The integer codes of a ``b``-bit quantizer lie in ``[0, 2**b)``; their empirical
histogram over those ``2**b`` bins is the distribution whose Shannon entropy EAGL uses.
It lies between 0 (every weight in one bin) and ``min(b, log2(n))`` for ``n`` weights
(the bins filled evenly).
"""

from __future__ import annotations

import numpy as np
import torch

from mpqcore.quantizers import QuantizedTensor

__all__ = ["code_entropy", "code_histogram", "entropy_bits"]


def code_histogram(codes: torch.Tensor, bits: int) -> np.ndarray:
    """Counts of each code ``0 .. 2**bits - 1`` (length ``2**bits``)."""
    flat = codes.detach().reshape(-1).to(torch.int64).cpu()
    levels = 2 ** int(bits)
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= levels):
        raise ValueError(f"codes outside [0, {levels}) for {bits} bits: min {int(flat.min())}, max {int(flat.max())}")
    return torch.bincount(flat, minlength=levels).numpy()


def entropy_bits(counts: np.ndarray) -> float:
    """Shannon entropy (base 2) of the distribution proportional to ``counts``."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return 0.0
    p = counts[counts > 0] / total
    # max(0, .) because a one-bin histogram gives -0.0 and rounding can give -1e-16.
    return max(0.0, float(-(p * np.log2(p)).sum()))


def code_entropy(quantized: QuantizedTensor) -> float:
    """Entropy in bits of the histogram of ``quantized.codes`` over ``2**bits`` bins."""
    return entropy_bits(code_histogram(quantized.codes, quantized.bits))
