"""One entry point for loading a model from a checkpoint file: `load_checkpoint(path)`.

Handled now: llama2.c's legacy `.bin` export and its `.pt` training checkpoints.
Not handled yet: Meta's consolidated.*.pth directories and Hugging Face directories.
"""

from __future__ import annotations

from pathlib import Path

from llama_from_scratch.llama2c import CheckpointError, load_bin, load_pt
from llama_from_scratch.model import Transformer

LOADERS = {".bin": load_bin, ".pt": load_pt}


def load_checkpoint(path: str | Path) -> Transformer:
    """A `Transformer` in eval mode, float32, on the CPU, chosen by the file's suffix."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory; Meta and Hugging Face checkpoint directories "
                              f"are not handled yet: pass a llama2.c file ({', '.join(LOADERS)})")
    loader = LOADERS.get(path.suffix)
    if loader is None:
        raise CheckpointError(f"{path}: unknown checkpoint format {path.suffix!r}; handled: "
                              f"{', '.join(LOADERS)} (llama2.c legacy export, llama2.c training checkpoint)")
    return loader(path)
