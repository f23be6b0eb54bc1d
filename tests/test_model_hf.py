"""Our Transformer against Hugging Face LlamaForCausalLM on identical (randomised) weights."""

import pytest
import torch
from model_fixtures import randomised

from llama_from_scratch.checkpoints.hf_config import from_hf_config, to_hf_config
from llama_from_scratch.checkpoints.hf_reference import from_hf_model, to_hf_model
from llama_from_scratch.model.config import ModelArgs

CONFIGS = {
    "gqa": ModelArgs(dim=64, n_layers=3, n_heads=8, n_kv_heads=2, vocab_size=97, hidden_dim=96,
                     norm_eps=1e-5, rope_theta=10000.0, max_seq_len=64),
    "mqa-theta": ModelArgs(dim=48, n_layers=2, n_heads=4, n_kv_heads=1, vocab_size=61, multiple_of=16,
                           norm_eps=1e-6, rope_theta=500000.0, max_seq_len=64),
    "mha-tied": ModelArgs(dim=32, n_layers=2, n_heads=4, vocab_size=50, multiple_of=8,
                          max_seq_len=64, tie_embeddings=True),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_logits_equal_llama_for_causal_lm(name):
    args = CONFIGS[name]
    model = randomised(args)
    assert model.output.weight is model.tok_embeddings.weight or not args.tie_embeddings
    assert args.tie_embeddings or not torch.equal(model.output.weight, model.tok_embeddings.weight)
    hf = to_hf_model(model)
    torch.manual_seed(1)
    for batch, seq in [(1, 1), (3, 7), (2, 40)]:
        tokens = torch.randint(0, args.vocab_size, (batch, seq))
        with torch.no_grad():
            ours, theirs = model(tokens), hf(tokens).logits
        assert ours.abs().max() > 1.0  # the comparison is not between near-zero numbers
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
        with torch.no_grad():
            model.set_attention_path(use_sdpa=False)
            torch.testing.assert_close(model(tokens), theirs, atol=1e-5, rtol=1e-5)
            model.set_attention_path(use_sdpa=True)


def test_parity_fails_when_norms_are_swapped():
    """The check can fail: swapping attention_norm and ffn_norm changes the logits."""
    args = CONFIGS["gqa"]
    model = randomised(args)
    hf = to_hf_model(model)
    layer = model.layers[1]
    with torch.no_grad():
        a, f = layer.attention_norm.weight.clone(), layer.ffn_norm.weight.clone()
        layer.attention_norm.weight.copy_(f)
        layer.ffn_norm.weight.copy_(a)
        tokens = torch.randint(0, args.vocab_size, (2, 9))
        assert not torch.allclose(model(tokens), hf(tokens).logits, atol=1e-3)


@pytest.mark.parametrize("name", ["gqa", "mha-tied"])
def test_sdpa_reference_and_round_trip(name):
    args = CONFIGS[name]
    model = randomised(args)
    hf = to_hf_model(model, attn_implementation="sdpa")
    tokens = torch.randint(0, args.vocab_size, (2, 13))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), hf(tokens).logits, atol=1e-5, rtol=1e-5)
    back = from_hf_model(hf)
    assert explicit(back.args) == explicit(args)
    for key, value in model.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    assert (back.output.weight is back.tok_embeddings.weight) == args.tie_embeddings


def explicit(args: ModelArgs) -> ModelArgs:
    """The same architecture with the hidden size and KV heads spelled out (as HF configs do)."""
    return ModelArgs(**{**args.__dict__, "hidden_dim": args.ffn_hidden_dim, "n_kv_heads": args.kv_heads,
                        "multiple_of": 256, "ffn_dim_multiplier": None})


@pytest.mark.parametrize("name", CONFIGS)
def test_config_round_trip(name):
    args = CONFIGS[name]
    assert explicit(from_hf_config(to_hf_config(args))) == explicit(args)


def test_rope_scaling_is_refused():
    cfg = to_hf_config(CONFIGS["gqa"])
    if hasattr(cfg, "rope_parameters") and cfg.rope_parameters:
        cfg.rope_parameters = {**cfg.rope_parameters, "rope_type": "linear", "factor": 2.0}
    else:
        cfg.rope_scaling = {"rope_type": "linear", "factor": 2.0}
    with pytest.raises(ValueError, match="RoPE scaling"):
        from_hf_config(cfg)
