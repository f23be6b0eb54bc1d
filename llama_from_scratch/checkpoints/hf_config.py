"""Hugging Face's `config.json` (`LlamaConfig`) <-> our `ModelArgs`.

transformers 4.x keeps RoPE's theta as `rope_theta`; 5.x moves it into
`rope_parameters["rope_theta"]`; both accept `rope_theta=` when building a config, and the
writer puts both into config.json. An old config with neither means 10,000.
Not handled: RoPE scaling (Llama 3.1), attention or MLP biases, head_dim != dim / n_heads.

Chapter: decoder.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import torch

from llama_from_scratch.checkpoints.dtypes import DTYPE_NAMES
from llama_from_scratch.checkpoints.errors import CheckpointError
from llama_from_scratch.model.config import ModelArgs

# LlamaConfig's defaults, for keys an older config.json leaves out.
CONFIG_DEFAULTS = {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008,
                   "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": None,
                   "max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
                   "rope_theta": 10000.0, "rope_scaling": None, "attention_bias": False, "mlp_bias": False}


def read_hf_args(directory: str | Path) -> ModelArgs:
    """ModelArgs from config.json, without importing transformers."""
    path = Path(directory) / "config.json"
    config = json.loads(path.read_text())
    if config.get("model_type", "llama") != "llama":
        raise CheckpointError(f"{path}: model_type is {config['model_type']!r}; only 'llama' is handled")
    try:
        return from_hf_config(SimpleNamespace(**{**CONFIG_DEFAULTS, **config}))
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: {err}") from err


def hf_config_dict(args: ModelArgs, dtype: torch.dtype) -> dict:
    """config.json for `LlamaForCausalLM`, readable by transformers 4.x and 5.x."""
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": args.dim, "intermediate_size": args.ffn_hidden_dim,
        "num_hidden_layers": args.n_layers, "num_attention_heads": args.n_heads,
        "num_key_value_heads": args.kv_heads, "head_dim": args.head_dim, "vocab_size": args.vocab_size,
        "max_position_embeddings": args.max_seq_len, "rms_norm_eps": args.norm_eps,
        "rope_theta": args.rope_theta, "rope_scaling": None,  # transformers 4.x
        "rope_parameters": {"rope_type": "default", "rope_theta": args.rope_theta},  # transformers 5.x
        "tie_word_embeddings": args.tie_embeddings, "hidden_act": "silu", "attention_bias": False,
        "mlp_bias": False, "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2,
        "initializer_range": 0.02, "pretraining_tp": 1, "use_cache": True,
        "torch_dtype": DTYPE_NAMES.get(dtype, "float32"),
    }


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
