"""Serving a Meta checkpoint across ranks: each rank reads only its own shard.

Meta ships LLaMA 2 70B as 8 files, `consolidated.00.pth` .. `07.pth`, one per model-parallel
rank: 8 was the model-parallel size Meta's code ran it with (7B: 1, 13B: 2). Under
`torchrun --nproc-per-node N`, rank r checks every file's keys and shapes as `load_meta`
does (memory-mapped: no tensor data is read), then copies only its slice of every tensor
from the files it needs, so no process ever holds a merged copy:

    N == shards         file r, as Meta serves it
    N divides shards    files r*k .. r*k + k - 1 (k = shards / N), concatenated along the cut
    shards divide N     file r // k (k = N / shards), cut again into k: rank r takes part r % k

Any other pair is an error, as is an N that does not divide the heads, the key/value heads,
dim, the feed-forward size or the vocabulary (each rank must hold whole heads and equal
slices). The model is our `Transformer` with its matrices swapped for the parallel layers
of `tensor_parallel`; attention runs on the rank's own heads. A tied output matrix loads as
two slices of the one embedding file tensor. Not handled: Hugging Face and llama2.c files
(convert to Meta's format with `checkpoints.meta_format.save_meta`), training.

Chapter: scale_out.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist

from llama_from_scratch.checkpoints.errors import CheckpointError
from llama_from_scratch.checkpoints.meta_format import check_shards, read_meta_args, shard_paths
from llama_from_scratch.checkpoints.model_parallel import shard_dim
from llama_from_scratch.checkpoints.safe_load import torch_load
from llama_from_scratch.distributed.tensor_parallel import ColumnParallelLinear, ParallelEmbedding, RowParallelLinear
from llama_from_scratch.model.attention import KVCache
from llama_from_scratch.model.config import ModelArgs
from llama_from_scratch.model.parameters import empty_model
from llama_from_scratch.model.transformer import Transformer


class TensorParallelTransformer(Transformer):
    """A `Transformer` whose matrices are this rank's slices; logits `(batch, seq, vocab)`
    in full on every rank. `agree_on` makes every rank use rank 0's sampled tokens."""

    def new_cache(self, batch: int, max_seq_len: int | None = None) -> list[KVCache]:
        """Each rank caches only its own key/value heads: n_kv_heads / N."""
        w = self.layers[0].attention.wk.weight
        heads = self.layers[0].attention.n_kv_heads
        return [KVCache(batch, max_seq_len or self.args.max_seq_len, heads, self.args.head_dim,
                        dtype=w.dtype, device=w.device) for _ in self.layers]

    def agree_on(self, ids: torch.Tensor) -> torch.Tensor:
        """Rank 0's choice, on every rank: `(batch,)` token ids broadcast from rank 0."""
        dist.broadcast(ids, src=0)
        return ids


def check_divides(args: ModelArgs, world: int) -> None:
    """ValueError naming every size that `world` ranks cannot split equally."""
    sizes = {"n_heads": args.n_heads, "n_kv_heads": args.kv_heads, "dim": args.dim,
             "the feed-forward size": args.ffn_hidden_dim, "vocab_size": args.vocab_size}
    bad = [f"{name} {size}" for name, size in sizes.items() if size % world]
    if bad:
        fits = [n for n in range(1, args.kv_heads + 1) if all(s % n == 0 for s in sizes.values())]
        raise ValueError(f"{world} ranks cannot split this model: {world} does not divide {', '.join(bad)} "
                         f"(each rank holds whole heads and equal slices). Run with {' or '.join(map(str, fits))} "
                         "processes (--nproc-per-node)")


