"""Softmax, the way attention and sampling need it: numerically stable.

softmax(x)_i = exp(x_i) / sum_j exp(x_j). Computed literally, exp overflows to inf
for logits above ~88 in float32 and the result is nan. Subtracting the row maximum
first changes nothing mathematically (the factor exp(-max) cancels) and keeps every
exponent <= 0.

Chapter: warmup.
"""

from __future__ import annotations

import torch


def naive_softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax exactly as the formula reads. Overflows for large inputs: for teaching only."""
    e = torch.exp(x)
    return e / e.sum(dim=dim, keepdim=True)


def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Numerically stable softmax along `dim`; any shape, e.g. scores `(batch, heads, q, k)`.

    Masked entries may be `-inf`; a row that is entirely `-inf` has no valid
    distribution and comes out as nan, as in `torch.softmax`.
    """
    shifted = x - x.amax(dim=dim, keepdim=True)  # every exponent <= 0: no overflow
    e = torch.exp(shifted)
    return e / e.sum(dim=dim, keepdim=True)
