"""Tensor parallelism in Meta's layout: one layer's matrices cut across ranks, for inference.

Meta's reference (llama/model.py) builds LLaMA 2 from fairscale's three parallel layers;
these are the same three, written with explicit `torch.distributed` collectives. A rank r
of N holds, for a weight W `(d_out, d_in)`:

    ColumnParallelLinear  rows d_out/N (W_r)        y_r = x W_r^T         no communication
                          (gather_output: all-gather the y_r into y: the output layer)
    RowParallelLinear     columns d_in/N (W_r)      y = sum_r x_r W_r^T   one all-reduce
    ParallelEmbedding     columns dim/N of the table  e = [e_0 | ... | e_N-1]  one all-gather

In a block, wq, wk, wv (column) give each rank whole heads, attention runs on them locally,
and wo (row) sums the heads' contributions with one all-reduce; w1, w3 (column) and w2 (row)
do the same for the feed-forward. So a layer costs two all-reduces of `(batch, seq, dim)`.

Why explicit collectives rather than DTensor's `parallelize_module`: the three lines that
communicate are the lesson, and they map one to one onto fairscale's layers that Meta's
checkpoints were cut for; the weights stay plain local tensors, loaded from the rank's own
shard file. These layers do no autograd through the collectives: inference only.
Not handled: sequence parallelism, uneven splits.

Chapter: scale_out.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def gather_last_dim(x: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Concatenate every rank's `(..., k)` along the last dim, in rank order: `(..., k * N)`."""
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, x.contiguous(), group=group)
    return torch.cat(parts, dim=-1)


class ColumnParallelLinear(nn.Module):
    """`(..., d_in) -> (..., d_out / N)`, or `(..., d_out)` with `gather_output`."""

    def __init__(self, weight: torch.Tensor, gather_output: bool = False,
                 group: dist.ProcessGroup | None = None):
        super().__init__()
        # (d_out / N, d_in): this rank's rows
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.gather_output, self.group = gather_output, group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight)  # (..., d_out / N): this rank's outputs, no communication
        return gather_last_dim(y, self.group) if self.gather_output else y


class RowParallelLinear(nn.Module):
    """`(..., d_in / N)` (this rank's slice of the input) -> `(..., d_out)`, summed over
    the ranks."""

    def __init__(self, weight: torch.Tensor, group: dist.ProcessGroup | None = None):
        super().__init__()
        # (d_out, d_in / N): this rank's columns
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight)  # (..., d_out): this rank's partial sum
        dist.all_reduce(y, group=self.group)  # (..., d_out): the sum over every rank's slice
        return y


class ParallelEmbedding(nn.Module):
    """Token ids `(...)` -> `(..., dim)`; each rank holds every token's columns dim/N."""

    def __init__(self, weight: torch.Tensor, group: dist.ProcessGroup | None = None):
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)  # (vocab, dim / N)
        self.group = group

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return gather_last_dim(F.embedding(tokens, self.weight), self.group)  # (..., dim)
