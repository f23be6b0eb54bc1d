"""The folder a reward-model run leaves, and how to read it back.

    DIR/reward.json     {"format", "kind": "reward", "model": the body's ModelArgs, "policy",
                        "settings", "counts", "metrics" (held-out accuracy, ...), "tokenizer"}
    DIR/reward.pt       the RewardModel's state dict: "body.*" (a Transformer's keys) and "head.*"
    DIR/tokenizer.*     the policy's tokenizer, copied
    DIR/pairs.jsonl     every labelled pair, training and held-out, with its split (and, for
                        held-out pairs, the rewards the trained model gave)
    DIR/metrics.jsonl   one line per training step

reward.json is what makes the folder recognisable: `is_reward_dir`. There is deliberately no
run.json, so `load_model` (and `generate`, `chat`, `align sample`) refuse the folder: a reward
model scores text, it does not generate it. `check_policy` refuses a reward folder (and anything
but a training or SFT directory) where a policy is expected. The folder is built as a hidden
sibling of DIR and renamed into place, so a kill never leaves half of one; --overwrite replaces
only a folder with a reward.json. Not kept: the optimizer's state.

Chapter: reward_model.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from llama_from_scratch.alignment.errors import AlignmentError
from llama_from_scratch.alignment.policy_dir import check_out_folder, json_bytes, lines_bytes
from llama_from_scratch.alignment.reward_model import RewardModel
from llama_from_scratch.training.checkpoint import atomic_folder, atomic_write, save_state
from llama_from_scratch.training.run import METRICS_FILE, is_training_dir, tokenizer_file

REWARD_FILE, WEIGHTS_FILE, PAIRS_FILE = "reward.json", "reward.pt", "pairs.jsonl"


def is_reward_dir(path: str | Path) -> bool:
    return (Path(path) / REWARD_FILE).is_file()


def check_policy(policy: str | Path) -> Path:
    """`policy` when it is a training or SFT directory (what `align sft` or `train` write);
    AlignmentError for a reward directory or anything else."""
    policy = Path(policy)
    if is_reward_dir(policy):
        raise AlignmentError(f"--policy {policy} is a reward-model directory (it has {REWARD_FILE}), not a policy: "
                             "give the SFT directory that `align sft` wrote")
    if not is_training_dir(policy):
        raise AlignmentError(f"--policy {policy} is not an SFT or training directory (no run.json): give the "
                             "folder that `align sft --out DIR` wrote")
    return policy


def check_reward_out(out: str | Path, overwrite: bool) -> Path:
    """`out` when a reward run may write there (policy_dir.check_out_folder): missing, an empty
    folder, or (with `overwrite`) a reward directory."""
    return check_out_folder(out, overwrite, is_reward_dir, f"a reward-model directory (no {REWARD_FILE})")


def save_reward(out: str | Path, model: RewardModel, policy: str | Path, info: dict[str, Any],
                pairs: Sequence[dict], records: Sequence[dict], overwrite: bool = False) -> Path:
    """Write the reward directory (see the module docstring) and return its path.

    `info` (settings, counts, metrics, ...) goes into reward.json beside the body's ModelArgs.
    """
    from dataclasses import asdict

    out = check_reward_out(out, overwrite).absolute()
    with atomic_folder(out) as tmp:  # an existing (empty, or --overwrite) folder is replaced only on success
        tok = tokenizer_file(policy)
        shutil.copyfile(tok, tmp / tok.name)
        save_state(tmp / WEIGHTS_FILE, model.state_dict())
        atomic_write(tmp / PAIRS_FILE, lambda f: f.write(lines_bytes(pairs)))
        atomic_write(tmp / METRICS_FILE, lambda f: f.write(lines_bytes(records)))
        summary = {"format": 1, "kind": "reward", "model": asdict(model.body.args), "policy": str(policy),
                   **info, "tokenizer": tok.name}
        atomic_write(tmp / REWARD_FILE, lambda f: f.write(json_bytes(summary)))
    return out


def load_reward_model(folder: str | Path, device: torch.device | str | None = None) -> RewardModel:
    """The RewardModel of a reward directory, float32, eval mode, on `device` (default CPU).

    AlignmentError when `folder` is not a reward directory or its files are unreadable.
    """
    from llama_from_scratch.checkpoints.assign import load_state_dict_into
    from llama_from_scratch.checkpoints.errors import CheckpointError
    from llama_from_scratch.checkpoints.safe_load import torch_load
    from llama_from_scratch.model.config import ModelArgs

    folder = Path(folder)
    if not is_reward_dir(folder):
        raise AlignmentError(f"{folder} is not a reward-model directory (no {REWARD_FILE}); give the folder that "
                             "`align reward --out DIR` wrote")
    try:
        args = ModelArgs(**json.loads((folder / REWARD_FILE).read_text())["model"])
        state = torch_load(folder / WEIGHTS_FILE, mmap=False)
        body = load_state_dict_into(args, {k[5:]: v for k, v in state.items() if k.startswith("body.")},
                                    str(folder), device=device, dtype=torch.float32)
        model = RewardModel(body)
        model.head.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("head.")})
    except (CheckpointError, OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
        raise AlignmentError(f"{folder} is not a readable reward-model directory: {err}") from None
    return model.eval()


def check_reward_for(reward: str | Path, policy: str | Path) -> Path:
    """`reward` when it is a reward directory trained with the policy's tokenizer and vocabulary.

    AlignmentError for a policy (or anything else) given as --reward, or for a reward model of
    another vocabulary or tokenizer than `policy` (a checked training or SFT directory).
    """
    from llama_from_scratch.training.run import read_run

    reward = Path(reward)
    if not is_reward_dir(reward):
        if is_training_dir(reward):
            raise AlignmentError(f"--reward {reward} is a policy (a training or SFT directory with run.json), not a "
                                 "reward model: give the folder that `align reward --out DIR` wrote")
        raise AlignmentError(f"--reward {reward} is not a reward-model directory (no {REWARD_FILE}): give the "
                             "folder that `align reward --out DIR` wrote")
    try:
        info = json.loads((reward / REWARD_FILE).read_text())
        vocab = int(info["model"]["vocab_size"])
        reward_tokenizer = (reward / info["tokenizer"]).read_bytes()
        policy_vocab = read_run(policy)["model"].vocab_size
        policy_tokenizer = tokenizer_file(policy).read_bytes()
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise AlignmentError(f"--reward {reward} or --policy {policy} is unreadable: {err}") from None
    if vocab != policy_vocab or reward_tokenizer != policy_tokenizer:
        raise AlignmentError(f"--reward {reward} was trained with another tokenizer ({vocab} tokens) than --policy "
                             f"{policy} ({policy_vocab} tokens, its own tokenizer file): a reward model can only "
                             "score the token ids of its own vocabulary; train one for this policy with "
                             "`align reward --policy`")
    return reward
