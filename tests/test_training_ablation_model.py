"""The ablation decoder against real references: our Transformer (LLaMA switches) and transformers'
GPT2LMHeadModel (GPT-2 switches) on identical weights; equal-parameter matching; the init scheme."""

from dataclasses import replace

import pytest
import torch
from model_fixtures import randomised

from llama_from_scratch.model.config import ModelArgs, preset
from llama_from_scratch.model.transformer import Transformer
from llama_from_scratch.training.ablation_model import (BLOCKS, AblationArgs, AblationModel,
                                                         ablation_args)
from llama_from_scratch.training.ablation_params import match_parameters, parameter_counts

GQA = ModelArgs(dim=64, n_layers=3, n_heads=8, n_kv_heads=2, vocab_size=97, hidden_dim=96, max_seq_len=64)
MHA = preset("tiny-mha", tie_embeddings=True)
# Every single change away from LLaMA's block, the full GPT-2 block, and MHA instead of GQA.
VARIANTS = {"gpt2": ("gpt2", {}), "layernorm": ("llama", {"norm": "layer"}),
            "learned": ("llama", {"positions": "learned"}), "gelu": ("llama", {"mlp": "gelu"}),
            "bias": ("llama", {"bias": True}), "mha": ("llama", {"n_kv_heads": None})}


def _randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or ".ln_" in name:
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.5 / p.shape[-1] ** 0.5)
    return model.eval()


@pytest.mark.parametrize("use_sdpa", [True, False])
def test_llama_switches_give_the_transformers_logits(use_sdpa):
    reference = randomised(GQA)
    model = AblationModel(ablation_args(GQA, "llama")).eval()
    model.load_state_dict(reference.state_dict())  # strict: the same names and shapes
    reference.set_attention_path(use_sdpa)
    model.set_attention_path(use_sdpa)
    tokens = torch.randint(0, GQA.vocab_size, (3, 50), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = reference(tokens), model(tokens)
        assert torch.equal(model.hidden_states(tokens), reference.hidden_states(tokens))
    assert got.dtype == torch.float32 and got.shape == (3, 50, GQA.vocab_size)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_llama_switches_draw_the_transformers_initial_weights():
    reference = Transformer(GQA)
    reference.init_weights(torch.Generator().manual_seed(7))
    model = AblationModel(ablation_args(GQA, "llama"))
    model.init_weights(torch.Generator().manual_seed(7))
    want = reference.state_dict()
    assert model.state_dict().keys() == want.keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, want[name]), name


def _gpt2_reference(args: AblationArgs, activation: str = "gelu_new"):
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        vocab_size=args.vocab_size, n_positions=args.max_seq_len, n_embd=args.dim,
        n_layer=args.n_layers, n_head=args.n_heads, n_inner=args.ffn_hidden_dim,
        activation_function=activation, layer_norm_epsilon=args.norm_eps, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True, bos_token_id=0, eos_token_id=0)
    return _randomise(transformers.GPT2LMHeadModel(config))


def _from_gpt2(sd: dict[str, torch.Tensor], args: AblationArgs) -> dict[str, torch.Tensor]:
    """GPT-2's names to ours. Conv1D stores weights as (in, out): transpose; c_attn is q|k|v."""
    d = args.dim
    out = {"tok_embeddings.weight": sd["transformer.wte.weight"],
           "pos_embeddings.weight": sd["transformer.wpe.weight"],
           "norm.weight": sd["transformer.ln_f.weight"], "norm.bias": sd["transformer.ln_f.bias"]}
    for i in range(args.n_layers):
        theirs, ours = f"transformer.h.{i}.", f"layers.{i}."
        for j, name in enumerate("qkv"):
            out[f"{ours}attention.w{name}.weight"] = sd[theirs + "attn.c_attn.weight"][:, j * d:(j + 1) * d].T
            out[f"{ours}attention.w{name}.bias"] = sd[theirs + "attn.c_attn.bias"][j * d:(j + 1) * d]
        pairs = {"attention.wo": "attn.c_proj", "feed_forward.w1": "mlp.c_fc",
                 "feed_forward.w2": "mlp.c_proj", "attention_norm": "ln_1", "ffn_norm": "ln_2"}
        for mine, gpt2 in pairs.items():
            weight = sd[f"{theirs}{gpt2}.weight"]
            out[f"{ours}{mine}.weight"] = weight.T if weight.dim() == 2 else weight
            out[f"{ours}{mine}.bias"] = sd[f"{theirs}{gpt2}.bias"]
    out["output.weight"] = out["tok_embeddings.weight"]  # tied, as GPT-2's lm_head
    return out


