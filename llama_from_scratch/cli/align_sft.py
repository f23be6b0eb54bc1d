"""`python -m llama_from_scratch align sft`: supervised fine-tuning of a base checkpoint.

    align sft --base CKPT [--tokenizer FILE] --out DIR [--steps N] [--seed S] [--overwrite]
              [--data FILE.jsonl | --topics T1,T2,...] [--stories N] [--min-mentions M]
              [--early-words W] [--min-score X] [--batch-size B] [--lr LR]
        -> DIR, a training directory that `generate`/`chat --checkpoint DIR` read, and one JSON
           line on stdout: {"out", "base", "steps", "examples", "first_loss", "final_loss",
           "data", "seconds"}

Without --data the examples are self-instructed (alignment.self_instruct): --stories stories
sampled from the base model, relabelled with a training topic (--topics, default topics.json's
training topics and self_instruct.STORY_NOUNS) named at least --min-mentions times, once within
the first --early-words words, kept at a true score of at least --min-score.
With --data, the lines {"topic", "response", "ended" (optional, default true)} of FILE are the
examples. Then alignment.sft fine-tunes for --steps steps (LLaMA 2's settings scaled down; see
that module). --seed seeds both the stories and the order of the examples.

Everything the user gave is checked before the model is loaded, each failure exit status 2 with
one line on stderr: a non-empty --out without --overwrite (or, with it, a folder that is not a
training directory), a held-out or unusable topic in --topics or on any line of --data (the line
is named), a --base that is not a checkpoint, a --tokenizer that is missing or does not match the
model's vocabulary. Progress goes to stderr. Not handled: resuming an interrupted SFT run (it is
short; start it again).

Chapter: instruction_tuning.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from llama_from_scratch.cli.main import CLIError


def add_sft_parser(sub: argparse._SubParsersAction) -> None:
    """The `sft` action's options, on align's subcommand parsers."""
    sft = sub.add_parser("sft", help="fine-tune a base checkpoint on self-instructed stories (answer-only loss)",
                         description="Supervised fine-tuning on (topic, story) examples, the loss on the story only.")
    sft.add_argument("--base", required=True, metavar="CKPT", help="the base checkpoint (any load_model reads)")
    sft.add_argument("--tokenizer", metavar="FILE",
                     help="default: the checkpoint directory's own, else tokenizer.model beside the "
                          "checkpoint, else tok{vocab_size}.bin beside a .bin checkpoint")
    sft.add_argument("--out", required=True, metavar="DIR", help="the SFT model's folder (new or empty)")
    sft.add_argument("--steps", type=int, default=600, metavar="N", help="optimizer steps (default 600)")
    sft.add_argument("--seed", type=int, default=1, metavar="S", help="seeds the stories and the batches (default 1)")
    sft.add_argument("--overwrite", action="store_true", help="replace an existing training directory at --out")
    source = sft.add_mutually_exclusive_group()
    source.add_argument("--data", metavar="FILE.jsonl",
                        help='examples {"topic", "response", "ended"?} instead of self-instructed stories')
    source.add_argument("--topics", metavar="T1,T2",
                        help="the topics stories may be labelled with (default: topics.json's training "
                             "topics and the package's STORY_NOUNS)")
    sft.add_argument("--stories", type=int, default=8000, metavar="N",
                     help="stories to sample (default 8000; this and the next three: not with --data)")
    sft.add_argument("--min-mentions", type=int, default=3, metavar="M",
                     help="a story must name its topic at least M times (default 3)")
    sft.add_argument("--early-words", type=int, default=25, metavar="W",
                     help="... and once within its first W words (default 25; 0: anywhere)")
    sft.add_argument("--min-score", type=float, default=1.0, metavar="X",
                     help="keep stories whose true score is at least X (default 1.0)")
    sft.add_argument("--batch-size", type=int, default=16, metavar="B", help="examples per step (default 16)")
    sft.add_argument("--lr", type=float, default=1e-3, metavar="LR", help="peak learning rate (default 1e-3)")


def read_examples(path: str) -> list[dict]:
    """The lines of a --data file, each with a topic allowed in training and a response."""
    from llama_from_scratch.alignment.errors import AlignmentError
    from llama_from_scratch.alignment.task import check_training_topic
    from llama_from_scratch.cli.align import read_answers

    try:
        with open(path, "rb") as f:
            rows = read_answers(f, source=path)
    except OSError as err:
        raise CLIError(f"cannot read --data {path}: {err.strerror or err}") from None
    for number, row in enumerate(rows, start=1):
        try:
            check_training_topic(row["topic"])
        except AlignmentError as err:
            raise CLIError(f"{path} line {number}: {err}") from None
        if not isinstance(row.get("ended", True), bool):
            raise CLIError(f"{path} line {number}: \"ended\" must be true or false, got {row['ended']!r}")
    return rows


def run_sft(args: argparse.Namespace) -> int:
    import torch

    from llama_from_scratch.alignment.sampler import find_tokenizer, load_tokenizer_for
    from llama_from_scratch.alignment.self_instruct import SelfInstructSettings, self_instruct, training_topics
    from llama_from_scratch.alignment.sft import SFTSettings, final_loss, finetune
    from llama_from_scratch.alignment.sft_dir import check_out, save_sft
    from llama_from_scratch.checkpoints.errors import CheckpointError
    from llama_from_scratch.checkpoints.load import load_model, read_args

    start = time.perf_counter()
    if args.seed < 0:
        raise CLIError(f"--seed must be >= 0, got {args.seed}")
    settings = SFTSettings(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    check_out(args.out, args.overwrite)
    if args.data:
        rows, counts = read_examples(args.data), None
    else:
        topics = training_topics([t.strip() for t in args.topics.split(",")] if args.topics is not None else None)
        instruct = SelfInstructSettings(stories=args.stories, min_mentions=args.min_mentions,
                                        early_words=args.early_words,
                                        min_score=args.min_score, seed=args.seed)
    try:  # the tokenizer is found and checked before any weights are loaded
        vocab_size = read_args(args.base).vocab_size
        tokenizer = load_tokenizer_for(args.base, vocab_size, args.tokenizer)
        model = load_model(args.base, dtype=torch.float32)
    except (CheckpointError, OSError) as err:
        raise CLIError(f"--base {args.base}: {err}") from None
    if not args.data:
        data = self_instruct(model, tokenizer, instruct, topics, progress=True)
        rows, counts = data.examples, data.summary()
        print(f"self-instruct: {json.dumps(data.counts)}", file=sys.stderr)
    print(f"fine-tuning {args.base} on {len(rows)} examples for {settings.steps} steps", file=sys.stderr)
    records = finetune(model, tokenizer, rows, settings, progress=True)
    info = {"base": str(args.base), "source": args.data or "self-instruct", "examples": len(rows),
            "self_instruct": counts}
    out = save_sft(args.out, model, find_tokenizer(args.base, vocab_size, args.tokenizer), settings, records, info,
                   overwrite=args.overwrite)
    summary = {"out": str(out), "base": str(args.base), "steps": settings.steps, "examples": len(rows),
               "first_loss": records[0]["loss"], "final_loss": final_loss(records),
               "data": counts["counts"] if counts else {"file": args.data},
               "seconds": round(time.perf_counter() - start, 1)}
    print(json.dumps(summary))
    return 0
