"""The decoder's contract for training and alignment: RoPE buffers, init_weights, hidden_states.

References: `precompute_freqs` / Meta's inverse-frequency formula in float64 for the tables,
the GPT-2 / nanoGPT init scheme re-drawn by hand from the same generator, and a forward hook
on `model.output` for the hidden states.
"""

import math

import pytest
import torch
import torch.nn as nn

from llama_from_scratch.checkpoints import meta_format
from llama_from_scratch.checkpoints.hf_reference import to_hf_model
from llama_from_scratch.model.config import preset
from llama_from_scratch.model.parameters import empty_model
from llama_from_scratch.model.rmsnorm import RMSNorm
from llama_from_scratch.model.rope import inverse_frequencies, precompute_freqs
from llama_from_scratch.model.transformer import Transformer
from model_fixtures import randomised

TINY = preset("tiny")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _tables(args):
    return precompute_freqs(args.head_dim, args.max_seq_len, args.rope_theta)


def _assert_tables_exact(model, device="cpu"):
    cos, sin = _tables(model.args)
    for got, want in ((model.freqs_cos, cos), (model.freqs_sin, sin)):
        assert got.dtype == torch.float32 and got.device.type == torch.device(device).type
        assert torch.equal(got.cpu(), want)


# --- RoPE tables: non-persistent float32 buffers ----------------------------------------------

def test_rope_tables_are_buffers_but_not_in_the_state_dict():
    model = Transformer(TINY)
    assert {"freqs_cos", "freqs_sin"} <= dict(model.named_buffers()).keys()
    assert not any("freqs" in k for k in model.state_dict())
    fresh = Transformer(TINY)
    fresh.load_state_dict(model.state_dict(), strict=True)  # nothing missing, nothing unexpected
    _assert_tables_exact(fresh)


@pytest.mark.parametrize("cast", [lambda m: m.to(torch.bfloat16), lambda m: m.half(),
                                  lambda m: m.to(dtype=torch.float64)], ids=["bfloat16", "half", "float64"])
def test_casting_the_model_keeps_the_tables_float32_and_exact(cast):
    model = cast(Transformer(TINY))
    assert model.tok_embeddings.weight.dtype != torch.float32
    _assert_tables_exact(model)


def test_a_parent_module_cast_keeps_the_tables_float32():
    """A reward model or value head wraps the decoder: the parent's .to() reaches it too."""
    wrapper = nn.ModuleDict({"body": Transformer(TINY), "head": nn.Linear(TINY.dim, 1)})
    wrapper.to(torch.bfloat16)
    assert wrapper["head"].weight.dtype == torch.bfloat16
    _assert_tables_exact(wrapper["body"])


def test_tables_follow_the_model_to_another_device():
    model = Transformer(TINY).to("meta")
    assert model.freqs_cos.is_meta and model.freqs_sin.is_meta
    model.to_empty(device="cpu")
    _assert_tables_exact(model)


def test_meta_construction_then_to_empty_recomputes_the_tables():
    model = empty_model(TINY)
    assert model.freqs_cos.is_meta and model.tok_embeddings.weight.is_meta
    model.to_empty(device="cpu")  # allocates without initialising: the tables would be garbage
    _assert_tables_exact(model)
    model.init_weights(torch.Generator().manual_seed(0))
    assert torch.isfinite(model(torch.randint(0, TINY.vocab_size, (1, 8)))).all()


def test_forward_changes_no_state():
    torch.manual_seed(0)
    model = Transformer(TINY).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    buffers = {k: (v.data_ptr(), v.clone()) for k, v in model.named_buffers()}
    tokens = torch.randint(0, TINY.vocab_size, (2, 10))
    with torch.no_grad():
        model(tokens)
        cache = model.new_cache(2)
        model(tokens, 0, cache)
        model(tokens[:, :1], 10, cache, last_only=True)
        model.hidden_states(tokens)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    for name, tensor in model.named_buffers():
        assert tensor.data_ptr() == buffers[name][0] and torch.equal(tensor, buffers[name][1])


