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

from dataclasses import asdict
from pathlib import Path
from typing import Any

from llama_from_scratch.alignment.policy_dir import check_out_folder, save_policy
from llama_from_scratch.alignment.sft import SFTSettings, final_loss
from llama_from_scratch.model.transformer import Transformer
from llama_from_scratch.training.run import TrainSettings, is_training_dir


def check_out(out: str | Path, overwrite: bool) -> Path:
    """`out` when SFT may write there (policy_dir.check_out_folder): missing, an empty folder, or
    (with `overwrite`) a training directory."""
    return check_out_folder(out, overwrite, is_training_dir, "a training or SFT directory (no run.json)")


def train_settings(model: Transformer, settings: SFTSettings) -> TrainSettings:
    """An SFT run's settings as run.json's TrainSettings (no warmup, the model's context as seq_len);
    also those of rejection sampling's fine-tuning."""
    return TrainSettings(seq_len=model.args.max_seq_len, batch_size=settings.batch_size, max_steps=settings.steps,
                         lr=settings.lr, warmup_steps=0, final_lr_ratio=settings.final_lr_ratio,
                         weight_decay=settings.weight_decay, clip=settings.clip, seed=settings.seed,
                         save_every=settings.steps)


def save_sft(out: str | Path, model: Transformer, tokenizer_path: str | Path, settings: SFTSettings,
             records: list[dict], info: dict[str, Any], overwrite: bool = False) -> Path:
    """Write the SFT directory (see the module docstring) and return its path.

    `info` (the base checkpoint, the data's source and counts, ...) goes into run.json's "data"
    and sft.json. The folder is built as a hidden sibling and renamed into place.
    """
    out = check_out(out, overwrite)
    train = train_settings(model, settings)
    summary = {**info, "settings": asdict(settings), "first_loss": records[0]["loss"],
               "final_loss": final_loss(records)}
    return save_policy(out, model, tokenizer_path, train, "sft", info, summary, records)