def test_gpt2_switches_give_gpt2s_logits():
    args = ablation_args(MHA, "gpt2")
    reference = _gpt2_reference(args)
    model = AblationModel(args).eval()
    model.load_state_dict(_from_gpt2(reference.state_dict(), args))  # strict
    assert model.output.weight is model.tok_embeddings.weight
    tokens = torch.randint(0, args.vocab_size, (2, 40), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got, want = model(tokens), reference(tokens).logits
    assert want.abs().max() > 1.0  # logits that are not all near zero
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # GPT-2's GELU is the tanh approximation: the exact erf GELU gives other logits.
    exact = _gpt2_reference(args, activation="gelu")
    with torch.no_grad():
        assert (exact(tokens).logits - got).abs().max() > 1e-4


def test_learned_positions_with_a_kv_cache_match_the_full_forward():
    model = _randomise(AblationModel(ablation_args(MHA, "gpt2")))
    tokens = torch.randint(0, MHA.vocab_size, (2, 12), generator=torch.Generator().manual_seed(3))
    cache = model.new_cache(2)
    with torch.no_grad():
        full = model(tokens)
        first = model(tokens[:, :7], 0, cache)
        rest = model(tokens[:, 7:], 7, cache)  # positions 7.. must use position rows 7..
    torch.testing.assert_close(torch.cat([first, rest], dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_switch_changes_the_model(variant):
    block, switches = VARIANTS[variant]
    llama = _randomise(AblationModel(ablation_args(GQA, "llama")))
    model = AblationModel(ablation_args(GQA, block, **switches)).eval()
    mine = model.state_dict()
    shared = {k: v for k, v in llama.state_dict().items() if k in mine and mine[k].shape == v.shape}
    model.load_state_dict(shared, strict=False)
    tokens = torch.randint(0, GQA.vocab_size, (2, 30), generator=torch.Generator().manual_seed(4))
    if variant == "bias":  # zero biases change nothing; random ones must
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("bias"):
                    p.normal_(0.0, 0.1)
    with torch.no_grad():
        assert (model(tokens) - llama(tokens)).abs().max() > 1e-3


def test_gpt2_init_biases_zero_norms_one_embeddings_small():
    model = AblationModel(ablation_args(preset("tiny"), "gpt2"))
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            assert torch.equal(p, torch.zeros_like(p)), name
        elif "norm" in name:
            assert torch.equal(p, torch.ones_like(p)), name
    assert abs(model.pos_embeddings.weight.std().item() - 0.02) < 0.002
    wo_std = model.layers[0].attention.wo.weight.std().item()
    assert abs(wo_std - 0.02 / (2 * model.args.n_layers) ** 0.5) < 0.002


def test_rope_tables_survive_dtype_moves():
    model = AblationModel(ablation_args(MHA, "gpt2")).to(torch.bfloat16)
    assert model.freqs_cos.dtype == torch.float32
    assert torch.equal(model.freqs_cos, torch.ones_like(model.freqs_cos))
    assert torch.equal(model.freqs_sin, torch.zeros_like(model.freqs_sin))
    assert "freqs_cos" not in model.state_dict()


@pytest.mark.parametrize("variant", VARIANTS)
def test_match_parameters_gives_equal_counts(variant):
    block, switches = VARIANTS[variant]
    for base in (preset("tiny"), GQA, ModelArgs(dim=256, n_layers=4, n_heads=8, n_kv_heads=2,
                                                  vocab_size=4096, multiple_of=64, max_seq_len=256)):
        reference = ablation_args(base, "llama")
        target = parameter_counts(reference)["non_embedding"]
        matched = match_parameters(ablation_args(base, block, **switches), reference)
        got = parameter_counts(matched)["non_embedding"]
        assert abs(got - target) / target < 0.01, (variant, got, target)
        # Within one hidden unit: the count for one more or one fewer is not closer.
        one_more = replace(matched, hidden_dim=matched.hidden_dim + 1)
        per_unit = parameter_counts(one_more)["non_embedding"] - got
        assert abs(got - target) <= per_unit / 2
        model = AblationModel(matched)  # the counting matches a real model
        assert sum(p.numel() for p in model.parameters()) == parameter_counts(matched)["total"]


def test_parameter_counts_of_a_plain_modelargs_are_the_transformers():
    args = preset("stories260K")  # tied embeddings, explicit hidden_dim
    counts = parameter_counts(args)
    assert counts["total"] == sum(p.numel() for p in Transformer(args).parameters())
    assert counts["non_embedding"] == counts["total"] - args.vocab_size * args.dim


def test_bad_switches_are_clear_errors():
    with pytest.raises(ValueError, match="norm='batch' is not a choice"):
        ablation_args(preset("tiny"), norm="batch")
    with pytest.raises(ValueError, match="unknown block 'gpt3'"):
        ablation_args(preset("tiny"), "gpt3")
    assert set(BLOCKS) == {"llama", "gpt2"}
