"""A training run's directory: what it was asked to do, and how to read it back.

    DIR/run.json         the model's ModelArgs, the training settings, the data's identity
    DIR/tokenizer.model  the run's tokenizer (or tokenizer.bin for llama2.c's format)
    DIR/checkpoint.pt    the latest training state (training.checkpoint: written atomically)
    DIR/metrics.jsonl    one JSON object per optimizer step
    DIR/.lock            held by the running process (training.checkpoint.RunLock)

`load_trained_model` turns such a directory into a `Transformer`, so `generate` and `chat`
(through `checkpoints.load.load_model`) read it like any other checkpoint.

Chapter: pretraining.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from llama_from_scratch.model.config import ModelArgs
from llama_from_scratch.training.checkpoint import TrainingError, atomic_write, load_state

RUN_FILE, CHECKPOINT_FILE, METRICS_FILE = "run.json", "checkpoint.pt", "metrics.jsonl"
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.bin")  # SentencePiece, llama2.c


@dataclass(frozen=True)
class TrainSettings:
    """How a model is trained. The optimizer's defaults are LLaMA 2's (Touvron et al. 2023,
    section 2.2): AdamW with beta1 0.9, beta2 0.95, eps 1e-5, weight decay 0.1, gradient
    clipping at 1.0, warmup then cosine decay to 10% of the peak learning rate. No dropout."""

    seq_len: int = 256
    batch_size: int = 32  # sequences per optimizer step, all micro-batches together
    grad_accum: int = 1  # micro-batches per optimizer step (batch_size / grad_accum sequences each)
    max_steps: int = 1000
    lr: float = 1e-3
    warmup_steps: int = 100
    final_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-5
    clip: float = 1.0
    eval_every: int = 100
    eval_batches: int = 20
    save_every: int = 100
    seed: int = 0
    dtype: str = "float32"  # "bfloat16": autocast the forward pass (weights stay float32)

    def __post_init__(self) -> None:
        for name in ("seq_len", "batch_size", "grad_accum", "max_steps", "eval_every", "eval_batches",
                     "save_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch size {self.batch_size} is not divisible by grad accumulation "
                             f"{self.grad_accum}: each of the {self.grad_accum} micro-batches needs the "
                             "same number of sequences")
        if not self.lr > 0 or self.warmup_steps < 0:
            raise ValueError(f"need lr > 0 and warmup_steps >= 0, got {self.lr} and {self.warmup_steps}")
        if self.warmup_steps > self.max_steps:
            raise ValueError(f"warmup_steps {self.warmup_steps} is more than max_steps {self.max_steps}: "
                             "the warmup must end within the run; lower --warmup-steps")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be float32 or bfloat16, got {self.dtype!r}")

    @property
    def micro_batch(self) -> int:
        return self.batch_size // self.grad_accum


# Settings a resumed run may change: they decide how long it runs and what it logs, not what it
# computes up to the step it resumes from.
MAY_CHANGE_ON_RESUME = frozenset({"max_steps", "eval_every", "eval_batches", "save_every"})


def write_run(folder: Path, model_args: ModelArgs, settings: TrainSettings, data: dict[str, Any],
              tokenizer_file: str) -> None:
    run = {"format": 1, "model": asdict(model_args), "train": asdict(settings), "data": data,
           "tokenizer": tokenizer_file}
    atomic_write(folder / RUN_FILE, lambda f: f.write((json.dumps(run, indent=2) + "\n").encode()))


def read_run(folder: str | Path) -> dict[str, Any]:
    """run.json as a dict, with "model" as `ModelArgs` and "train" as `TrainSettings`."""
    path = Path(folder) / RUN_FILE
    try:
        run = json.loads(path.read_text())
        run["model"] = ModelArgs(**run["model"])
        known = {f.name for f in fields(TrainSettings)}
        run["train"] = TrainSettings(**{k: v for k, v in run["train"].items() if k in known})
    except FileNotFoundError:
        raise TrainingError(f"{folder} is not a training directory: it has no {RUN_FILE}") from None
    except (ValueError, KeyError, TypeError) as err:
        raise TrainingError(f"{path} is unreadable or not written by this package ({err})") from err
    return run


def differences(before: dict[str, Any], after: dict[str, Any], ignore: frozenset = frozenset()) -> list[str]:
    """"name: before -> after" for every field that differs (dicts of plain values)."""
    return [f"{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in sorted(set(before) | set(after))
            if k not in ignore and before.get(k) != after.get(k)]


def tokenizer_file(folder: str | Path) -> Path:
    """The run's tokenizer file (tokenizer.model or tokenizer.bin)."""
    for name in TOKENIZER_FILES:
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    raise TrainingError(f"{folder} holds no {' or '.join(TOKENIZER_FILES)}: the run's tokenizer is missing")


def is_training_dir(path: str | Path) -> bool:
    return (Path(path) / RUN_FILE).is_file()


def load_trained_model(folder: str | Path, device: torch.device | str | None = None,
                       dtype: torch.dtype | None = None) -> Any:
    """The `Transformer` of a training directory's latest checkpoint: eval mode, trainable, on
    `device` in `dtype` (default: float32, as trained). Raises `TrainingError` if it is missing
    or corrupt."""
    from llama_from_scratch.checkpoints.assign import load_state_dict_into

    args = read_run(folder)["model"]
    state = load_state(Path(folder) / CHECKPOINT_FILE)
    return load_state_dict_into(args, state["model"], str(folder), device=device, dtype=dtype)
