"""Meta's checkpoint format: `params.json` + `consolidated.00.pth`, `consolidated.01.pth`, ...

This is what Meta's download script gives (`llama-2-7b/`, `llama-2-7b-chat/`, ...). The
.pth files hold Meta's parameter names (ours) in bfloat16, one file per model-parallel
rank: 1 for 7B, 2 for 13B, 8 for 70B. Each rank holds a slice of every large matrix,
cut along the dimension that Meta's parallel layers split:

    dim 0 (output rows):  wq, wk, wv, w1, w3, output          (ColumnParallelLinear)
    dim 1 (input columns): wo, w2, tok_embeddings             (RowParallelLinear, ParallelEmbedding)
    replicated:            attention_norm, ffn_norm, norm     (every rank has all of it)
    ignored:               rope.freqs (recomputed from the config)

`params.json` for 7B is `{"dim": 4096, "multiple_of": 256, "n_heads": 32, "n_layers": 32,
"norm_eps": 1e-05, "vocab_size": -1}`: no n_kv_heads (7B and 13B use one KV head per query
head), and vocab_size -1 (Meta takes it from the tokenizer; we take it from the
embedding's shape). Not handled: Meta's int8/int4 exports, LLaMA 3's params.json extras.

Chapter: real_weights.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from llama_from_scratch.checkpoints.assign import check_shapes, finish, put_tensor
from llama_from_scratch.checkpoints.errors import CheckpointError
from llama_from_scratch.checkpoints.model_parallel import IGNORED, merged_shapes, shard_dim, shard_state_dict
from llama_from_scratch.checkpoints.safe_load import torch_load
from llama_from_scratch.model.config import ModelArgs
from llama_from_scratch.model.feedforward import llama_hidden_dim
from llama_from_scratch.model.parameters import empty_model
from llama_from_scratch.model.rope import inverse_frequencies
from llama_from_scratch.model.transformer import Transformer

SHARD_PATTERN = re.compile(r"consolidated\.(\d+)\.pth")


def params_to_args(params: dict, vocab_size: int, max_seq_len: int = 4096) -> ModelArgs:
    """ModelArgs from a params.json dict; `vocab_size` replaces its -1.

    A key this loader does not know (LLaMA 3.1's "use_scaled_rope", for one) would change
    the model in a way it does not implement, so it is an error, not silently ignored.
    """
    known = {"dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of",
             "ffn_dim_multiplier", "norm_eps", "rope_theta", "hidden_dim"}
    unknown = sorted(set(params) - known - {"max_seq_len", "max_batch_size"})  # Meta's runtime settings
    if unknown:
        raise CheckpointError(f"params.json has settings this loader does not handle: {unknown}; "
                              "only LLaMA 2's architecture (and CodeLlama's rope_theta) is implemented")
    fields = {k: v for k, v in params.items() if k in known}
    fields["vocab_size"] = vocab_size if params.get("vocab_size", -1) in (-1, None) else params["vocab_size"]
    return ModelArgs(**fields, max_seq_len=params.get("max_seq_len", max_seq_len))


def args_to_params(args: ModelArgs) -> dict:
    """A params.json dict in Meta's style (vocab_size -1, n_kv_heads only when it differs).

    Meta's format has no field for the feed-forward size: it follows from multiple_of and
    ffn_dim_multiplier. When those do not give `args.ffn_hidden_dim` (a model read from
    Hugging Face's intermediate_size), a power-of-two multiple_of that does is searched
    for; failing that, an extra "hidden_dim" key says it (Meta's code would reject it;
    ours reads it).
    """
    multiple_of, multiplier = args.multiple_of, args.ffn_dim_multiplier
    if llama_hidden_dim(args.dim, multiple_of, multiplier) != args.ffn_hidden_dim:
        # Recover Meta's rounding, largest multiple first (7B: 11008 = 256 x 43).
        fits = [2 ** p for p in range(12, -1, -1) if llama_hidden_dim(args.dim, 2 ** p, None) == args.ffn_hidden_dim]
        if fits:
            multiple_of, multiplier = fits[0], None
    params: dict = {"dim": args.dim, "multiple_of": multiple_of, "n_heads": args.n_heads,
                    "n_layers": args.n_layers, "norm_eps": args.norm_eps, "vocab_size": -1}
    if multiplier is not None:
        params["ffn_dim_multiplier"] = multiplier
    if args.kv_heads != args.n_heads:
        params["n_kv_heads"] = args.kv_heads
    if args.rope_theta != 10000.0:
        params["rope_theta"] = args.rope_theta
    if llama_hidden_dim(args.dim, multiple_of, multiplier) != args.ffn_hidden_dim:
        params["hidden_dim"] = args.ffn_hidden_dim
    return params


def shard_paths(directory: str | Path) -> list[Path]:
    """consolidated.NN.pth files in rank order; a gap in the numbering names the missing file."""
    directory = Path(directory)
    found = sorted((int(m.group(1)), p) for p in directory.iterdir() if (m := SHARD_PATTERN.fullmatch(p.name)))
    if not found:
        raise CheckpointError(f"{directory} has params.json but no consolidated.00.pth")
    for expect, (rank, _) in enumerate(found):
        if rank != expect:
            raise CheckpointError(f"{directory}: shard consolidated.{expect:02d}.pth is missing "
                                  f"(found {', '.join(p.name for _, p in found)})")
    return [p for _, p in found]


def read_meta_args(directory: str | Path, max_seq_len: int = 4096) -> ModelArgs:
    """The architecture of a Meta checkpoint: params.json, vocab_size from the embedding."""
    directory = Path(directory)
    params = json.loads((directory / "params.json").read_text())
    first = torch_load(shard_paths(directory)[0])  # memory-mapped: reads no tensor data
    if "tok_embeddings.weight" not in first:
        raise CheckpointError(f"{directory}: consolidated.00.pth has no tok_embeddings.weight")
    return params_to_args(params, first["tok_embeddings.weight"].shape[0], max_seq_len)


def load_meta(directory: str | Path, device: torch.device | str | None = None,
              dtype: torch.dtype | None = None, max_seq_len: int = 4096,
              progress: bool = False) -> Transformer:
    """A `Transformer` (eval mode) from Meta's format, in the stored dtype unless `dtype`.

    One shard: every tensor is memory-mapped and assigned, not copied (when `device` and
    `dtype` match the file). Several shards: each merged tensor is allocated once on
    `device` and filled shard by shard, so at most one shard's pages are mapped at a time.
    Every key and merged shape is checked before anything is loaded.
    """
    from tqdm.auto import tqdm

    directory = Path(directory)
    paths = shard_paths(directory)
    args = read_meta_args(directory, max_seq_len)
    shards = [torch_load(p) for p in paths]  # memory-mapped: shapes only, until touched
    shapes = check_shards(directory, paths, shards, args)
    model = empty_model(args)
    bar = tqdm(total=len(shapes) * len(paths), desc="loading", unit="tensor",
               disable=not progress)
    if len(shards) == 1:
        for key, tensor in shards[0].items():
            if key not in IGNORED:
                put_tensor(model, key, tensor, device, dtype)
                bar.update()
    else:
        merged = {k: torch.empty(s, dtype=dtype or shards[0][k].dtype, device=device)
                  for k, s in shapes.items()}
        offsets = dict.fromkeys(shapes, 0)
        for rank in range(len(shards)):
            shard = shards[rank]
            shards[rank] = None  # dropping the last reference unmaps the file
            for key, dim in ((k, shard_dim(k)) for k in shapes):
                part = shard[key]
                if dim is None:
                    if rank == 0:
                        merged[key].copy_(part)
                    elif not torch.equal(part.to(merged[key]), merged[key]):
                        raise CheckpointError(f"{key} should be replicated but "
                                              f"{paths[rank]} differs from rank 0")
                else:
                    merged[key].narrow(dim, offsets[key], part.shape[dim]).copy_(part)
                    offsets[key] += part.shape[dim]
                bar.update()
            del shard, part  # this shard's file is unmapped here: its pages leave memory
        for key, tensor in merged.items():
            put_tensor(model, key, tensor)
    bar.close()
    return finish(model, device)


def check_shards(directory: Path, paths: list[Path], shards: list[dict[str, torch.Tensor]],
                 args: ModelArgs) -> dict[str, tuple[int, ...]]:
    """The merged shape of every tensor, after checking that the shards hold the same keys, that
    none is missing, and that keys and merged shapes are what `args` needs (no data is read)."""
    shapes = merged_shapes(shards)
    for rank, shard in enumerate(shards[1:], start=1):
        if set(shard) != set(shards[0]):
            diff = sorted(set(shard) ^ set(shards[0]))
            raise CheckpointError(f"{paths[rank]} and {paths[0]} hold different keys: "
                                  f"{diff[:8]}")
    _check_shard_count(shapes, args, directory, len(paths))
    check_shapes(shapes, args, f"{directory} ({len(paths)} shard(s))")
    return shapes


def _check_shard_count(shapes: dict[str, tuple[int, ...]], args: ModelArgs, directory: Path, n: int) -> None:
    """Merged wq rows that are a fraction of n_heads * head_dim mean the last shards are missing."""
    rows = shapes.get("layers.0.attention.wq.weight", (0,))[0]
    want = args.n_heads * args.head_dim
    if 0 < rows < want and want % rows == 0:
        total = n * want // rows
        names = (f"consolidated.{n:02d}.pth is" if total == n + 1 else
                 f"consolidated.{n:02d}.pth to consolidated.{total - 1:02d}.pth are")
        raise CheckpointError(f"{directory} has {n} shard(s) but params.json implies {total}: wq has {rows} of "
                              f"{want} rows; {names} missing")


def save_meta(model: Transformer, directory: str | Path, n_shards: int = 1,
              dtype: torch.dtype | None = None) -> list[Path]:
    """Write `model` in Meta's format, split into `n_shards` model-parallel ranks.

    One shard at a time is gathered on the CPU and written, so a model on a GPU needs only
    one shard's worth of RAM. Like Meta's files, every shard holds `rope.freqs`
    (head_dim/2 inverse frequencies). Returns the written .pth paths.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    args = model.args
    state = model.state_dict()
    inv_freq = inverse_frequencies(args.head_dim, args.rope_theta)  # (head_dim/2,) float32
    (directory / "params.json").write_text(json.dumps(args_to_params(args)) + "\n")
    paths = []
    for rank in range(n_shards):
        shard = shard_state_dict(state, rank, n_shards, dtype)
        shard["rope.freqs"] = inv_freq.to(shard["norm.weight"].dtype)  # (head_dim/2,)
        path = directory / f"consolidated.{rank:02d}.pth"
        torch.save(shard, path)
        paths.append(path)
        del shard
    return paths
