"""Each part of the model against an independent reference (HF transformers, Meta's complex RoPE, PyTorch)."""

import pytest
import torch
from transformers import LlamaConfig
from transformers.models.llama import modeling_llama as hf_llama

from llama_from_scratch.checkpoints.hf_config import to_hf_config
from llama_from_scratch.model.attention import Attention, attend_explicit, attend_sdpa, repeat_kv
from llama_from_scratch.model.config import PRESETS, ModelArgs, preset
from llama_from_scratch.model.feedforward import FeedForward, llama_hidden_dim
from llama_from_scratch.model.parameters import count_parameters, parameter_breakdown
from llama_from_scratch.model.rmsnorm import RMSNorm
from llama_from_scratch.model.rope import (apply_rope, apply_rope_complex, apply_rope_rotate_half,
                                           permute_to_adjacent, permute_to_rotate_half, precompute_freqs)

ATOL = RTOL = 1e-5


# --- config ---------------------------------------------------------------------------------

def test_presets_match_meta_params_json_and_parameter_counts():
    assert count_parameters(PRESETS["7B"]) == 6_738_415_616
    assert count_parameters(PRESETS["13B"]) == 13_015_864_320
    assert count_parameters(PRESETS["70B"]) == 68_976_648_192
    assert [PRESETS[n].ffn_hidden_dim for n in ("7B", "13B", "70B")] == [11008, 13824, 28672]
    assert PRESETS["70B"].kv_heads == 8 and PRESETS["7B"].kv_heads == 32


def test_parameter_breakdown_sums_to_count_and_tied_output_counted_once():
    for name in ("7B", "70B", "stories260K"):
        parts = parameter_breakdown(PRESETS[name])
        assert sum(parts.values()) == count_parameters(PRESETS[name])
    assert parameter_breakdown(PRESETS["stories260K"])["output"] == 0
    # 7B by hand: 32 layers x (4 * 4096^2 attention + 3 * 4096 * 11008 feed-forward)
    assert parameter_breakdown(PRESETS["7B"])["attention"] == 32 * 4 * 4096 * 4096
    assert parameter_breakdown(PRESETS["7B"])["feed_forward"] == 32 * 3 * 4096 * 11008


def test_hidden_dim_rule_and_explicit_override():
    assert llama_hidden_dim(64, 32) == 192  # int(2 * 256 / 3) = 170 -> rounded up to 192
    assert preset("tiny", hidden_dim=172).ffn_hidden_dim == 172
    assert PRESETS["stories260K"].ffn_hidden_dim == 172


@pytest.mark.parametrize("kwargs, words", [
    (dict(dim=100, n_heads=8), ["dim=100", "n_heads=8"]),
    (dict(dim=64, n_heads=8, n_kv_heads=3), ["n_heads=8", "n_kv_heads=3"]),
    (dict(dim=64, n_heads=8, n_kv_heads=0), ["n_kv_heads=0"]),
    (dict(dim=24, n_heads=8), ["odd"]),
])
def test_bad_config_errors_say_what_is_wrong(kwargs, words):
    with pytest.raises(ValueError) as err:
        ModelArgs(**kwargs)
    for w in words:
        assert w in str(err.value)


# --- RMSNorm --------------------------------------------------------------------------------

def test_rmsnorm_equals_hf_and_torch():
    torch.manual_seed(0)
    norm = RMSNorm(48, eps=1e-5)
    torch.nn.init.normal_(norm.weight)
    ref = hf_llama.LlamaRMSNorm(48, eps=1e-5)
    ref.weight.data.copy_(norm.weight.data)
    x = torch.randn(3, 5, 48) * 4
    torch.testing.assert_close(norm(x), ref(x), atol=ATOL, rtol=RTOL)
    if hasattr(torch.nn, "RMSNorm"):
        tn = torch.nn.RMSNorm(48, eps=1e-5)
        tn.weight.data.copy_(norm.weight.data)
        torch.testing.assert_close(norm(x), tn(x), atol=ATOL, rtol=RTOL)


