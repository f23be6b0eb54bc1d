"""Convert between this package's model and Hugging Face's `LlamaForCausalLM`.

Key mapping (N = layer index), ours (= Meta's) on the left:

    tok_embeddings.weight              model.embed_tokens.weight
    layers.N.attention.wq.weight       model.layers.N.self_attn.q_proj.weight   (permuted)
    layers.N.attention.wk.weight       model.layers.N.self_attn.k_proj.weight   (permuted)
    layers.N.attention.wv.weight       model.layers.N.self_attn.v_proj.weight
    layers.N.attention.wo.weight       model.layers.N.self_attn.o_proj.weight
    layers.N.feed_forward.w1.weight    model.layers.N.mlp.gate_proj.weight
    layers.N.feed_forward.w2.weight    model.layers.N.mlp.down_proj.weight
    layers.N.feed_forward.w3.weight    model.layers.N.mlp.up_proj.weight
    layers.N.attention_norm.weight     model.layers.N.input_layernorm.weight
    layers.N.ffn_norm.weight           model.layers.N.post_attention_layernorm.weight
    norm.weight                        model.norm.weight
    output.weight                      lm_head.weight

"Permuted": Meta's RoPE rotates adjacent pairs, Hugging Face's rotates halves, so the
rows of wq and wk are reordered per head (`rope.permute_to_rotate_half`; wk with
n_kv_heads). transformers 4.x keeps `rope_theta` on the config; 5.x moves it into
`rope_parameters["rope_theta"]`; both accept `rope_theta=` when building a config.
Not handled: RoPE scaling (Llama 3.1), attention or MLP biases, head_dim != dim / n_heads.
"""

from __future__ import annotations

import torch

from llama_from_scratch.config import ModelArgs
from llama_from_scratch.model import Transformer
from llama_from_scratch.rope import permute_to_adjacent, permute_to_rotate_half

# Ours -> Hugging Face's, per layer (q/k also need the permutation).
LAYER_KEYS = {
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "attention_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
}
TOP_KEYS = {
    "tok_embeddings.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


def key_map(n_layers: int) -> dict[str, str]:
    """Every one of our state-dict keys -> its Hugging Face key."""
    mapping = dict(TOP_KEYS)
    for i in range(n_layers):
        for ours, theirs in LAYER_KEYS.items():
            mapping[f"layers.{i}.{ours}"] = f"model.layers.{i}.{theirs}"
    return mapping


def to_hf_state_dict(state_dict: dict[str, torch.Tensor], args: ModelArgs) -> dict[str, torch.Tensor]:
    """Our (Meta's) state dict -> a `LlamaForCausalLM` state dict."""
    out = {}
    for ours, theirs in key_map(args.n_layers).items():
        w = state_dict[ours]
        if ours.endswith("attention.wq.weight"):
            w = permute_to_rotate_half(w, args.n_heads)
        elif ours.endswith("attention.wk.weight"):
            w = permute_to_rotate_half(w, args.kv_heads)
        out[theirs] = w
    return out


def from_hf_state_dict(state_dict: dict[str, torch.Tensor], args: ModelArgs) -> dict[str, torch.Tensor]:
    """A `LlamaForCausalLM` state dict -> ours. A tied model may lack lm_head.weight."""
    out = {}
    for ours, theirs in key_map(args.n_layers).items():
        if theirs == "lm_head.weight" and theirs not in state_dict and args.tie_embeddings:
            w = state_dict["model.embed_tokens.weight"]
        else:
            w = state_dict[theirs]
        if ours.endswith("attention.wq.weight"):
            w = permute_to_adjacent(w, args.n_heads)
        elif ours.endswith("attention.wk.weight"):
            w = permute_to_adjacent(w, args.kv_heads)
        out[ours] = w
    return out


def to_hf_config(args: ModelArgs):
    """The `transformers.LlamaConfig` of the same architecture."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=args.vocab_size, hidden_size=args.dim, intermediate_size=args.ffn_hidden_dim,
        num_hidden_layers=args.n_layers, num_attention_heads=args.n_heads,
        num_key_value_heads=args.kv_heads, max_position_embeddings=args.max_seq_len,
        rms_norm_eps=args.norm_eps, rope_theta=args.rope_theta, tie_word_embeddings=args.tie_embeddings,
        hidden_act="silu", attention_bias=False, mlp_bias=False,
    )


def hf_rope_theta(config) -> float:
    """rope_theta from a LlamaConfig of transformers 4.x (attribute) or 5.x (rope_parameters)."""
    params = getattr(config, "rope_parameters", None) or {}
    rope_type = params.get("rope_type", "default")
    scaling = getattr(config, "rope_scaling", None)
    scaling_type = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))  # 4.x: "type"
    if rope_type != "default" or scaling_type != "default":
        raise ValueError(f"RoPE scaling ({params or scaling}) is not handled: only plain RoPE")
    return float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def from_hf_config(config) -> ModelArgs:
    """ModelArgs from a `transformers.LlamaConfig`."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    if head_dim * config.num_attention_heads != config.hidden_size:
        raise ValueError(f"head_dim={head_dim} x num_attention_heads={config.num_attention_heads} != "
                         f"hidden_size={config.hidden_size}: not a LLaMA 2 shape, not handled")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise ValueError("attention or MLP biases are not handled (LLaMA has none)")
    return ModelArgs(
        dim=config.hidden_size, n_layers=config.num_hidden_layers, n_heads=config.num_attention_heads,
        n_kv_heads=config.num_key_value_heads or config.num_attention_heads,
        vocab_size=config.vocab_size, hidden_dim=config.intermediate_size, norm_eps=config.rms_norm_eps,
        rope_theta=hf_rope_theta(config), max_seq_len=config.max_position_embeddings,
        tie_embeddings=bool(config.tie_word_embeddings),
    )


def to_hf_model(model: Transformer, attn_implementation: str = "eager"):
    """A `LlamaForCausalLM` holding copies of `model`'s weights (same dtype), in eval mode.

    "eager" is transformers' attention spelled out in Python (the reference); "sdpa" its fast path.
    """
    from transformers import LlamaForCausalLM

    config = to_hf_config(model.args)
    config._attn_implementation = attn_implementation
    hf = LlamaForCausalLM(config).to(model.tok_embeddings.weight.dtype)
    sd = to_hf_state_dict(model.state_dict(), model.args)
    hf.load_state_dict({k: v.clone() for k, v in sd.items()}, strict=True)
    return hf.eval()


def from_hf_model(hf) -> Transformer:
    """Our `Transformer` holding copies of a `LlamaForCausalLM`'s weights, in eval mode."""
    args = from_hf_config(hf.config)
    model = Transformer(args).to(hf.model.embed_tokens.weight.dtype)
    sd = from_hf_state_dict(hf.state_dict(), args)  # tied: output.weight is the embedding again
    model.load_state_dict({k: v.clone() for k, v in sd.items()}, strict=True)
    return model.eval()
