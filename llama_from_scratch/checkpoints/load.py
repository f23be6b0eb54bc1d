"""One function for every checkpoint format: `load_model(path, device=..., dtype=...)`.

The format is recognised from what is on disk:

    directory with params.json      Meta's consolidated.NN.pth             (meta_format)
    directory with config.json      Hugging Face safetensors/bin           (hf_reader)
    file ending in .bin / .pt       llama2.c export / training checkpoint  (llama2c)

`read_args(path)` gives the architecture without loading any weights, so a memory
account (`inference.memory`) can be printed before committing gigabytes.

Chapter: real_weights.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from llama_from_scratch.checkpoints.assign import finish
from llama_from_scratch.checkpoints.dtypes import parse_dtype
from llama_from_scratch.checkpoints.errors import CheckpointError
from llama_from_scratch.model.config import ModelArgs
from llama_from_scratch.model.transformer import Transformer


def detect_format(path: str | Path) -> str:
    """"meta", "hf", "training", "llama2c-bin" or "llama2c-pt"; `CheckpointError` saying what was
    expected."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.is_dir():
        if (path / "run.json").is_file():  # written by `python -m llama_from_scratch train`
            return "training"
        if (path / "params.json").is_file():
            return "meta"
        if (path / "config.json").is_file():
            return "hf"
        raise CheckpointError(f"{path} is a directory without params.json (Meta's format), config.json "
                              "(Hugging Face's format) or run.json (a training run): point at the folder "
                              "that holds the weights")
    if path.suffix == ".bin":
        return "llama2c-bin"
    if path.suffix == ".pt":
        return "llama2c-pt"
    raise CheckpointError(f"{path}: unknown checkpoint format {path.suffix!r}; handled: a Meta directory "
                          "(params.json), a Hugging Face directory (config.json), llama2.c .bin or .pt")


def read_args(path: str | Path) -> ModelArgs:
    """The model's architecture, read without loading weights."""
    from llama_from_scratch.checkpoints import hf_config, llama2c, meta_format

    kind = detect_format(path)
    if kind == "meta":
        return meta_format.read_meta_args(path)
    if kind == "hf":
        return hf_config.read_hf_args(path)
    if kind == "training":
        return _training(lambda run: run.read_run(path)["model"])
    if kind == "llama2c-bin":
        return llama2c.header_args(llama2c.read_header(path))
    return _load_pt(path).args  # small files: reading it whole is fine


def read_dtype(path: str | Path) -> torch.dtype:
    """The dtype the weights are stored in (one small tensor is read, memory-mapped)."""
    from llama_from_scratch.checkpoints import hf_reader, meta_format
    from llama_from_scratch.checkpoints.safe_load import torch_load

    kind = detect_format(path)
    if kind == "meta":
        tensors = torch_load(meta_format.shard_paths(path)[0])
        return tensors.get("norm.weight", next(iter(tensors.values()))).dtype
    if kind == "hf":
        files, _ = hf_reader.weight_files(path)
        first = hf_reader.open_weights(files[0])
        key = next(k for k in first.shapes if not k.endswith(hf_reader.IGNORED_SUFFIXES))
        return first.get(key).dtype
    return torch.float32  # llama2.c files and training runs (float32 weights)


def read_special_ids(path: str | Path) -> tuple[int | None, tuple[int, ...]] | None:
    """(BOS id or None, EOS ids) as the checkpoint itself names them, or None if it names none.

    Hugging Face: config.json's `bos_token_id` and `eos_token_id` (an id, a list of ids, or
    null; a missing key means LlamaConfig's default, 1 and 2). llama2.c: BOS 1 and EOS 2, fixed
    by the format (run.c). Meta: params.json holds no token ids (they live in tokenizer.model),
    so None. Not read: generation_config.json.
    """
    import json

    from llama_from_scratch.tokenizer.llama2c import BOS_ID, EOS_ID

    kind = detect_format(path)
    if kind in ("meta", "training"):  # a training run's ids are its tokenizer's, saved beside it
        return None
    if kind.startswith("llama2c"):
        return BOS_ID, (EOS_ID,)
    config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    bos, eos_field = config.get("bos_token_id", 1), config.get("eos_token_id", 2)
    eos = [] if eos_field is None else eos_field if isinstance(eos_field, list) else [eos_field]
    if not all(type(i) is int for i in eos + ([] if bos is None else [bos])):  # bool is no id
        raise CheckpointError(f"{path}/config.json: bos_token_id {bos!r} and eos_token_id {eos_field!r} "
                              "must be integers (eos_token_id: or a list of them) or null")
    return None if bos is None and not eos else (bos, tuple(eos))


def load_model(path: str | Path, device: torch.device | str | None = None,
               dtype: torch.dtype | str | None = None, progress: bool = False) -> Transformer:
    """A `Transformer` from any handled checkpoint, on `device` (default CPU), in `dtype`
    (default: as stored; llama2.c files are float32).

    Whatever the format, the model comes back in one state: eval mode (dropout-free anyway,
    but `model.train()` is the caller's choice), every parameter trainable
    (`requires_grad=True`, so it can be fine-tuned as loaded), RoPE tables in float32 on
    `device`, a tied output matrix tied again. Inference must therefore not build an
    autograd graph by accident: `generate`/`stream` run under `torch.inference_mode()`
    themselves; a direct `model(tokens)` belongs inside `with torch.inference_mode():`.
    Parameters memory-mapped from the file (own dtype and CPU) are private copy-on-write
    mappings: an optimizer step changes this process's pages, never the checkpoint.
    """
    from llama_from_scratch.checkpoints import hf_reader, llama2c, meta_format

    dtype = parse_dtype(dtype)
    device = torch.device(device) if device is not None else None
    kind = detect_format(path)
    if kind == "meta":
        return meta_format.load_meta(path, device, dtype, progress=progress)
    if kind == "hf":
        return hf_reader.load_hf(path, device, dtype, progress=progress)
    if kind == "training":
        return _training(lambda run: run.load_trained_model(path, device, dtype))
    model = llama2c.load_bin(path) if kind == "llama2c-bin" else _load_pt(path)
    return finish(model.to(device=device, dtype=dtype), device)  # eval mode, trainable, re-tied


def _load_pt(path: str | Path) -> Transformer:
    """llama2.c's training checkpoint; a refused pickle becomes a `CheckpointError` that says why."""
    from llama_from_scratch.checkpoints import llama2c

    try:
        return llama2c.load_pt(path)
    except pickle.UnpicklingError as err:  # weights_only=True refused it
        raise CheckpointError(f"refusing to load {path}: it holds pickled objects other than tensors, "
                              "which could run code on your machine, so weights_only=True rejected it. "
                              "Use a checkpoint from a source you trust.") from err


def _training(read):
    """Call `read(training.run)`; a training directory's errors become `CheckpointError`s."""
    from llama_from_scratch.training import run
    from llama_from_scratch.training.checkpoint import TrainingError

    try:
        return read(run)
    except TrainingError as err:
        raise CheckpointError(str(err)) from err
