"""Setting up (or resuming) a training run: its tokenizer, its data, its model.

The tokenizer is saved inside the run's folder, so the folder alone is enough to resume,
evaluate or generate. The data's identity (the text's and the tokenizer's sha256, the token
count) goes into run.json, and a resumed run must see the same data.

Chapter: pretraining.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llama_from_scratch.model.config import ModelArgs
from llama_from_scratch.model.transformer import Transformer
from llama_from_scratch.tokenizer.base import Tokenizer
from llama_from_scratch.tokenizer.sentencepiece_bpe import SentencePieceBPE
from llama_from_scratch.training.checkpoint import TrainingError, load_state
from llama_from_scratch.training.data import TokenFile, tokenize_file
from llama_from_scratch.training.run import CHECKPOINT_FILE, TrainSettings, tokenizer_file, write_run


def prepare_tokenizer(folder: Path, given: str | None, vocab_size: int | None, text_path: str) -> Tokenizer:
    """A new run's tokenizer, saved in `folder`: a copy of `given`, a BPE of `vocab_size` pieces
    trained on the first 90% of the text, or LLaMA 2's."""
    from llama_from_scratch import datafiles
    from llama_from_scratch.tokenizer.load import load_tokenizer
    from llama_from_scratch.tokenizer.sentencepiece_model import ModelFormatError

    for name in ("tokenizer.model", "tokenizer.bin"):  # a fresh start replaces an earlier one
        (folder / name).unlink(missing_ok=True)
    if vocab_size is not None:
        from llama_from_scratch.tokenizer.sentencepiece_model import write_model
        from llama_from_scratch.tokenizer.sentencepiece_trainer import train

        text = Path(text_path).read_text(encoding="utf-8")
        print(f"training a BPE tokenizer of {vocab_size} pieces on the first 90% of {text_path}", file=sys.stderr)
        try:
            write_model(train(text[: len(text) * 9 // 10], vocab_size), folder / "tokenizer.model")
        except ValueError as err:
            raise TrainingError(f"--vocab-size {vocab_size}: {err}") from None
        return run_tokenizer(folder)
    source = Path(given) if given else datafiles.path("llama2_tokenizer.model")
    try:
        tokenizer = load_tokenizer(source)
    except (OSError, ModelFormatError, ValueError) as err:
        raise TrainingError(f"--tokenizer {source}: {err}") from None
    kind = "tokenizer.model" if isinstance(tokenizer, SentencePieceBPE) else "tokenizer.bin"
    shutil.copyfile(source, folder / kind)
    return tokenizer


def run_tokenizer(folder: Path) -> Tokenizer:
    """The tokenizer saved in a run's folder (tokenizer.model or tokenizer.bin)."""
    from llama_from_scratch.tokenizer.load import load_tokenizer

    path = tokenizer_file(folder)
    try:
        return load_tokenizer(path)
    except (OSError, ValueError) as err:
        raise TrainingError(f"the run's tokenizer {path} cannot be read: {err}") from None


@dataclass
class RunData:
    """The token file's two splits, its identity for run.json, and bytes per validation token."""

    tokens: TokenFile
    identity: dict[str, Any]
    val_bytes_per_token: float

    @property
    def train(self) -> Any:
        return self.tokens.train

    @property
    def val(self) -> Any:
        return self.tokens.val


def open_data(text_path: str, tokenizer: Tokenizer, settings: TrainSettings) -> RunData:
    """Tokenize (or reuse the cached tokens of) `text_path`; both splits must hold a window."""
    try:
        tokens = tokenize_file(text_path, tokenizer)
        tokens.check_context(settings.seq_len)
    except (OSError, ValueError, TypeError) as err:  # CorpusError, CorpusTooShortError, ...
        raise TrainingError(f"--data {text_path}: {err}") from None
    meta = tokens.meta
    identity = {"text_sha256": meta["text_sha256"], "tokenizer_sha256": meta["tokenizer_sha256"],
                "n_tokens": meta["n_tokens"]}
    return RunData(tokens, identity, tokens.bytes_per_token("val"))


def build_model(args: ModelArgs, seed: int, device: torch.device) -> Transformer:
    """A freshly initialised model: `init_weights` with a generator seeded by `seed`."""
    with torch.device(device):
        model = Transformer(args)
    model.init_weights(torch.Generator().manual_seed(seed))
    return model


def write_new_run(folder: Path, args: ModelArgs, settings: TrainSettings, identity: dict[str, Any],
                  tokenizer: Tokenizer) -> None:
    for stale in ("metrics.jsonl", CHECKPOINT_FILE):  # a run killed before its first save
        (folder / stale).unlink(missing_ok=True)
    write_run(folder, args, settings, identity, tokenizer_file(folder).name)


def resume_state(folder: Path) -> dict[str, Any]:
    """The saved state, with metrics logged after it (by a killed run) dropped."""
    from llama_from_scratch.training.loop import trim_metrics

    state = load_state(folder / CHECKPOINT_FILE)
    trim_metrics(folder, int(state["step"]))
    return state
