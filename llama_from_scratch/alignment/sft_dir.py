"""The folder an SFT run leaves: a training directory that every checkpoint reader already knows.

    DIR/run.json        training.run's format: the base's ModelArgs, the SFT settings as
                        TrainSettings (warmup 0, seq_len the context), "data": {"kind": "sft", ...}
    DIR/checkpoint.pt   {"format", "step", "model", "optimizer": {}} (training.checkpoint.save_state)
    DIR/tokenizer.*     the base's tokenizer, copied (tokenizer.model or llama2.c's tokenizer.bin)
    DIR/metrics.jsonl   one line per step: {"step", "lr", "loss", "grad_norm"}
    DIR/sft.json        what it was trained on: the base, the data's source and counts, the
                        settings, the first and final loss

`checkpoints.load.load_model` (so `generate`/`chat --checkpoint DIR` and `align sample`) reads it
as a training directory. The folder is built as a hidden sibling of DIR and renamed into place, so
a kill never leaves half of one; --overwrite replaces only a folder with a run.json (a training
or SFT directory), never anything else. Not kept: the optimizer's state (it would triple the
file), so an SFT folder cannot be resumed by `train --resume`.

Chapter: instruction_tuning.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llama_from_scratch.alignment.errors import AlignmentError
from llama_from_scratch.alignment.sft import SFTSettings, final_loss
from llama_from_scratch.model.transformer import Transformer
from llama_from_scratch.training.checkpoint import atomic_folder, atomic_write, save_state
from llama_from_scratch.training.run import CHECKPOINT_FILE, METRICS_FILE, TrainSettings, is_training_dir, write_run

SFT_FILE = "sft.json"


def check_out(out: str | Path, overwrite: bool) -> Path:
    """`out` when SFT may write there: missing, an empty folder, or (with `overwrite`) a training
    directory. Anything else is an AlignmentError (nothing else is ever deleted)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise AlignmentError(f"--out {out} is a file, not a folder; give a folder for the SFT model")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise AlignmentError(f"--out {out} exists and is not empty; pass --overwrite to replace it, or "
                                 "give another folder")
        if not is_training_dir(out):
            raise AlignmentError(f"--out {out} is not a training or SFT directory (no run.json); refusing to "
                                 "delete it even with --overwrite: give another folder")
    return out


def save_sft(out: str | Path, model: Transformer, tokenizer_path: str | Path, settings: SFTSettings,
             records: list[dict], info: dict[str, Any], overwrite: bool = False) -> Path:
    """Write the SFT directory (see the module docstring) and return its path.

    `info` (the base checkpoint, the data's source and counts, ...) goes into run.json's "data"
    and sft.json. The folder is built as a hidden sibling and renamed into place.
    """
    from llama_from_scratch.tokenizer.load import load_tokenizer
    from llama_from_scratch.tokenizer.sentencepiece_bpe import SentencePieceBPE

    out = check_out(out, overwrite).absolute()
    with atomic_folder(out) as tmp:  # an existing (empty, or --overwrite) folder is replaced only on success
        kind = "tokenizer.model" if isinstance(load_tokenizer(tokenizer_path), SentencePieceBPE) else "tokenizer.bin"
        shutil.copyfile(tokenizer_path, tmp / kind)
        train = TrainSettings(seq_len=model.args.max_seq_len, batch_size=settings.batch_size, max_steps=settings.steps,
                              lr=settings.lr, warmup_steps=0, final_lr_ratio=settings.final_lr_ratio,
                              weight_decay=settings.weight_decay, clip=settings.clip, seed=settings.seed,
                              save_every=settings.steps)
        write_run(tmp, model.args, train, {"kind": "sft", **info}, kind)
        save_state(tmp / CHECKPOINT_FILE, {"format": 1, "step": settings.steps, "model": model.state_dict(),
                                           "optimizer": {}})
        lines = "".join(json.dumps(r) + "\n" for r in records)
        atomic_write(tmp / METRICS_FILE, lambda f: f.write(lines.encode()))
        summary = {**info, "settings": asdict(settings), "first_loss": records[0]["loss"],
                   "final_loss": final_loss(records)}
        atomic_write(tmp / SFT_FILE, lambda f: f.write((json.dumps(summary, indent=2) + "\n").encode()))
    return out
