"""Model parallelism in Meta's checkpoints: which way each weight is cut across ranks.

Meta trained and released the larger LLaMA 2 models split over several GPUs (Megatron-LM
style): rank r of R holds a slice of every large matrix W: (d_out, d_in).

    column-parallel (ColumnParallelLinear): rows are cut, dim 0    y = [W_0 x; W_1 x]
        wq, wk, wv, w1, w3, output
    row-parallel (RowParallelLinear): columns are cut, dim 1       y = W_0 x_0 + W_1 x_1
        wo, w2; and tok_embeddings (ParallelEmbedding cuts the feature dim)
    replicated: attention_norm, ffn_norm, norm (every rank holds all of it)
    ignored: rope.freqs (a table the model recomputes from the config)

A row-parallel layer follows a column-parallel one (wo after wq/wk/wv, w2 after w1/w3), so
the split activations never need gathering in between. Not handled: uneven splits.

Chapter: real_weights.
"""

from __future__ import annotations

import torch

from llama_from_scratch.checkpoints.errors import CheckpointError

IGNORED = {"rope.freqs"}


def shard_dim(key: str) -> int | None:
    """The dimension along which Meta's model-parallel ranks split `key`; None: replicated."""
    kind = key.split(".")[-2]  # "layers.3.attention.wq.weight" -> "wq"
    if kind in ("wq", "wk", "wv", "w1", "w3", "output"):
        return 0
    if kind in ("wo", "w2", "tok_embeddings"):
        return 1
    return None  # RMSNorm weights


def merge_shards(shards: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Model-parallel state dicts -> one state dict: concatenated along `shard_dim`, norms
    taken from rank 0 (after checking the ranks agree). Allocates the merged tensors."""
    merged = {}
    for key, first in shards[0].items():
        if key in IGNORED:
            continue
        dim = shard_dim(key)
        if dim is None:
            for rank, shard in enumerate(shards[1:], start=1):
                if not torch.equal(shard[key], first):
                    raise CheckpointError(f"{key} should be the same on every shard but "
                                          f"rank {rank} differs")
            merged[key] = first
        else:
            merged[key] = torch.cat([shard[key] for shard in shards], dim=dim)
    return merged


def shard_state_dict(state_dict: dict[str, torch.Tensor], rank: int, n_shards: int,
                     dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Model-parallel rank `rank` of `n_shards`: its slice of every tensor (the inverse of
    `merge_shards`), on the CPU as in Meta's files, each in memory of its own."""
    shard = {}
    for key, tensor in state_dict.items():
        dim = shard_dim(key)
        if dim is not None and tensor.shape[dim] % n_shards:
            raise ValueError(f"{key} {tuple(tensor.shape)} cannot be split into {n_shards} equal parts "
                             f"along dim {dim}")
        part = tensor if dim is None else tensor.chunk(n_shards, dim=dim)[rank]
        part = part.detach().to(device="cpu", dtype=dtype).contiguous()
        if part.untyped_storage().nbytes() != part.nbytes:  # a view: torch.save would write all its storage
            part = part.clone()
        shard[key] = part
    return shard


def split_state_dict(state_dict: dict[str, torch.Tensor], n_shards: int) -> list[dict[str, torch.Tensor]]:
    """All model-parallel ranks at once: `[shard_state_dict(state_dict, r, n_shards) for r ...]`."""
    return [shard_state_dict(state_dict, rank, n_shards) for rank in range(n_shards)]


def merged_shapes(shards: list[dict[str, torch.Tensor]]) -> dict[str, tuple[int, ...]]:
    """The shape of every merged tensor: shard sizes summed along `shard_dim` (no data is read)."""
    shapes = {}
    for key, tensor in shards[0].items():
        if key in IGNORED:
            continue
        dim, shape = shard_dim(key), list(tensor.shape)
        if dim is not None:
            shape[dim] = sum(s[key].shape[dim] if key in s else 0 for s in shards)
        shapes[key] = tuple(shape)
    return shapes
