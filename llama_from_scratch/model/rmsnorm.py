"""RMSNorm: LayerNorm without the mean and without the bias.

    RMSNorm(x) = x / sqrt(mean(x^2) + eps) * weight

Computed in float32 whatever the input dtype (squares of float16 values overflow and
lose digits), then cast back, then scaled by the learned `weight`, as in Meta's code.

Chapter: rmsnorm_embeddings.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class RMSNorm(nn.Module):
    """`(..., dim) -> (..., dim)`, normalising over the last dimension."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))  # (dim,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()  # (..., dim)
        rms_inv = torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)  # (..., 1)
        normed = (x32 * rms_inv).type_as(x)  # (..., dim)
        return normed * self.weight  # (..., dim)