@cuda
def test_tables_move_to_the_gpu_and_stay_float32():
    model = Transformer(TINY).to("cuda", torch.bfloat16)
    _assert_tables_exact(model, "cuda")
    assert model(torch.randint(0, TINY.vocab_size, (1, 8), device="cuda")).device.type == "cuda"
    _assert_tables_exact(model.cpu())


# --- inverse frequencies: one definition --------------------------------------------------------

@pytest.mark.parametrize("head_dim,theta", [(128, 10000.0), (8, 10000.0), (128, 1e6)])
def test_inverse_frequencies_are_metas_formula(head_dim, theta):
    got = inverse_frequencies(head_dim, theta)
    exact = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    assert got.shape == (head_dim // 2,) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), exact, rtol=2e-6, atol=0)  # float32 rounding only
    cos, sin = precompute_freqs(head_dim, 3, theta)  # row 1 is position 1: the angles themselves
    assert torch.equal(cos[1], got.cos()) and torch.equal(sin[1], got.sin())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_save_meta_writes_the_same_inverse_frequencies(tmp_path, dtype):
    args = preset("tiny", rope_theta=1e6)
    meta_format.save_meta(Transformer(args).to(dtype), tmp_path, n_shards=2)
    for rank in range(2):
        stored = torch.load(tmp_path / f"consolidated.0{rank}.pth", weights_only=True)["rope.freqs"]
        assert stored.dtype == dtype
        assert torch.equal(stored, inverse_frequencies(args.head_dim, 1e6).to(dtype))


# --- init_weights ------------------------------------------------------------------------------

BIG = preset("tiny", dim=256, n_layers=4, n_heads=4, n_kv_heads=2, vocab_size=4096, hidden_dim=512)


def _kind(name: str) -> str:
    if name.endswith(("attention.wo.weight", "feed_forward.w2.weight")):
        return "residual"
    return "norm" if name.endswith("norm.weight") else "matrix"


def test_init_weights_statistics_per_kind():
    torch.manual_seed(0)
    model = Transformer(BIG)
    want = {"matrix": 0.02, "residual": 0.02 / math.sqrt(2 * BIG.n_layers)}
    kinds = {"matrix": [], "residual": [], "norm": []}
    for name, p in model.named_parameters():
        kinds[_kind(name)].append(p.detach().flatten())
    assert all(torch.equal(w, torch.ones_like(w)) for w in kinds["norm"])  # exactly 1
    for kind, std in want.items():
        values = torch.cat(kinds[kind]).double()
        assert abs(values.mean().item()) < 5 * std / values.numel() ** 0.5, kind
        assert values.std().item() == pytest.approx(std, rel=0.02), kind
    for name, p in model.named_parameters():  # every tensor, not only the pooled ones
        if _kind(name) != "norm":
            assert p.std().item() == pytest.approx(want[_kind(name)], rel=0.15), name


def test_init_weights_draws_each_matrix_once_in_order_from_the_generator():
    """Re-draw the scheme by hand: N(0, 0.02), residual projections N(0, 0.02/sqrt(2L)),
    norms 1; a tied output matrix is the embedding and takes no draw of its own."""
    for args in (TINY, preset("stories260K")):
        model = Transformer(args)
        model.init_weights(torch.Generator().manual_seed(123))
        g = torch.Generator().manual_seed(123)
        for name, p in model.named_parameters():  # a tied output.weight is not listed again
            if _kind(name) == "norm":
                assert torch.equal(p, torch.ones_like(p)), name
                continue
            std = 0.02 / math.sqrt(2 * args.n_layers) if _kind(name) == "residual" else 0.02
            assert torch.equal(p, torch.empty(p.shape).normal_(0.0, std, generator=g)), name
        if args.tie_embeddings:
            assert model.output.weight is model.tok_embeddings.weight


def test_init_weights_is_reproducible_and_resets_trained_norms():
    a, b = Transformer(TINY), Transformer(TINY)
    with torch.no_grad():
        b.norm.weight.mul_(3.0)
    a.init_weights(torch.Generator().manual_seed(7))
    b.init_weights(torch.Generator().manual_seed(7))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    b.init_weights(torch.Generator().manual_seed(8))
    assert not torch.equal(a.layers[0].attention.wq.weight, b.layers[0].attention.wq.weight)


def test_init_weights_on_the_meta_device_allocates_nothing():
    model = empty_model(preset("7B"))
    model.init_weights(torch.Generator().manual_seed(0))
    assert all(p.is_meta for p in model.parameters())
    assert any(isinstance(m, RMSNorm) for m in model.modules())


@cuda
def test_a_cpu_generator_gives_the_same_weights_on_the_gpu():
    cpu = Transformer(TINY)
    cpu.init_weights(torch.Generator().manual_seed(3))
    gpu = Transformer(TINY).cuda()
    gpu.init_weights(torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y.cpu()) for x, y in zip(cpu.state_dict().values(), gpu.state_dict().values()))


