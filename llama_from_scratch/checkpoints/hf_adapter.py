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

Chapter: decoder.
"""

from __future__ import annotations

import torch

from llama_from_scratch.model.config import ModelArgs
from llama_from_scratch.model.rope import permute_to_adjacent, permute_to_rotate_half

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


