"""One entry point for loading a model from a checkpoint: `load_checkpoint(path)`.

Handled: llama2.c's legacy `.bin` export and its `.pt` training checkpoints, Meta's
directories (params.json + consolidated.*.pth) and Hugging Face's (config.json +
safetensors or pytorch_model*.bin); `loading.load_model` recognises which.
"""

from __future__ import annotations

from pathlib import Path

import torch

from llama_from_scratch.loading import load_model
from llama_from_scratch.model import Transformer


def load_checkpoint(path: str | Path, device: torch.device | str | None = None,
                    dtype: torch.dtype | str | None = None) -> Transformer:
    """A `Transformer` in eval mode, on `device` (default CPU), in `dtype` (default: as stored;
    float32 for llama2.c files). Raises `CheckpointError` saying what is wrong with `path`."""
    return load_model(path, device=device, dtype=dtype)
