"""`torch.load` for files you did not write: tensors only, memory-mapped, clear errors.

A `.pth`/`.bin` file is a pickle, and unpickling can run any code the file names.
`weights_only=True` (PyTorch's restricted unpickler) accepts only tensors and plain
containers, so a malicious file is refused before its code runs.

Chapter: real_weights.
"""

from __future__ import annotations

from pathlib import Path

import torch

from llama_from_scratch.checkpoints.errors import CheckpointError


def torch_load(path: str | Path, mmap: bool = True) -> dict[str, torch.Tensor]:
    """`torch.load` a `.pth`/`.bin` state dict safely, memory-mapped, on the CPU.

    `weights_only=True` restricts unpickling to tensors and plain containers, so a file
    that would run code when unpickled is refused before that code runs. Raises
    `CheckpointError` naming the file for a refused, truncated or non-dict file.
    """
    import pickle
    import zipfile

    use_mmap = mmap and zipfile.is_zipfile(path)  # files from torch < 1.6 are not zip archives
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=use_mmap)
    except pickle.UnpicklingError as err:
        lines = [ln.strip() for ln in str(err).splitlines() if "Unsupported" in ln or "GLOBAL" in ln]
        first = (lines[0] if lines else str(err).strip().splitlines()[0])[:300]
        raise CheckpointError(
            f"refusing to load {path}: it holds pickled objects other than tensors, which could run "
            f"code on your machine, so it was loaded with weights_only=True and rejected ({first}). "
            "Use a checkpoint from a source you trust, ideally in .safetensors format.") from None
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"cannot read {path}: {str(err).splitlines()[0]}; the file is truncated "
                              "or not a PyTorch checkpoint (download it again)") from err
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} is not a state dict (a dict of name -> tensor)")
    return obj
