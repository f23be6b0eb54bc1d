"""`python -m llama_from_scratch align reward`: a reward model trained on the labeler's preferences.

    align reward --policy DIR --out DIR [--pairs N] [--margin none|small|large] [--seed S]
                 [--overwrite] [--heldout-pairs N] [--eval-seed S] [--epochs E]
                 [--batch-size B] [--lr LR] [--max-new-tokens N]
        -> DIR, a reward directory (alignment.reward_dir), and one JSON line on stdout:
           {"accuracy": held-out pairwise accuracy, "accuracy_by_strength": {strength: accuracy},
            "pairs_by_strength", "correlation": {"pearson", "spearman"}, "train_accuracy",
            "margin", "pairs": {training counts}, "heldout_pairs": {held-out counts}, "out",
            "policy", "seconds"}

The SFT policy at --policy answers --pairs prompts about the TRAINING topics twice each; the
simulated labeler picks one with a strength; bad pairs are skipped and counted
(alignment.preferences). The reward model (the policy's body with a scalar head) trains on those
with the ranking loss and --margin (LLaMA 2's Table 27; default small). --heldout-pairs pairs
about the HELD-OUT topics, drawn with --eval-seed (default 0, so every --seed and --margin is
measured on the same pairs), are the measurement set: never trained on. "accuracy" is measured
on them (a tie counts as wrong); "correlation" is the reward against the true score on their
answers; "train_accuracy" is measured on the first 512 training pairs (memorising shows there).
--seed seeds the training pairs, the head and the order of the batches.

Checked before the policy is loaded, each failure exit status 2 with one line on stderr: a
non-empty --out without --overwrite (or, with it, a folder that is not a reward directory), a
--policy that is a reward directory or not an SFT/training directory, numbers out of range.
Progress goes to stderr. The defaults (8,192 pairs, one epoch, as LLaMA 2's one epoch) take
about 15 minutes on one CPU thread; `--pairs 1024 --epochs 2` takes 4 but learns little more
than chance (alignment/reward_train.py has the measurements). Not handled: reusing the pairs of
an earlier run (sampling them is the cheap part: about 20 ms an answer on one thread).

Chapter: reward_model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict

from llama_from_scratch.cli.main import CLIError

TRAIN_CHECK = 512  # training pairs re-scored for "train_accuracy"


def add_reward_parser(sub: argparse._SubParsersAction) -> None:
    """The `reward` action's options, on align's subcommand parsers."""
    from llama_from_scratch.alignment.reward_model import MARGINS

    reward = sub.add_parser("reward", help="train a reward model on labelled answer pairs of an SFT policy",
                            description="Sample answer pairs from an SFT policy, label them with the simulated "
                                        "labeler, train a reward model, measure it on held-out topics.")
    reward.add_argument("--policy", required=True, metavar="DIR", help="the SFT directory (`align sft --out`)")
    reward.add_argument("--out", required=True, metavar="DIR", help="the reward model's folder (new or empty)")
    reward.add_argument("--pairs", type=int, default=8192, metavar="N",
                        help="training prompts, each answered twice (default 8192)")
    reward.add_argument("--margin", choices=list(MARGINS), default="small",
                        help="LLaMA 2's Table 27 margin (default small; none: Bradley-Terry)")
    reward.add_argument("--seed", type=int, default=1, metavar="S",
                        help="seeds the training pairs, the head and the batches (default 1)")
    reward.add_argument("--overwrite", action="store_true", help="replace an existing reward directory at --out")
    reward.add_argument("--heldout-pairs", type=int, default=256, metavar="N",
                        help="held-out prompts, each answered twice: the measurement set (default 256)")
    reward.add_argument("--eval-seed", type=int, default=0, metavar="S", help="seeds the held-out pairs (default 0)")
    reward.add_argument("--epochs", type=int, default=1, metavar="E", help="passes over the pairs (default 1)")
    reward.add_argument("--batch-size", type=int, default=16, metavar="B", help="pairs per step (default 16)")
    reward.add_argument("--lr", type=float, default=1e-3, metavar="LR", help="peak learning rate (default 1e-3)")
    reward.add_argument("--max-new-tokens", type=int, default=256, metavar="N",
                        help="the longest answer sampled (default 256, as in measurement)")


def check_numbers(args: argparse.Namespace) -> None:
    for name in ("pairs", "heldout_pairs", "epochs", "batch_size", "max_new_tokens"):
        if getattr(args, name) < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    for name in ("seed", "eval_seed"):
        if getattr(args, name) < 0:
            raise CLIError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if not args.lr > 0:  # also NaN
        raise CLIError(f"--lr must be a positive number, got {args.lr}")


def run_reward(args: argparse.Namespace) -> int:
    import torch

    from llama_from_scratch.alignment.preferences import preference_pairs
    from llama_from_scratch.alignment.reward_dir import check_reward_out, check_policy, save_reward
    from llama_from_scratch.alignment.reward_eval import calibration, correlation, pairwise_accuracy
    from llama_from_scratch.alignment.reward_model import RewardModel
    from llama_from_scratch.alignment.reward_train import RewardSettings, score_pairs, train_reward
    from llama_from_scratch.alignment.sampler import load_tokenizer_for
    from llama_from_scratch.alignment.task import load_topics
    from llama_from_scratch.checkpoints.errors import CheckpointError
    from llama_from_scratch.checkpoints.load import load_model, read_args

    start = time.perf_counter()
    check_numbers(args)
    settings = RewardSettings(margin=args.margin, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                              seed=args.seed)
    policy = check_policy(args.policy)
    check_reward_out(args.out, args.overwrite)
    try:  # the tokenizer is found and checked before any weights are loaded
        vocab_size = read_args(policy).vocab_size
        tokenizer = load_tokenizer_for(policy, vocab_size)  # the policy directory's own
        model = load_model(policy, dtype=torch.float32)
    except (CheckpointError, OSError) as err:
        raise CLIError(f"--policy {policy}: {err}") from None
    topics = load_topics()
    train = preference_pairs(model, tokenizer, topics.train, args.pairs, args.seed, "train",
                             max_new_tokens=args.max_new_tokens, progress=True)
    print(f"training pairs: {json.dumps(train.counts)}", file=sys.stderr)
    heldout = preference_pairs(model, tokenizer, topics.heldout, args.heldout_pairs, args.eval_seed, "heldout",
                               max_new_tokens=args.max_new_tokens, progress=True)
    print(f"held-out pairs (measurement only): {json.dumps(heldout.counts)}", file=sys.stderr)
    if not heldout.pairs:
        raise CLIError("no held-out pair could be labelled (see the counts above): raise --heldout-pairs")
    reward = RewardModel(model, torch.Generator().manual_seed(args.seed))
    records = train_reward(reward, tokenizer, train.pairs, settings, progress=True)
    chosen, rejected = score_pairs(reward, tokenizer, heldout.pairs)
    strengths = [p.strength for p in heldout.pairs]
    metrics = pairwise_accuracy(chosen, rejected, strengths)
    scores = [p.chosen_score for p in heldout.pairs] + [p.rejected_score for p in heldout.pairs]
    try:
        metrics["correlation"] = correlation(list(chosen) + list(rejected), scores)
    except ValueError:  # every reward (or true score) the same: no correlation is defined
        metrics["correlation"] = {"pearson": None, "spearman": None}
    seen = train.pairs[:TRAIN_CHECK]  # enough to show memorising, at a fraction of the time
    train_chosen, train_rejected = score_pairs(reward, tokenizer, seen)
    metrics["train_accuracy"] = float((train_chosen > train_rejected).mean())
    a_minus_b = [c - r if p.chosen_is_a else r - c for p, c, r in zip(heldout.pairs, chosen, rejected)]
    curve = calibration(a_minus_b, [p.chosen_is_a for p in heldout.pairs], bins=min(10, len(heldout.pairs)))
    rows = [p.to_json() for p in train.pairs] + [{**p.to_json(), "chosen_reward": float(c), "rejected_reward": float(r)}
                                                  for p, c, r in zip(heldout.pairs, chosen, rejected)]
    info = {"settings": {**asdict(settings), "pairs": args.pairs, "heldout_pairs": args.heldout_pairs,
                         "eval_seed": args.eval_seed, "max_new_tokens": args.max_new_tokens},
            "counts": {"train": train.counts, "heldout": heldout.counts}, "metrics": metrics,
            "calibration": {k: v.tolist() for k, v in curve.items()}}
    out = save_reward(args.out, reward, policy, info, rows, records, overwrite=args.overwrite)
    summary = {**metrics, "margin": args.margin, "pairs": train.counts, "heldout_pairs": heldout.counts,
               "out": str(out), "policy": str(policy), "seconds": round(time.perf_counter() - start, 1)}
    print(json.dumps(summary))
    return 0