def files_for_rank(n_files: int, rank: int, world: int) -> tuple[list[int], int, int]:
    """(the file numbers rank `rank` reads, k, part): with more ranks than files each file
    is cut into k parts and the rank keeps `part`; otherwise k = 1 and the files are
    concatenated."""
    if n_files % world == 0:
        per = n_files // world
        return list(range(rank * per, (rank + 1) * per)), 1, 0
    if world % n_files == 0:
        k = world // n_files
        return [rank // k], k, rank % k
    raise CheckpointError(f"the checkpoint has {n_files} model-parallel shards and there are "
                          f"{world} ranks: a rank's part must be whole shards or an equal cut "
                          "of one, so one count must divide the other. Run with a divisor or "
                          f"a multiple of {n_files} processes")


def local_slice(files: list[dict[str, torch.Tensor]], key: str, k: int,
                part: int) -> torch.Tensor:
    """This rank's slice of `key` from its memory-mapped files (a view until copied)."""
    dim = shard_dim(key)
    if dim is None:
        return files[0][key]  # replicated (the norms): every file holds all of it
    if len(files) > 1:
        return torch.cat([f[key] for f in files], dim=dim)
    return files[0][key].chunk(k, dim=dim)[part]


def load_tensor_parallel(directory: str | Path, rank: int, world: int, device: torch.device | str | None = None,
                         dtype: torch.dtype | None = None, max_seq_len: int = 4096) -> TensorParallelTransformer:
    """Rank `rank`'s part of the Meta checkpoint in `directory`, in eval mode (the process group must
    already be initialised with `world` ranks). Raises ValueError / CheckpointError before loading
    anything when the model or the shard count cannot be split `world` ways."""
    directory = Path(directory)
    args = read_meta_args(directory, max_seq_len)
    check_divides(args, world)
    paths = shard_paths(directory)
    numbers, k, part = files_for_rank(len(paths), rank, world)
    shards = [torch_load(p) for p in paths]  # memory-mapped: shapes only, until touched
    check_shards(directory, paths, shards, args)  # every key and merged shape, as load_meta
    files = [shards[i] for i in numbers]  # this rank's files: only their slices are read
    del shards  # the other files are unmapped
    model = empty_model(args, TensorParallelTransformer)

    def own(key: str) -> torch.Tensor:
        if key not in files[0]:  # a tied model's output.weight, which Meta's files always hold
            raise CheckpointError(f"{directory}: consolidated.{numbers[0]:02d}.pth has no {key}")
        return local_slice(files, key, k, part).to(device=device, dtype=dtype).clone()  # the rank's own copy

    model.tok_embeddings = ParallelEmbedding(own("tok_embeddings.weight"))
    model.output = ColumnParallelLinear(own("output.weight"), gather_output=True)
    model.norm.weight = torch.nn.Parameter(own("norm.weight"), requires_grad=False)
    for i, layer in enumerate(model.layers):
        prefix, attention, ff = f"layers.{i}.", layer.attention, layer.feed_forward
        for name in ("wq", "wk", "wv"):
            setattr(attention, name, ColumnParallelLinear(own(f"{prefix}attention.{name}.weight")))
        attention.wo = RowParallelLinear(own(f"{prefix}attention.wo.weight"))
        attention.n_heads, attention.n_kv_heads = args.n_heads // world, args.kv_heads // world
        ff.w1, ff.w3 = (ColumnParallelLinear(own(f"{prefix}feed_forward.{n}.weight")) for n in ("w1", "w3"))
        ff.w2 = RowParallelLinear(own(f"{prefix}feed_forward.w2.weight"))
        for norm in ("attention_norm", "ffn_norm"):
            getattr(layer, norm).weight = torch.nn.Parameter(own(f"{prefix}{norm}.weight"), requires_grad=False)
    model.reset_rope_tables(device or "cpu")
    return model.eval()


def local_weight_bytes(model: torch.nn.Module) -> dict[str, int]:
    """Bytes of this rank's weights: the sliced matrices, and the replicated norms apart."""
    sliced = sum(p.nbytes for n, p in model.named_parameters() if not n.endswith("norm.weight"))
    norms = sum(p.nbytes for n, p in model.named_parameters() if n.endswith("norm.weight"))
    return {"sliced": sliced, "replicated": norms}
