"""Write a model as a Hugging Face Llama directory: config.json + safetensors (or .bin).

The inverse of `hf_reader.load_hf`: Meta's names become Hugging Face's, and the rows of
wq and wk are permuted for rotate-half RoPE (`hf_adapter.to_hf`, one tensor at a time).
config.json carries RoPE's theta both as transformers 4.x reads it (`rope_theta`) and as
5.x does (`rope_parameters`). safetensors refuses tensors that share memory, so a tied output matrix
is not written (`tie_word_embeddings` makes transformers re-tie it) and views are copied.
Not handled: RoPE scaling, tokenizer files (copy tokenizer.model yourself).

Chapter: real_weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from llama_from_scratch.checkpoints.dtypes import dtype_bytes
from llama_from_scratch.checkpoints.hf_adapter import hf_name, to_hf
from llama_from_scratch.checkpoints.hf_config import hf_config_dict
from llama_from_scratch.model.transformer import Transformer


def _owned(t: torch.Tensor) -> torch.Tensor:
    """`t` on the CPU in memory of its own: safetensors refuses tensors that share memory."""
    t = t.detach().cpu().contiguous()
    return t.clone() if t.untyped_storage().nbytes() != t.nbytes else t


def save_hf(model: Transformer, directory: str | Path, dtype: torch.dtype | None = None,
            max_shard_bytes: int | None = None, safe: bool = True) -> list[Path]:
    """Write `model` as a Hugging Face Llama directory that `LlamaForCausalLM.from_pretrained` loads.

    safetensors (`safe=True`) or pytorch_model.bin; one file, or shards of at most
    `max_shard_bytes` with an index. One file's tensors at a time are gathered on the CPU,
    so with shards a model on a GPU needs only a shard's worth of RAM. A tied output matrix
    is not written (safetensors refuses shared tensors; `tie_word_embeddings` tells
    transformers to re-tie it). Returns the written weight files.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    args = model.args
    state = model.state_dict()
    dtype = dtype or state["norm.weight"].dtype
    keys = [k for k in state if not (k == "output.weight" and args.tie_embeddings)]
    nbytes = {k: state[k].numel() * dtype_bytes(dtype) for k in keys}
    groups: list[list[str]] = [[]]
    size = 0
    for key in keys:
        if max_shard_bytes is not None and groups[-1] and size + nbytes[key] > max_shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(key)
        size += nbytes[key]
    stem, ext = ("model", "safetensors") if safe else ("pytorch_model", "bin")
    names = ([f"{stem}.{ext}"] if len(groups) == 1 else
             [f"{stem}-{i + 1:05d}-of-{len(groups):05d}.{ext}" for i in range(len(groups))])
    paths = []
    for name, group in zip(names, groups):
        tensors = {}
        for ours in group:
            theirs, tensor = to_hf(ours, state[ours].detach().to(dtype=dtype), args)
            tensors[theirs] = _owned(tensor)
        path = directory / name
        if safe:
            save_file(tensors, str(path), metadata={"format": "pt"})  # transformers checks "format"
        else:
            torch.save(tensors, path)
        paths.append(path)
        del tensors
    if len(groups) > 1:
        index = {"metadata": {"total_size": sum(nbytes.values())},
                 "weight_map": {hf_name(k): name for name, group in zip(names, groups) for k in group}}
        (directory / f"{stem}.{ext}.index.json").write_text(json.dumps(index, indent=2) + "\n")
    (directory / "config.json").write_text(json.dumps(hf_config_dict(args, dtype), indent=2) + "\n")
    return paths
