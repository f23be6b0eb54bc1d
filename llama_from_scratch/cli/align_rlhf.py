"""`align rejection`, `align ppo`, `align dpo`: the three RLHF methods of chapter 12.

    align rejection --policy DIR --reward DIR --out DIR [--k K] [--seed S] [--prompts N]
                    [--temperature T] [--steps N] [--lr LR] [--overwrite]
    align ppo --policy DIR --reward DIR --out DIR [--beta B] [--steps N] [--seed S] [--lr LR]
              [--rollouts N] [--max-kl NATS] [--overwrite]
    align dpo --policy DIR --pairs FILE --out DIR [--beta B] [--seed S] [--steps N] [--lr LR]
              [--batch-size B] [--max-kl NATS] [--overwrite]
        -> DIR, a policy folder (alignment.policy_dir: `align sample`, `generate` and `chat
           --checkpoint DIR` read it), and one JSON line on stdout: {"method", "out", "policy",
           "heldout": the true score's terms and "kl" to --policy on the held-out topics
           (alignment.policy_eval, 16 answers per topic, seed 0), ..., "seconds"}

--policy is the SFT model (`align sft --out`), also the KL's reference; --reward a reward model of
its tokenizer (`align reward --out`); --pairs the pairs.jsonl of one (DPO reads its training pairs
only). Prompts come from the training topics; --heldout-per-topic N sets the measurement's size.

Checked before any model is loaded, each failure exit status 2 with one line on stderr: a
non-empty --out without --overwrite (or, with it, a folder that is not a policy folder), a
--policy that is a reward directory or not a training/SFT directory, a --reward that is a policy or
of another tokenizer, a malformed --pairs line (named), numbers out of range. A loss, gradient or
reward that stops being finite stops the run: the policy of the last good step is saved (its JSON
says "stopped") and the exit status is 2, naming the step. Progress goes to stderr.

Chapter: rlhf.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from llama_from_scratch.cli.main import CLIError


def _common(parser: argparse.ArgumentParser, reward: bool) -> None:
    parser.add_argument("--policy", required=True, metavar="DIR", help="the SFT directory (`align sft --out`)")
    if reward:
        parser.add_argument("--reward", required=True, metavar="DIR", help="the reward model (`align reward --out`)")
    parser.add_argument("--out", required=True, metavar="DIR", help="the new policy's folder (new or empty)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing policy folder at --out")
    parser.add_argument("--heldout-per-topic", type=int, default=16, metavar="N",
                        help="answers per held-out topic in the measurement (default 16: 128 answers)")


def add_rlhf_parsers(sub: argparse._SubParsersAction) -> None:
    """The `rejection`, `ppo` and `dpo` actions' options, on align's subcommand parsers."""
    from llama_from_scratch.alignment.dpo import DPOSettings
    from llama_from_scratch.alignment.ppo_train import PPOSettings
    from llama_from_scratch.alignment.rejection import RejectionSettings

    r, p, d = RejectionSettings(), PPOSettings(), DPOSettings()
    rej = sub.add_parser("rejection", help="best of K answers by the reward model, then fine-tuning on them",
                         description="Rejection-sampling fine-tuning (LLaMA 2, section 3.2.3).")
    _common(rej, reward=True)
    rej.add_argument("--k", type=int, default=r.k, metavar="K", help=f"answers per prompt (default {r.k})")
    rej.add_argument("--seed", type=int, default=1, metavar="S", help="seeds the answers and batches (default 1)")
    rej.add_argument("--prompts", type=int, default=r.prompts, metavar="N",
                     help=f"training prompts (default {r.prompts})")
    rej.add_argument("--temperature", type=float, default=r.temperature, metavar="T",
                     help=f"sampling temperature (default {r.temperature}; LLaMA 2 found 1.2-1.3 best for "
                          "10-100 samples of its RLHF model; alignment/rejection.py has the measurements)")
    rej.add_argument("--steps", type=int, default=r.sft.steps, metavar="N",
                     help="fine-tuning steps (default %(default)s)")
    rej.add_argument("--lr", type=float, default=r.sft.lr, metavar="LR", help="fine-tuning LR (default %(default)s)")
    ppo = sub.add_parser("ppo", help="PPO against the reward model with a per-token KL penalty",
                         description="PPO with a KL penalty to the SFT model (LLaMA 2, section 3.2.3).")
    _common(ppo, reward=True)
    ppo.add_argument("--beta", type=float, default=p.beta, metavar="B", help=f"KL penalty (default {p.beta})")
    ppo.add_argument("--steps", type=int, default=p.steps, metavar="N", help=f"PPO iterations (default {p.steps})")
    ppo.add_argument("--seed", type=int, default=1, metavar="S", help="seeds rollouts, prompts, value head (default 1)")
    ppo.add_argument("--lr", type=float, default=p.lr, metavar="LR", help=f"constant learning rate (default {p.lr})")
    ppo.add_argument("--rollouts", type=int, default=p.rollouts, metavar="N",
                     help=f"answers per iteration (default {p.rollouts})")
    ppo.add_argument("--max-kl", type=float, default=p.max_kl, metavar="NATS",
                     help=f"stop when a batch's KL passes NATS (default {p.max_kl}; inf: never)")
    dpo = sub.add_parser("dpo", help="direct preference optimisation on the labeler's pairs",
                         description="DPO (Rafailov et al. 2023) on the training pairs of a reward folder.")
    _common(dpo, reward=False)
    dpo.add_argument("--pairs", required=True, metavar="FILE", help="pairs.jsonl of an `align reward` folder")
    dpo.add_argument("--beta", type=float, default=d.beta, metavar="B", help=f"DPO's beta (default {d.beta})")
    dpo.add_argument("--seed", type=int, default=1, metavar="S", help="seeds the batches (default 1)")
    dpo.add_argument("--steps", type=int, default=d.steps, metavar="N", help=f"at most N steps (default {d.steps})")
    dpo.add_argument("--lr", type=float, default=d.lr, metavar="LR", help=f"learning rate (default {d.lr})")
    dpo.add_argument("--batch-size", type=int, default=d.batch_size, metavar="B",
                     help=f"pairs per step (default {d.batch_size})")
    dpo.add_argument("--max-kl", type=float, default=d.max_kl, metavar="NATS",
                     help=f"stop when the KL on training prompts passes NATS (default {d.max_kl}; inf: never)")


def _settings(make, **kwargs):
    from llama_from_scratch.alignment.errors import AlignmentError

    if kwargs.get("seed", 0) < 0:
        raise CLIError(f"--seed must be >= 0, got {kwargs['seed']}")
    if kwargs.pop("heldout_per_topic", 1) < 1:
        raise CLIError("--heldout-per-topic must be at least 1")
    try:
        return make(**kwargs)
    except AlignmentError as err:
        raise CLIError(f"bad option: {err}") from None


def _load(policy: str, reward: str | None, out: str, overwrite: bool):
    """Check everything, then load: (policy model, reference copy, tokenizer, reward model or None)."""
    import torch

    from llama_from_scratch.alignment.policy_dir import check_out_folder
    from llama_from_scratch.alignment.reward_dir import check_policy, check_reward_for, load_reward_model
    from llama_from_scratch.alignment.sampler import load_tokenizer_for
    from llama_from_scratch.checkpoints.errors import CheckpointError
    from llama_from_scratch.checkpoints.load import load_model, read_args
    from llama_from_scratch.training.run import is_training_dir

    policy_dir = check_policy(policy)
    if reward is not None:
        check_reward_for(reward, policy_dir)
    check_out_folder(out, overwrite, is_training_dir, "a policy folder (no run.json)")
    try:
        tokenizer = load_tokenizer_for(policy_dir, read_args(policy_dir).vocab_size)
        model = load_model(policy_dir, dtype=torch.float32)
        reference = load_model(policy_dir, dtype=torch.float32)
    except (CheckpointError, OSError) as err:
        raise CLIError(f"--policy {policy}: {err}") from None
    return model, reference, tokenizer, (load_reward_model(reward) if reward is not None else None)


def _finish(method: str, args: argparse.Namespace, model, reference, tokenizer, train, info: dict, records: list,
            start: float, stopped: str | None = None) -> int:
    from llama_from_scratch.alignment.policy_dir import save_policy
    from llama_from_scratch.alignment.policy_eval import measure_policy
    from llama_from_scratch.training.run import tokenizer_file

    print("measuring on the held-out topics (true score, KL to --policy)", file=sys.stderr)
    heldout = measure_policy(model, reference, tokenizer, args.heldout_per_topic)
    summary = {"method": method, "policy": str(args.policy), **info, "heldout": heldout,
               **({"stopped": stopped} if stopped else {})}
    out = save_policy(Path(args.out), model, tokenizer_file(args.policy), train, method,
                      {"policy": str(args.policy), **info}, summary, records)
    line = {"method": method, "out": str(out), "policy": str(args.policy),
            "heldout": {k: v for k, v in heldout.items() if k not in ("by_topic", "samples")}, **info,
            **({"stopped": stopped} if stopped else {}), "seconds": round(time.perf_counter() - start, 1)}
    print(json.dumps(line))
    if stopped:
        raise CLIError(stopped)
    return 0


def run_rejection(args: argparse.Namespace) -> int:
    from llama_from_scratch.alignment.errors import TrainingStopped
    from llama_from_scratch.alignment.rejection import (RejectionSettings, best_of_k, candidates,
                                                        training_prompts)
    from llama_from_scratch.alignment.sft import SFTSettings, final_loss, finetune
    from llama_from_scratch.alignment.sft_dir import train_settings
    from llama_from_scratch.alignment.task import load_topics

    start = time.perf_counter()
    sft = _settings(SFTSettings, steps=args.steps, lr=args.lr, seed=args.seed)
    settings = _settings(RejectionSettings, heldout_per_topic=args.heldout_per_topic, prompts=args.prompts,
                         k=args.k, temperature=args.temperature, sft=sft, seed=args.seed)
    model, reference, tokenizer, reward = _load(args.policy, args.reward, args.out, args.overwrite)
    prompts = training_prompts(load_topics().train, settings.prompts)
    print(f"sampling {settings.k} answers to each of {len(prompts)} training prompts (temperature "
          f"{settings.temperature})", file=sys.stderr)
    found = candidates(model, reward, tokenizer, prompts, settings.k, settings.seed, settings.temperature,
                       settings.max_new_tokens, progress=True)
    ks = list(range(1, settings.k + 1))
    curve = {"k": ks, "reward_pick": best_of_k(found.rewards, found.true, ks).tolist(),
             "oracle_pick": best_of_k(found.true, found.true, ks).tolist()}
    best = found.best()
    stopped = None
    try:
        records = finetune(model, tokenizer, best, sft, progress=True)
    except TrainingStopped as err:
        records, stopped = err.records, f"rejection fine-tuning stopped at step {err.step}: {err}"
        print(stopped, file=sys.stderr)
    train = train_settings(model, sft)
    info = {"reward": str(args.reward), "settings": {**asdict(settings), "sft": asdict(sft)}, "examples": len(best),
            "best_of_k_train": curve, "picked_reward": float(found.rewards.max(axis=1).mean()),
            "picked_true_score": float(found.true[range(len(best)), found.rewards.argmax(axis=1)].mean()),
            "final_loss": final_loss(records) if records else None}
    return _finish("rejection", args, model, reference, tokenizer, train, info, records, start, stopped)


def run_ppo(args: argparse.Namespace) -> int:
    from llama_from_scratch.alignment.errors import TrainingStopped
    from llama_from_scratch.alignment.policy_dir import plain
    from llama_from_scratch.alignment.ppo_train import PPOSettings, train_ppo
    from llama_from_scratch.alignment.task import load_topics
    from llama_from_scratch.training.run import TrainSettings

    start = time.perf_counter()
    settings = _settings(PPOSettings, heldout_per_topic=args.heldout_per_topic, beta=args.beta, steps=args.steps,
                         lr=args.lr, rollouts=args.rollouts, max_kl=args.max_kl, seed=args.seed)
    model, reference, tokenizer, reward = _load(args.policy, args.reward, args.out, args.overwrite)
    stopped = None
    try:
        records = train_ppo(model, reference, reward, tokenizer, load_topics().train, settings, progress=True)
    except TrainingStopped as err:
        records, stopped = err.records, f"PPO stopped at iteration {err.step}: {err}"
        print(stopped, file=sys.stderr)
    train = TrainSettings(seq_len=model.args.max_seq_len, batch_size=settings.rollouts, max_steps=max(1, len(records)),
                          lr=settings.lr, warmup_steps=0, final_lr_ratio=1.0, weight_decay=settings.weight_decay,
                          clip=settings.grad_clip, seed=settings.seed, save_every=max(1, len(records)))
    last = records[-1] if records else {}
    over = bool(records) and records[-1]["kl"] > settings.max_kl  # stopped there, two updates back kept
    info = {"reward": str(args.reward), "settings": plain(asdict(settings)), "iterations": len(records),
            "updates_kept": max(0, len(records) - 2) if over else len(records),
            "final": {k: last.get(k) for k in ("reward", "kl", "true_score")}}
    return _finish("ppo", args, model, reference, tokenizer, train, info, records, start, stopped)


def run_dpo(args: argparse.Namespace) -> int:
    from llama_from_scratch.alignment.dpo import DPOSettings, read_pairs, train_dpo
    from llama_from_scratch.alignment.errors import TrainingStopped
    from llama_from_scratch.alignment.policy_dir import plain
    from llama_from_scratch.training.run import TrainSettings

    start = time.perf_counter()
    settings = _settings(DPOSettings, heldout_per_topic=args.heldout_per_topic, beta=args.beta, steps=args.steps,
                         lr=args.lr, batch_size=args.batch_size, max_kl=args.max_kl, seed=args.seed)
    pairs, counts = read_pairs(args.pairs)
    model, reference, tokenizer, _ = _load(args.policy, None, args.out, args.overwrite)
    print(f"DPO on {len(pairs)} training pairs ({counts['heldout']} held-out lines left out)", file=sys.stderr)
    stopped = None
    try:
        records = train_dpo(model, reference, tokenizer, pairs, settings, progress=True)
    except TrainingStopped as err:
        records, stopped = err.records, f"DPO stopped at step {err.step}: {err}"
        print(stopped, file=sys.stderr)
    measured = [r for r in records if "kl" in r]
    kept = max([r["step"] for r in measured if r["kl"] <= settings.max_kl], default=0)
    train = TrainSettings(seq_len=model.args.max_seq_len, batch_size=settings.batch_size,
                          max_steps=max(1, len(records)), lr=settings.lr,
                          warmup_steps=min(settings.warmup, len(records)), final_lr_ratio=1.0,
                          weight_decay=settings.weight_decay, clip=settings.clip, seed=settings.seed,
                          save_every=max(1, len(records)))
    info = {"pairs": str(args.pairs), "pair_counts": counts, "settings": plain(asdict(settings)),
            "steps_run": len(records),
            "kept_step": kept if measured and measured[-1]["kl"] > settings.max_kl else len(records),
            "train_kl": [{"step": r["step"], "kl": r["kl"]} for r in measured]}
    return _finish("dpo", args, model, reference, tokenizer, train, info, records, start, stopped)
