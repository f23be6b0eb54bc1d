"""The one Hugging Face state-dict adapter: key names both ways, and the q/k row permutation.

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
n_kv_heads). `to_hf` and `from_hf` convert one tensor, so the reader and the writer can
work a tensor (or a file) at a time; every conversion in the package goes through them.
transformers 4.x keeps `rope_theta` on the config; 5.x moves it into
`rope_parameters["rope_theta"]`; both accept `rope_theta=` when building a config.
Not handled: RoPE scaling (Llama 3.1), attention or MLP biases, head_dim != dim / n_heads.

Chapter: decoder.
"""

from __future__ import annotations

import re

import torch

from llama_from_scratch.checkpoints.errors import CheckpointError
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
_OURS_LAYER = re.compile(r"layers\.(\d+)\.(.+)")
_HF_LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)")
_LAYER_OURS = {theirs: ours for ours, theirs in LAYER_KEYS.items()}
_TOP_OURS = {theirs: ours for ours, theirs in TOP_KEYS.items()}


def key_map(n_layers: int) -> dict[str, str]:
    """Every one of our state-dict keys -> its Hugging Face key."""
    mapping = dict(TOP_KEYS)
    for i in range(n_layers):
        for ours, theirs in LAYER_KEYS.items():
            mapping[f"layers.{i}.{ours}"] = f"model.layers.{i}.{theirs}"
    return mapping


def hf_name(key: str) -> str:
    """Our key -> Hugging Face's: "layers.3.attention.wq.weight" -> "model.layers.3.self_attn.q_proj.weight"."""
    m = _OURS_LAYER.fullmatch(key)
    theirs = f"model.layers.{m[1]}.{LAYER_KEYS[m[2]]}" if m and m[2] in LAYER_KEYS else TOP_KEYS.get(key)
    if theirs is None:
        raise CheckpointError(f"{key!r} is not a LLaMA 2 weight name; Hugging Face has no name for it")
    return theirs


def our_name(hf_key: str) -> str | None:
    """Hugging Face's key -> ours; None for a key that is no LLaMA 2 weight (the caller reports it)."""
    m = _HF_LAYER.fullmatch(hf_key)
    if m and m[2] in _LAYER_OURS:
        return f"layers.{m[1]}.{_LAYER_OURS[m[2]]}"
    return _TOP_OURS.get(hf_key)


def rotary_heads(key: str, args: ModelArgs) -> int | None:
    """Heads whose rows the permutation reorders for our `key`: n_heads for wq, n_kv_heads for wk."""
    if key.endswith("attention.wq.weight"):
        return args.n_heads
    if key.endswith("attention.wk.weight"):
        return args.kv_heads
    return None


def to_hf(key: str, tensor: torch.Tensor, args: ModelArgs) -> tuple[str, torch.Tensor]:
    """One of our tensors -> (Hugging Face's key, tensor). wq/wk `(heads * head_dim, dim)` come
    back permuted (a copy, on the tensor's device); every other tensor is returned as it is."""
    heads = rotary_heads(key, args)
    return hf_name(key), (tensor if heads is None else permute_to_rotate_half(tensor, heads))


def from_hf(hf_key: str, tensor: torch.Tensor, args: ModelArgs) -> tuple[str, torch.Tensor]:
    """One Hugging Face tensor -> (our key, tensor): the inverse of `to_hf`."""
    key = our_name(hf_key)
    if key is None:
        raise CheckpointError(f"{hf_key!r} is not a LLaMA 2 weight of a LlamaForCausalLM")
    heads = rotary_heads(key, args)
    return key, (tensor if heads is None else permute_to_adjacent(tensor, heads))


def to_hf_state_dict(state_dict: dict[str, torch.Tensor], args: ModelArgs) -> dict[str, torch.Tensor]:
    """Our (Meta's) state dict -> a `LlamaForCausalLM` state dict."""
    return dict(to_hf(key, state_dict[key], args) for key in key_map(args.n_layers))


def from_hf_state_dict(state_dict: dict[str, torch.Tensor], args: ModelArgs) -> dict[str, torch.Tensor]:
    """A `LlamaForCausalLM` state dict -> ours. A tied model may lack lm_head.weight; keys
    that are no weight of ours (buffers such as rotary_emb.inv_freq) are left out."""
    out = {}
    for ours, theirs in key_map(args.n_layers).items():
        source = theirs
        if theirs == "lm_head.weight" and theirs not in state_dict and args.tie_embeddings:
            source = "model.embed_tokens.weight"  # tied: the output matrix is the embedding
        out[ours] = from_hf(theirs, state_dict[source], args)[1]
    return out