def test_rmsnorm_computes_in_float32_for_half_inputs():
    torch.manual_seed(0)
    norm = RMSNorm(16).to(torch.bfloat16)
    x = (torch.randn(4, 16) * 300).to(torch.bfloat16)  # squares of these lose digits in bf16
    out = norm(x)
    assert out.dtype == torch.bfloat16
    x64 = x.double()
    want = (x64 / torch.sqrt(x64.pow(2).mean(-1, keepdim=True) + 1e-5)).to(torch.bfloat16)
    assert torch.equal(out, want)


# --- SwiGLU ---------------------------------------------------------------------------------

def test_feedforward_equals_hf_llama_mlp():
    torch.manual_seed(0)
    ff = FeedForward(32, 80)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=80, hidden_act="silu")
    ref = hf_llama.LlamaMLP(cfg)
    ref.gate_proj.weight.data.copy_(ff.w1.weight.data)
    ref.down_proj.weight.data.copy_(ff.w2.weight.data)
    ref.up_proj.weight.data.copy_(ff.w3.weight.data)
    x = torch.randn(2, 7, 32)
    torch.testing.assert_close(ff(x), ref(x), atol=ATOL, rtol=RTOL)


# --- RoPE -----------------------------------------------------------------------------------

def meta_rope_complex(x, theta, start=0):
    """Meta's llama/model.py: precompute_freqs_cis + apply_rotary_emb, with complex numbers.

    x: (batch, seq, heads, head_dim), Meta's layout."""
    head_dim, seq = x.shape[-1], x.shape[1]
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim))
    t = torch.arange(start, start + seq).float()
    freqs_cis = torch.polar(torch.ones(seq, head_dim // 2), torch.outer(t, freqs))
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * freqs_cis[None, :, None, :]).flatten(3)


@pytest.mark.parametrize("theta", [10000.0, 500000.0])
def test_rope_adjacent_equals_meta_complex(theta):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 16)  # (batch, heads, seq, head_dim)
    cos, sin = precompute_freqs(16, 32, theta)
    want = meta_rope_complex(x.transpose(1, 2), theta, start=4).transpose(1, 2)
    torch.testing.assert_close(apply_rope(x, cos[4:13], sin[4:13]), want, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(apply_rope_complex(x, cos[4:13], sin[4:13]), want, atol=ATOL, rtol=RTOL)
    y = x.to(torch.bfloat16)
    assert apply_rope_complex(y, cos[4:13], sin[4:13]).dtype == torch.bfloat16


def test_rope_rotate_half_equals_hf():
    torch.manual_seed(0)
    head_dim, seq = 16, 11
    cfg = LlamaConfig(hidden_size=64, num_attention_heads=4, rope_theta=10000.0, max_position_embeddings=64)
    rotary = hf_llama.LlamaRotaryEmbedding(cfg)
    x = torch.randn(2, 4, seq, head_dim)  # (batch, heads, seq, head_dim)
    pos = torch.arange(seq)[None]
    hf_cos, hf_sin = rotary(x, pos)  # (1, seq, head_dim)
    cos, sin = precompute_freqs(head_dim, seq)
    torch.testing.assert_close(torch.cat([cos, cos], -1), hf_cos[0], atol=ATOL, rtol=RTOL)
    q_hf, _ = hf_llama.apply_rotary_pos_emb(x, x, hf_cos, hf_sin)
    torch.testing.assert_close(apply_rope_rotate_half(x, cos, sin), q_hf, atol=ATOL, rtol=RTOL)


def test_rope_conventions_equal_through_the_weight_permutation():
    torch.manual_seed(0)
    dim, n_heads, head_dim, seq = 32, 4, 8, 10
    wq, wk = torch.randn(dim, dim), torch.randn(dim // 2, dim)  # wk: 2 KV heads (GQA)
    x = torch.randn(1, seq, dim)
    cos, sin = precompute_freqs(head_dim, seq)

    def scores(q_w, k_w, rope):
        q = rope((x @ q_w.T).view(1, seq, n_heads, head_dim).transpose(1, 2), cos, sin)  # (1, heads, seq, hd)
        k = rope((x @ k_w.T).view(1, seq, 2, head_dim).transpose(1, 2), cos, sin)  # (1, 2, seq, hd)
        return q @ repeat_kv(k, 2).transpose(-2, -1)  # (1, heads, seq, seq)

    meta = scores(wq, wk, apply_rope)
    hf = scores(permute_to_rotate_half(wq, n_heads), permute_to_rotate_half(wk, 2), apply_rope_rotate_half)
    torch.testing.assert_close(meta, hf, atol=1e-4, rtol=RTOL)
    # Without the permutation the conventions disagree: the test can fail.
    assert not torch.allclose(meta, scores(wq, wk, apply_rope_rotate_half), atol=1e-2)
    assert torch.equal(permute_to_adjacent(permute_to_rotate_half(wq, n_heads), n_heads), wq)


def test_rope_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)
    cos, sin = precompute_freqs(16, 64)
    def score(m, n):
        return (apply_rope(q, cos[m:m + 1], sin[m:m + 1]) * apply_rope(k, cos[n:n + 1], sin[n:n + 1])).sum()
    torch.testing.assert_close(score(5, 2), score(45, 42), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(score(5, 2), score(5, 3), atol=1e-3)


# --- attention ------------------------------------------------------------------------------

def test_repeat_kv_equals_repeat_interleave():
    x = torch.randn(2, 3, 5, 4)
    assert torch.equal(repeat_kv(x, 4), torch.repeat_interleave(x, 4, dim=1))


@pytest.mark.parametrize("n_kv_heads", [8, 2, 1])  # MHA, GQA, MQA
@pytest.mark.parametrize("q_len, kv_len", [(7, 7), (1, 9), (3, 9)])
def test_explicit_attention_equals_sdpa(n_kv_heads, q_len, kv_len):
    torch.manual_seed(0)
    q = torch.randn(2, 8, q_len, 16)
    k, v = torch.randn(2, n_kv_heads, kv_len, 16), torch.randn(2, n_kv_heads, kv_len, 16)
    torch.testing.assert_close(attend_explicit(q, k, v), attend_sdpa(q, k, v), atol=ATOL, rtol=RTOL)


def test_attention_equals_hf_llama_attention():
    torch.manual_seed(0)
    args = ModelArgs(dim=64, n_layers=1, n_heads=8, n_kv_heads=2, vocab_size=16, max_seq_len=32)
    attn = Attention(args)
    cfg = to_hf_config(args)
    cfg._attn_implementation = "eager"
    ref = hf_llama.LlamaAttention(cfg, layer_idx=0)
    for ours, theirs, heads in [("wq", "q_proj", 8), ("wk", "k_proj", 2), ("wv", "v_proj", None), ("wo", "o_proj", None)]:
        w = getattr(attn, ours).weight.data
        getattr(ref, theirs).weight.data.copy_(permute_to_rotate_half(w, heads) if heads else w)
    x = torch.randn(3, 12, 64)
    cos, sin = precompute_freqs(8, 12)
    hf_cos, hf_sin = torch.cat([cos, cos], -1)[None], torch.cat([sin, sin], -1)[None]
    mask = torch.full((12, 12), float("-inf")).triu(1)[None, None]
    want, _ = ref(x, position_embeddings=(hf_cos, hf_sin), attention_mask=mask)
    for use_sdpa in (True, False):
        attn.use_sdpa = use_sdpa
        torch.testing.assert_close(attn(x, cos, sin), want, atol=ATOL, rtol=RTOL)


def test_rope_tables_stay_float32_in_a_bfloat16_model():
    from llama_from_scratch.model.transformer import Transformer
    torch.manual_seed(0)
    model = Transformer(preset("tiny")).eval()
    tokens = torch.randint(0, 512, (2, 20))
    with torch.no_grad():
        want = model(tokens)
        half = model.to(torch.bfloat16)
        got = half(tokens)
    assert half.freqs_cos.dtype == torch.float32 and half.tok_embeddings.weight.dtype == torch.bfloat16
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=0.1, rtol=0.05)  # bfloat16 weights: a few digits
