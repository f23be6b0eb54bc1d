"""Meta's model-parallel layout (`checkpoints.model_parallel`), on its own, without files.

References: slices cut here with `Tensor.chunk` along the dimensions of Meta's parallel
layers (ColumnParallelLinear, RowParallelLinear, ParallelEmbedding in fairscale, which
llama/model.py uses), and the defining property of that layout: each rank computes its part
of attention and the feed-forward from its own slices, and the ranks' outputs, summed
(row-parallel) or concatenated (column-parallel), equal the unsplit layer's.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from model_fixtures import randomised

from llama_from_scratch.checkpoints.assign import load_state_dict_into
from llama_from_scratch.checkpoints.errors import CheckpointError
from llama_from_scratch.checkpoints.model_parallel import (IGNORED, merge_shards, merged_shapes, shard_dim,
                                                           shard_state_dict, split_state_dict)
from llama_from_scratch.model.config import ModelArgs

# Grouped-query attention (8 query heads, 4 KV heads) whose every split dimension divides by 4.
GQA = ModelArgs(dim=64, n_layers=2, n_heads=8, n_kv_heads=4, vocab_size=96, hidden_dim=96, max_seq_len=32)
KINDS = {  # every key kind of a LLaMA 2 state dict -> Meta's split dimension
    "tok_embeddings.weight": 1, "norm.weight": None, "output.weight": 0,
    "layers.7.attention.wq.weight": 0, "layers.7.attention.wk.weight": 0, "layers.7.attention.wv.weight": 0,
    "layers.7.attention.wo.weight": 1, "layers.7.feed_forward.w1.weight": 0,
    "layers.7.feed_forward.w2.weight": 1, "layers.7.feed_forward.w3.weight": 0,
    "layers.7.attention_norm.weight": None, "layers.7.ffn_norm.weight": None,
}


@pytest.fixture(scope="module")
def model():
    return randomised(GQA)


def test_shard_dim_for_every_key_kind(model):
    assert {k: shard_dim(k) for k in KINDS} == KINDS
    by_kind = {k.split(".")[-2]: d for k, d in KINDS.items()}  # "wq" -> 0, "ffn_norm" -> None, ...
    state = model.state_dict()
    assert {k.split(".")[-2] for k in state} == set(by_kind)  # the table covers every kind
    assert all(shard_dim(k) == by_kind[k.split(".")[-2]] for k in state)


def expected_shard_shape(key: str, args: ModelArgs, n: int) -> tuple[int, ...]:
    """Each rank's shape, written out from Meta's layer classes (not from `shard_dim`)."""
    hd, kind = args.head_dim, key.split(".")[-2]
    return {
        "tok_embeddings": (args.vocab_size, args.dim // n),  # ParallelEmbedding: features cut
        "output": (args.vocab_size // n, args.dim),  # ColumnParallelLinear: output rows cut
        "wq": (args.n_heads * hd // n, args.dim), "wk": (args.kv_heads * hd // n, args.dim),
        "wv": (args.kv_heads * hd // n, args.dim), "wo": (args.dim, args.n_heads * hd // n),
        "w1": (args.ffn_hidden_dim // n, args.dim), "w3": (args.ffn_hidden_dim // n, args.dim),
        "w2": (args.dim, args.ffn_hidden_dim // n),  # RowParallelLinear: input columns cut
    }.get(kind, (args.dim,))  # the RMSNorm weights: replicated


@pytest.mark.parametrize("n", [1, 2, 4])
def test_split_then_merge_is_the_identity(model, n):
    state = model.state_dict()
    shards = split_state_dict(state, n)
    assert len(shards) == n
    for rank, shard in enumerate(shards):
        assert shard.keys() == state.keys()
        for key, part in shard.items():
            assert part.shape == expected_shard_shape(key, GQA, n), (key, rank)
            dim = shard_dim(key)
            want = state[key] if dim is None else state[key].chunk(n, dim=dim)[rank]
            assert torch.equal(part, want), (key, rank)
            assert part.untyped_storage().nbytes() == part.nbytes  # its own memory, as torch.save needs
    merged = merge_shards(shards)
    assert merged.keys() == state.keys()
    for key in state:
        assert merged[key].dtype == state[key].dtype and torch.equal(merged[key], state[key]), key
    assert merged_shapes(shards) == {k: tuple(v.shape) for k, v in merged.items()}


def test_shard_state_dict_converts_dtype_on_the_cpu(model):
    part = shard_state_dict(model.state_dict(), 1, 2, dtype=torch.bfloat16)
    assert {t.dtype for t in part.values()} == {torch.bfloat16}
    assert {t.device.type for t in part.values()} == {"cpu"}
    wq = model.state_dict()["layers.0.attention.wq.weight"]
    assert torch.equal(part["layers.0.attention.wq.weight"], wq[wq.shape[0] // 2:].to(torch.bfloat16))


def test_merge_ignores_metas_rope_freqs(model):
    shards = split_state_dict(model.state_dict(), 2)
    for shard in shards:
        shard["rope.freqs"] = torch.arange(GQA.head_dim // 2, dtype=torch.float32)  # as Meta's files hold it
    assert IGNORED == {"rope.freqs"}
    assert "rope.freqs" not in merge_shards(shards) and "rope.freqs" not in merged_shapes(shards)


def test_an_uneven_split_is_refused_with_a_clear_error(model):
    with pytest.raises(ValueError, match=r"cannot be split into 3 equal parts along dim"):
        shard_state_dict(model.state_dict(), 0, 3)  # dim 64 (and 8 heads) do not divide by 3


def test_replicated_norms_that_differ_are_refused(model):
    shards = split_state_dict(model.state_dict(), 2)
    shards[1]["layers.1.ffn_norm.weight"] = shards[1]["layers.1.ffn_norm.weight"] + 1e-3
    with pytest.raises(CheckpointError, match=r"layers\.1\.ffn_norm\.weight should be the same on every "
                                              r"shard but rank 1 differs"):
        merge_shards(shards)


@pytest.mark.parametrize("n", [1, 2, 4])
def test_a_model_built_from_merged_shards_gives_the_same_logits(model, n):
    merged = merge_shards(split_state_dict(model.state_dict(), n))
    rebuilt = load_state_dict_into(GQA, merged, f"{n} merged shards")
    tokens = torch.randint(0, GQA.vocab_size, (3, 17), generator=torch.Generator().manual_seed(n))
    with torch.inference_mode():
        assert torch.equal(rebuilt(tokens), model(tokens))


@pytest.mark.parametrize("n", [2, 4])
def test_each_rank_computes_its_part_from_its_own_slices(model, n):
    """What makes the layout right: Meta's parallel layers, rank by rank, on the shards.

    Attention: rank r holds heads r*H/n .. (its wq/wk/wv rows) and the matching columns of
    wo; the ranks' outputs summed are the full attention. Feed-forward: the same with
    w1/w3 rows and w2 columns. Embedding: the ranks' feature slices concatenated; output:
    the ranks' vocabulary rows of logits concatenated.
    """
    shards = split_state_dict(model.state_dict(), n)
    layer = model.layers[1]
    x = torch.randn(2, 9, GQA.dim, generator=torch.Generator().manual_seed(0))  # (batch, seq, dim)
    cos, sin = model.freqs_cos[:9], model.freqs_sin[:9]  # (seq, head_dim/2)
    attn_sum, ffn_sum = torch.zeros_like(x), torch.zeros_like(x)
    for shard in shards:
        part = copy.deepcopy(layer.attention)
        part.n_heads, part.n_kv_heads = GQA.n_heads // n, GQA.kv_heads // n
        for name in ("wq", "wk", "wv", "wo"):
            getattr(part, name).weight = nn.Parameter(shard[f"layers.1.attention.{name}.weight"])
        ffn = copy.deepcopy(layer.feed_forward)
        for name in ("w1", "w2", "w3"):
            getattr(ffn, name).weight = nn.Parameter(shard[f"layers.1.feed_forward.{name}.weight"])
        with torch.inference_mode():
            attn_sum += part(x, cos, sin)  # (batch, seq, dim): a partial sum
            ffn_sum += ffn(x)
    tokens = torch.randint(0, GQA.vocab_size, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        torch.testing.assert_close(attn_sum, layer.attention(x, cos, sin), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ffn_sum, layer.feed_forward(x), atol=1e-5, rtol=1e-5)
        embedded = torch.cat([F.embedding(tokens, s["tok_embeddings.weight"]) for s in shards], dim=-1)
        assert torch.equal(embedded, model.tok_embeddings(tokens))
        logits = torch.cat([F.linear(x, s["output.weight"]) for s in shards], dim=-1)  # (batch, seq, vocab)
        assert torch.equal(logits, model.output(x))
