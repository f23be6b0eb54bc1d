"""The folders alignment runs leave: who may write where, and a policy saved as a training directory.

    check_out_folder   `--out` of every `align` action: missing, an empty folder, or (with
                       --overwrite) a folder of the same kind (`is_ours`); anything else is
                       refused, and nothing that is not ours is ever deleted
    save_policy        a fine-tuned policy (SFT, rejection sampling, PPO, DPO) as a training
                       directory, so `checkpoints.load.load_model` (and `generate`, `chat
                       --checkpoint DIR`, `align sample`) reads it:

    DIR/run.json        training.run's format: the model's ModelArgs, the run's settings as
                        TrainSettings, "data": {"kind": "sft" | "rejection" | "ppo" | "dpo", ...}
    DIR/checkpoint.pt   {"format", "step", "model", "optimizer": {}} (training.checkpoint.save_state)
    DIR/tokenizer.*     the policy's tokenizer, copied (tokenizer.model or llama2.c's tokenizer.bin)
    DIR/metrics.jsonl   one line per step
    DIR/{kind}.json     what the run was and what it measured (the stage's own summary)

The folder is built as a hidden sibling of DIR and renamed into place (training.checkpoint.
atomic_folder), so a kill never leaves half of one. Not kept: the optimizer's state (it would
triple the file), so such a folder cannot be resumed by `train --resume`.

Chapter: instruction_tuning (also shown in: reward_model, rlhf).
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from llama_from_scratch.alignment.errors import AlignmentError
from llama_from_scratch.model.transformer import Transformer
from llama_from_scratch.training.checkpoint import atomic_folder, atomic_write, save_state
from llama_from_scratch.training.run import CHECKPOINT_FILE, METRICS_FILE, TrainSettings, write_run


def check_out_folder(out: str | Path, overwrite: bool, is_ours: Callable[[Path], bool], what: str) -> Path:
    """`out` when a run may write `what` (e.g. "an SFT directory (run.json)") there: missing, an
    empty folder, or, with `overwrite`, a folder for which `is_ours` holds. AlignmentError else."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise AlignmentError(f"--out {out} is a file, not a folder; give a folder for {what}")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise AlignmentError(f"--out {out} exists and is not empty; pass --overwrite to replace it, or give "
                                 "another folder")
        if not is_ours(out):
            raise AlignmentError(f"--out {out} is not {what}; refusing to delete it even with --overwrite: give "
                                 "another folder")
    return out


def plain(settings: dict) -> dict:
    """Settings with an infinite value (--max-kl inf) written as the string "inf": strict JSON,
    which outside scripts parse, has no Infinity."""
    return {k: "inf" if isinstance(v, float) and math.isinf(v) else v for k, v in settings.items()}


def json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=2) + "\n").encode()


def lines_bytes(rows: Sequence[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def save_policy(out: Path, model: Transformer, tokenizer_path: str | Path, train: TrainSettings, kind: str,
                info: dict[str, Any], summary: dict[str, Any], records: Sequence[dict]) -> Path:
    """Write the policy folder (module docstring) at `out`, already checked; return its absolute path.

    `info` goes into run.json's "data" (with "kind"), `summary` into `{kind}.json`.
    """
    from llama_from_scratch.tokenizer.load import load_tokenizer
    from llama_from_scratch.tokenizer.sentencepiece_bpe import SentencePieceBPE

    out = Path(out).absolute()
    with atomic_folder(out) as tmp:  # an existing folder is replaced only on success
        name = "tokenizer.model" if isinstance(load_tokenizer(tokenizer_path), SentencePieceBPE) else "tokenizer.bin"
        shutil.copyfile(tokenizer_path, tmp / name)
        write_run(tmp, model.args, train, {"kind": kind, **info}, name)
        save_state(tmp / CHECKPOINT_FILE, {"format": 1, "step": train.max_steps, "model": model.state_dict(),
                                           "optimizer": {}})
        atomic_write(tmp / METRICS_FILE, lambda f: f.write(lines_bytes(records)))
        atomic_write(tmp / f"{kind}.json", lambda f: f.write(json_bytes(summary)))
    return out