# --- hidden_states: the body without the output matrix -----------------------------------------

def _output_input(model, *args, **kwargs):
    seen = []
    handle = model.output.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].clone()))
    try:
        logits = model(*args, **kwargs)
    finally:
        handle.remove()
    return seen[0], logits


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("last_only", [False, True])
def test_hidden_states_are_the_output_matrix_input(dtype, last_only):
    torch.manual_seed(0)
    model = Transformer(TINY).to(dtype).eval()
    tokens = torch.randint(0, TINY.vocab_size, (2, 12))
    with torch.no_grad():
        captured, logits = _output_input(model, tokens, last_only=last_only)
        h = model.hidden_states(tokens, last_only=last_only)
    assert h.shape == (2, 1 if last_only else 12, TINY.dim) and h.dtype == dtype
    assert torch.equal(h, captured)
    assert torch.equal(model.output(h).float(), logits)


def test_hidden_states_equal_transformers_last_hidden_state():
    """Independent of our forward: LlamaModel (the body of LlamaForCausalLM) on the same weights."""
    model = randomised(TINY)
    hf = to_hf_model(model)
    tokens = torch.randint(0, TINY.vocab_size, (2, 12))
    with torch.no_grad():
        want = hf.model(tokens).last_hidden_state  # after the final norm, before lm_head
        torch.testing.assert_close(model.hidden_states(tokens), want, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(model.hidden_states(tokens[:, 1:]), want[:, 1:], atol=1e-3)


def test_hidden_states_with_a_kv_cache_match_forward_step_by_step():
    torch.manual_seed(0)
    model = Transformer(TINY).eval()
    tokens = torch.randint(0, TINY.vocab_size, (2, 9))
    with torch.no_grad():
        cache_f, cache_h = model.new_cache(2), model.new_cache(2)
        pairs = [(model(tokens[:, :6], 0, cache_f), model.hidden_states(tokens[:, :6], 0, cache_h))]
        for pos in range(6, 9):
            step = tokens[:, pos:pos + 1]
            pairs.append((model(step, pos, cache_f, last_only=True),
                          model.hidden_states(step, pos, cache_h, last_only=True)))
    for logits, h in pairs:
        assert torch.equal(model.output(h).float(), logits)
    assert torch.equal(cache_f[1].k, cache_h[1].k)


def test_hidden_states_check_the_context_length():
    model = Transformer(TINY)
    with pytest.raises(ValueError, match="exceed the context length max_seq_len=128"):
        model.hidden_states(torch.zeros(1, 129, dtype=torch.long))


def test_a_scalar_head_on_hidden_states_trains_the_body():
    """What a reward model does: a (dim -> 1) head on the last position; gradients reach the body."""
    torch.manual_seed(0)
    model, head = Transformer(TINY), nn.Linear(TINY.dim, 1)
    score = head(model.hidden_states(torch.randint(0, TINY.vocab_size, (3, 7)), last_only=True))  # (3, 1, 1)
    score.sum().backward()
    assert model.layers[0].attention.wq.weight.grad.abs().sum() > 0
    assert model.output.weight.grad is None  # the output matrix is not on this path
