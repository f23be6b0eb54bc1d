"""Hugging Face's checkpoint format: `config.json` + safetensors or pytorch_model*.bin files.

A directory such as `meta-llama/Llama-2-7b-hf` holds

    config.json                          the architecture (`LlamaConfig`)
    model.safetensors                    all weights in one file, or
    model-00001-of-00002.safetensors ... several files, with
    model.safetensors.index.json         {"weight_map": {hf key: file name}}
    pytorch_model.bin (+ .index.json)    the older pickle-based format (same layout)

Keys are Hugging Face's names and wq/wk rows are permuted for rotate-half RoPE
(`hf_convert`); loading maps them back and undoes the permutation, the one step that
must copy (a permutation is not a view). RoPE's theta is `rope_theta` in transformers 4.x
and `rope_parameters["rope_theta"]` in 5.x; the writer writes both, and an old config
with neither means 10,000. Not handled: RoPE scaling, biases, quantised checkpoints.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import torch

from llama_from_scratch.config import ModelArgs
from llama_from_scratch.hf_convert import from_hf_config, key_map
from llama_from_scratch.llama2c import CheckpointError
from llama_from_scratch.model import Transformer
from llama_from_scratch.rope import permute_to_adjacent, permute_to_rotate_half
from llama_from_scratch.weights import check_shapes, empty_model, finish, put_tensor, torch_load

# LlamaConfig's defaults, for keys an older config.json leaves out.
CONFIG_DEFAULTS = {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008,
                   "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": None,
                   "max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
                   "rope_theta": 10000.0, "rope_scaling": None, "attention_bias": False, "mlp_bias": False}
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)  # a buffer that 2023-era .bin files saved; recomputed
DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


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
    """A `Transformer` (eval mode) from a Hugging Face Llama directory, stored dtype unless `dtype`.

    Checks every key and shape of every file first; then, file by file, each tensor is
    memory-mapped and assigned (q/k: permuted back to Meta's row order on `device`).
    """
    from tqdm.auto import tqdm

    directory = Path(directory)
    args = read_hf_args(directory)
    files, where = weight_files(directory)
    opened = [open_weights(p) for p in files]  # headers only
    ours_of = {theirs: ours for ours, theirs in key_map(args.n_layers).items()}
    found = {}
    for f in opened:
        for key, shape in f.shapes.items():
            if key.endswith(IGNORED_SUFFIXES):
                continue
            if where is not None and where.get(key) != f.path:
                raise CheckpointError(f"{f.path} holds {key}, but the index says it is in "
                                      f"{where.get(key, 'no file')}")
            found[ours_of.get(key, key)] = shape  # an unknown key keeps its name: check_shapes lists it
    check_shapes(found, args, str(directory))
    model = empty_model(args)
    heads = {"attention.wq.weight": args.n_heads, "attention.wk.weight": args.kv_heads}
    with tqdm(total=len(found), desc="loading", unit="tensor", disable=not progress) as bar:
        for i, f in enumerate(opened):
            for key in f.shapes:
                if key.endswith(IGNORED_SUFFIXES):
                    continue
                ours = ours_of[key]
                tensor = f.get(key).to(device=device, dtype=dtype)
                n_heads = heads.get(ours.split(".", 2)[-1])
                if n_heads is not None:
                    tensor = permute_to_adjacent(tensor, n_heads)  # (out, dim): a copy, on `device`
                put_tensor(model, ours, tensor)
                bar.update()
            opened[i] = None  # the file is unmapped once its tensors are all assigned
    return finish(model, device)


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
    hf_of = key_map(args.n_layers)
    heads = {"attention.wq.weight": args.n_heads, "attention.wk.weight": args.kv_heads}
    keys = [k for k in state if not (k == "output.weight" and args.tie_embeddings)]
    nbytes = {k: state[k].numel() * state[k].new_empty((), dtype=dtype).element_size() for k in keys}
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
            tensor = state[ours].detach().to(dtype=dtype)
            n_heads = heads.get(ours.split(".", 2)[-1])
            if n_heads is not None:
                tensor = permute_to_rotate_half(tensor, n_heads)  # Meta's pairs -> rotate-half rows
            tensors[hf_of[ours]] = _owned(tensor)
        path = directory / name
        if safe:
            save_file(tensors, str(path), metadata={"format": "pt"})  # transformers checks "format"
        else:
            torch.save(tensors, path)
        paths.append(path)
        del tensors
    if len(groups) > 1:
        index = {"metadata": {"total_size": sum(nbytes.values())},
                 "weight_map": {hf_of[k]: name for name, group in zip(names, groups) for k in group}}
        (directory / f"{stem}.{ext}.index.json").write_text(json.dumps(index, indent=2) + "\n")
    (directory / "config.json").write_text(json.dumps(hf_config_dict(args, dtype), indent=2) + "\n")
    return paths


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
