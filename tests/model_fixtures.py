"""Models for tests: every tensor random, so a swapped or mis-mapped tensor shows."""

from __future__ import annotations

import torch

from llama_from_scratch.model.config import ModelArgs
from llama_from_scratch.model.transformer import Transformer


def randomised(args: ModelArgs, seed: int = 0, dtype: torch.dtype = torch.float32) -> Transformer:
    """A `Transformer` in eval mode with random weights, norms included (all-ones norms
    would hide a swapped `attention_norm` / `ffn_norm`). RoPE tables stay float32."""
    torch.manual_seed(seed)
    model = Transformer(args).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.5 / p.shape[-1] ** 0.5)
    return model.to(dtype)
