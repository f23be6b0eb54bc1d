"""Hugging Face's checkpoint format: `config.json` + safetensors or pytorch_model*.bin files.

A directory such as `meta-llama/Llama-2-7b-hf` holds

    config.json                          the architecture (`LlamaConfig`)
    model.safetensors                    all weights in one file, or
    model-00001-of-00002.safetensors ... several files, with
    model.safetensors.index.json         {"weight_map": {hf key: file name}}
    pytorch_model.bin (+ .index.json)    the older pickle-based format (same layout)

Keys are Hugging Face's names and wq/wk rows are permuted for rotate-half RoPE;
loading maps them back and undoes the permutation (`hf_adapter.from_hf`, one tensor at a
time), the one step that must copy (a permutation is not a view). RoPE's theta is
`rope_theta` in transformers 4.x and `rope_parameters["rope_theta"]` in 5.x; the writer
writes both, and an old config with neither means 10,000. Not handled: RoPE scaling, biases, quantised checkpoints.

Chapter: real_weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from llama_from_scratch.checkpoints.assign import check_shapes, finish, put_tensor
from llama_from_scratch.checkpoints.errors import CheckpointError
from llama_from_scratch.checkpoints.hf_adapter import from_hf, our_name
from llama_from_scratch.checkpoints.hf_config import read_hf_args
from llama_from_scratch.checkpoints.safe_load import torch_load
from llama_from_scratch.model.parameters import empty_model
from llama_from_scratch.model.transformer import Transformer

IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)  # a buffer that 2023-era .bin files saved; recomputed


def weight_files(directory: str | Path) -> tuple[list[Path], dict[str, Path] | None]:
    """The weight files to read, and (for sharded checkpoints) which file holds each key.

    Prefers safetensors over .bin. Raises `CheckpointError` naming a file the index lists
    but the directory lacks.
    """
    directory = Path(directory)
    for single, index in [("model.safetensors", "model.safetensors.index.json"),
                          ("pytorch_model.bin", "pytorch_model.bin.index.json")]:
        if (directory / index).is_file():
            weight_map = json.loads((directory / index).read_text())["weight_map"]
            where = {k: directory / name for k, name in weight_map.items()}
            files = sorted(set(where.values()))
            missing = [p.name for p in files if not p.is_file()]
            if missing:
                raise CheckpointError(f"{directory}: {index} lists {', '.join(missing)}, which is missing; "
                                      "download the complete checkpoint")
            return files, where
        if (directory / single).is_file():
            return [directory / single], None
    raise CheckpointError(f"{directory} has config.json but no model.safetensors, "
                          "model.safetensors.index.json or pytorch_model.bin")


class _SafetensorsFile:
    """Tensors of one .safetensors file, memory-mapped; only the header is read on opening."""

    def __init__(self, path: Path):
        from safetensors import SafetensorError, safe_open

        self.path = path
        try:
            self.file = safe_open(str(path), framework="pt")
            self.shapes = {k: tuple(self.file.get_slice(k).get_shape()) for k in self.file.keys()}
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"cannot read {path}: {err}; the file is truncated or not "
                                  "safetensors (download it again)") from err

    def get(self, key: str) -> torch.Tensor:
        return self.file.get_tensor(key)


class _TorchFile:
    """Tensors of one pytorch_model*.bin, loaded with weights_only=True, memory-mapped."""

    def __init__(self, path: Path):
        self.path = path
        self.tensors = torch_load(path)
        self.shapes = {k: tuple(v.shape) for k, v in self.tensors.items()}

    def get(self, key: str) -> torch.Tensor:
        return self.tensors[key]


def open_weights(path: Path) -> _SafetensorsFile | _TorchFile:
    """One weight file, memory-mapped: `.shapes` (key -> shape, from the header) and `.get(key)`."""
    return _SafetensorsFile(path) if path.suffix == ".safetensors" else _TorchFile(path)


def load_hf(directory: str | Path, device: torch.device | str | None = None,
            dtype: torch.dtype | None = None, progress: bool = False) -> Transformer:
    """A `Transformer` from a Hugging Face Llama directory, stored dtype unless `dtype`;
    trainable parameters, eval mode (`assign.finish`).

    Checks every key and shape of every file first; then, file by file, each tensor is
    memory-mapped and assigned (q/k: permuted back to Meta's row order on `device`).
    """
    from tqdm.auto import tqdm

    directory = Path(directory)
    args = read_hf_args(directory)
    files, where = weight_files(directory)
    opened = [open_weights(p) for p in files]  # headers only
    found = {}
    for f in opened:
        for key, shape in f.shapes.items():
            if key.endswith(IGNORED_SUFFIXES):
                continue
            if where is not None and where.get(key) != f.path:
                raise CheckpointError(f"{f.path} holds {key}, but the index says it is in "
                                      f"{where.get(key, 'no file')}")
            found[our_name(key) or key] = shape  # an unknown key keeps its name: check_shapes lists it
    check_shapes(found, args, str(directory))
    model = empty_model(args)
    with tqdm(total=len(found), desc="loading", unit="tensor", disable=not progress) as bar:
        for i, f in enumerate(opened):
            for key in f.shapes:
                if key.endswith(IGNORED_SUFFIXES):
                    continue
                # On `device` first, so that q/k are permuted there: a copy of one tensor at a time
                ours, tensor = from_hf(key, f.get(key).to(device=device, dtype=dtype), args)
                put_tensor(model, ours, tensor)
                bar.update()
            opened[i] = None  # the file is unmapped once its tensors are all assigned
    return finish(model, device)


