"""transformers' own `LlamaForCausalLM`: the reference the book checks itself against.

Needs the `transformers` package (the `reference` extra); nothing else in the package does.

Chapter: decoder.
"""

from __future__ import annotations

from pathlib import Path

import torch

from llama_from_scratch.checkpoints.assign import load_state_dict_into
from llama_from_scratch.checkpoints.hf_adapter import from_hf_state_dict, to_hf_state_dict
from llama_from_scratch.checkpoints.hf_config import from_hf_config, to_hf_config
from llama_from_scratch.model.transformer import Transformer


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
    """Our `Transformer` holding copies of a `LlamaForCausalLM`'s weights (same dtype and
    device), in the state every loader gives: trainable parameters, eval mode."""
    args = from_hf_config(hf.config)
    sd = from_hf_state_dict(hf.state_dict(), args)  # tied: output.weight is the embedding again
    return load_state_dict_into(args, {k: v.clone() for k, v in sd.items()}, type(hf).__name__)


def transformers_model(directory: str | Path, dtype: torch.dtype = torch.float32,
                       device: torch.device | str | None = None, attn_implementation: str = "eager"):
    """transformers' own `LlamaForCausalLM.from_pretrained(directory)` in eval mode: the reference.

    The dtype keyword is `dtype` in transformers 5.x and `torch_dtype` in 4.x. On a GPU, with
    `accelerate` installed (as on Colab), the weights go straight to it (`device_map`) instead
    of all through the CPU's memory first.
    """
    import importlib.util

    import transformers
    from transformers import LlamaForCausalLM

    key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    kwargs = {key: dtype, "attn_implementation": attn_implementation}
    if device is not None and torch.device(device).type == "cuda" and importlib.util.find_spec("accelerate"):
        kwargs["device_map"] = {"": str(device)}
    model = LlamaForCausalLM.from_pretrained(str(directory), **kwargs)
    return (model if device is None else model.to(device)).eval()
