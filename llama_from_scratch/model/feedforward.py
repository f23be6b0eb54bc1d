"""SwiGLU feed-forward: the MLP of every LLaMA block.

    FFN(x) = w2( silu(w1 x) * (w3 x) )

`w1` is the gate, `w3` the "up" projection, `w2` the "down" projection (Hugging Face
calls them gate_proj, up_proj, down_proj). A SwiGLU MLP has three matrices instead of
two, so Meta shrinks the hidden size to 2/3 of the usual 4 * dim to keep the parameter
count of a plain 4x MLP, then rounds it up to a multiple of `multiple_of` (fast
matmul shapes). The 70B model stretches it again by `ffn_dim_multiplier`.

Chapter: swiglu.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def llama_hidden_dim(dim: int, multiple_of: int,
                     ffn_dim_multiplier: float | None = None) -> int:
    """Meta's hidden-size rule (llama/model.py, FeedForward.__init__).

    7B: dim 4096 -> 11008; 13B: 5120 -> 13824; 70B: 8192 (x1.3, multiple_of 4096) -> 28672.
    """
    hidden_dim = 4 * dim
    hidden_dim = int(2 * hidden_dim / 3)  # three matrices instead of two: same parameters
    if ffn_dim_multiplier is not None:
        hidden_dim = int(ffn_dim_multiplier * hidden_dim)
    return multiple_of * ((hidden_dim + multiple_of - 1) // multiple_of)  # round up


class FeedForward(nn.Module):
    """SwiGLU MLP: `(..., dim) -> (..., dim)`. No bias, no dropout (LLaMA has neither)."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)  # gate
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)  # down
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)  # up

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = F.silu(self.w1(x))  # (..., hidden_dim): silu(z) = z * sigmoid(z)
        up = self.w3(x)  # (..., hidden_dim)
        return self.w2(gate * up)  # (..., dim)
