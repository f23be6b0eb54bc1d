"""Counting parameters without allocating them: models built on the meta device.

A model built under `torch.device("meta")` has parameters with shapes and dtypes but no
memory, so LLaMA 2 70B's 69 billion parameters can be counted (or a checkpoint's shapes
checked) in milliseconds on a laptop. `empty_model` is the one place that builds one.

Chapter: decoder (also shown in: real_weights).
"""

from __future__ import annotations

import torch

from llama_from_scratch.model.config import ModelArgs
from llama_from_scratch.model.transformer import Transformer


def empty_model(args: ModelArgs, model_class: type[Transformer] = Transformer) -> Transformer:
    """A `Transformer` (or a subclass, e.g. the ablation model) whose tensors live on the meta
    device: shapes only, no memory.

    Its RoPE buffers are on the meta device too, and `init_weights` drew nothing. To train
    one: `model.to_empty(device=...)` (allocates; recomputes the RoPE tables) and then
    `model.init_weights()`. Loaders instead assign checkpoint tensors (checkpoints.assign).
    """
    with torch.device("meta"):
        return model_class(args)


def count_parameters(args: ModelArgs) -> int:
    """Parameters of a model with these args, built on the meta device: no memory is allocated.

    A tied output matrix is counted once.
    """
    return sum(p.numel() for p in empty_model(args).parameters())


def parameter_breakdown(args: ModelArgs) -> dict[str, int]:
    """Parameters per component (embedding, attention, feed-forward, norms, output), summed
    over layers."""
    model = empty_model(args)
    parts = {"tok_embeddings": 0, "attention": 0, "feed_forward": 0, "norms": 0, "output": 0}
    for name, p in model.named_parameters():  # a tied output.weight is not listed again
        parts[_component(name)] += p.numel()
    return parts


def _component(name: str) -> str:
    if name.startswith(("tok_embeddings", "output")):
        return name.split(".")[0]
    if ".attention." in name:  # layers.N.attention.wq.weight (not attention_norm)
        return "attention"
    if ".feed_forward." in name:
        return "feed_forward"
    return "norms"  # attention_norm, ffn_norm, norm
