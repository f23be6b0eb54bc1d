"""`python -m llama_from_scratch align`: the alignment task of chapters 10 to 12.

    align score < FILE.jsonl
        -> every input line {"topic": ..., "response": ..., ...} written back, in order, with
           "true_score" added (a full-precision float; an existing "true_score" is replaced)
    align sample --checkpoint CKPT [--tokenizer FILE] --prompts FILE.jsonl
                 [--temperature T] [--top-p P] [--max-new-tokens N] [--seed S]
        -> one line {"topic", "prompt", "response"} per prompts line {"topic": ...}, in order,
           each its own seeded draw (alignment.sampler), written as it is finished
    align sft --base CKPT [--tokenizer FILE] --out DIR [--steps N] [--seed S] [--overwrite] ...
        -> supervised fine-tuning on self-instructed stories (cli/align_sft.py: every option)
    align reward --policy DIR --out DIR [--pairs N] [--margin none|small|large] [--seed S] ...
        -> a reward model on labelled answer pairs, measured on held-out topics (cli/align_reward.py)
    align rejection | ppo | dpo --policy DIR ... --out DIR
        -> the RLHF methods of chapter 12, each a policy folder (cli/align_rlhf.py)
    align all --base CKPT [--tokenizer FILE] --out DIR [--seed S]
        -> the whole pipeline, stage by stage, resumable (cli/align_all.py)

Each action is a subcommand: its parser is added in `add_arguments` and its function in
`ACTIONS`. `score` reads the whole input before writing anything, so a bad line leaves stdout
empty: a line that is not JSON, not an object, lacks "topic" or "response", or whose topic is
empty or not one lowercase word exits with status 2 naming the line. Held-out topics are
scored (and sampled) like any other: that is measurement. `sample` likewise reads and checks the
whole prompts file before loading the model; it runs on the CPU in the checkpoint's dtype.

Chapter: instruction_tuning (also shown in: reward_model, rlhf).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable

from llama_from_scratch.cli.align_all import add_all_parser, run_all
from llama_from_scratch.cli.align_reward import add_reward_parser, run_reward
from llama_from_scratch.cli.align_rlhf import add_rlhf_parsers, run_dpo, run_ppo, run_rejection
from llama_from_scratch.cli.align_sft import add_sft_parser, run_sft
from llama_from_scratch.cli.main import CLIError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub.add_parser("score", help="add the true score to JSON lines {topic, response} read from stdin",
                   description="Read JSON lines with \"topic\" and \"response\" from stdin; write each back "
                               "with \"true_score\" added.")
    sample = sub.add_parser("sample", help="answer JSON lines {topic} of a prompts file in the instruction format",
                            description="Answer each line {\"topic\": ...} of --prompts with one seeded sample; "
                                        "write {\"topic\", \"prompt\", \"response\"} per line.")
    sample.add_argument("--checkpoint", required=True, metavar="CKPT",
                        help="any checkpoint load_model reads (llama2.c .bin, a training or SFT directory, ...)")
    sample.add_argument("--tokenizer", metavar="FILE",
                        help="default: the checkpoint directory's own, else tokenizer.model beside the "
                             "checkpoint, else tok{vocab_size}.bin beside a .bin checkpoint")
    sample.add_argument("--prompts", required=True, metavar="FILE.jsonl", help='lines {"topic": "dog"}')
    sample.add_argument("--temperature", type=float, default=1.0, metavar="T", help="default 1.0")
    sample.add_argument("--top-p", type=float, default=1.0, metavar="P", help="default 1.0 (every token)")
    sample.add_argument("--max-new-tokens", type=int, default=256, metavar="N", help="default 256")
    sample.add_argument("--seed", type=int, default=1, metavar="S",
                        help="line i is drawn with a seed mixed from S and i (default 1)")
    add_sft_parser(sub)
    add_reward_parser(sub)
    add_rlhf_parsers(sub)
    add_all_parser(sub)


def json_line(raw: bytes, source: str, number: int) -> object:
    """One line of a JSON-lines input, parsed; a line that is not JSON names `source` and its number."""
    try:
        return json.loads(raw)
    except ValueError:
        shown = raw[:60].decode("utf-8", errors="replace")
        raise CLIError(f"{source} line {number} is not JSON (or not UTF-8): {shown!r}") from None


def read_answers(stream: Iterable[bytes], source: str = "stdin") -> list[dict]:
    """The JSON objects of a JSON-lines stream, each checked to hold a usable topic and a response;
    errors name the line of `source`."""
    from llama_from_scratch.alignment.errors import AlignmentError
    from llama_from_scratch.alignment.task import check_topic

    rows = []
    for number, raw in enumerate(stream, start=1):
        row = json_line(raw, source, number)
        if not isinstance(row, dict):
            raise CLIError(f"{source} line {number}: expected a JSON object with \"topic\" and \"response\", "
                           f"got {type(row).__name__}")
        for key in ("topic", "response"):
            if key not in row:
                raise CLIError(f"{source} line {number} has no {key!r}; each line needs \"topic\" and \"response\"")
        if not isinstance(row["response"], str):
            raise CLIError(f"{source} line {number}: \"response\" must be a string, got {type(row['response']).__name__}")
        try:
            check_topic(row["topic"])
        except AlignmentError as err:
            raise CLIError(f"{source} line {number}: {err}") from None
        rows.append(row)
    return rows


def score_answers(args: argparse.Namespace) -> int:  # noqa: ARG001 - score takes no options yet
    from llama_from_scratch.alignment.true_score import true_score

    rows = read_answers(sys.stdin.buffer)
    out = sys.stdout.buffer  # UTF-8 whatever the locale, as the other commands write
    for row in rows:
        row["true_score"] = true_score(row["response"], row["topic"])
        out.write(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n")
    out.flush()
    return 0


def read_prompts(path: str) -> list[str]:
    """The topics of a JSON-lines prompts file, each line checked to be {"topic": usable topic}."""
    from llama_from_scratch.alignment.errors import AlignmentError
    from llama_from_scratch.alignment.task import check_topic

    try:
        with open(path, "rb") as f:
            lines = f.readlines()
    except OSError as err:
        raise CLIError(f"cannot read --prompts {path}: {err.strerror or err}") from None
    topics = []
    for number, raw in enumerate(lines, start=1):
        row = json_line(raw, path, number)
        if not isinstance(row, dict) or "topic" not in row:
            raise CLIError(f"{path} line {number}: expected a JSON object with \"topic\", e.g. "
                           f"{{\"topic\": \"dog\"}}; got {raw.strip()[:60].decode('utf-8', errors='replace')!r}")
        try:
            topics.append(check_topic(row["topic"]))
        except AlignmentError as err:
            raise CLIError(f"{path} line {number}: {err}") from None
    return topics


def sample_answers(args: argparse.Namespace) -> int:
    from llama_from_scratch.alignment.sampler import load_tokenizer_for, sample_rows
    from llama_from_scratch.checkpoints.errors import CheckpointError
    from llama_from_scratch.checkpoints.load import load_model, read_args
    from llama_from_scratch.inference.sampling import check_sampling

    try:
        check_sampling(args.temperature, None, args.top_p)
    except ValueError as err:
        raise CLIError(f"--temperature or --top-p: {err}") from None
    if args.max_new_tokens < 0 or args.seed < 0:
        raise CLIError(f"--max-new-tokens and --seed must be >= 0, got {args.max_new_tokens} and {args.seed}")
    topics = read_prompts(args.prompts)
    try:  # the tokenizer is found and checked before any weights are loaded
        tokenizer = load_tokenizer_for(args.checkpoint, read_args(args.checkpoint).vocab_size, args.tokenizer)
        model = load_model(args.checkpoint)
    except (CheckpointError, OSError) as err:
        raise CLIError(str(err)) from None
    print(f"sampling {len(topics)} answers from {args.checkpoint} (temperature {args.temperature}, top-p "
          f"{args.top_p}, at most {args.max_new_tokens} new tokens, seed {args.seed})", file=sys.stderr)
    out = sys.stdout.buffer
    for row in sample_rows(model, tokenizer, topics, args.seed, args.temperature, args.top_p,
                           args.max_new_tokens, progress=True):
        out.write(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n")
        out.flush()
    return 0


ACTIONS = {"score": score_answers, "sample": sample_answers, "sft": run_sft, "reward": run_reward,
           "rejection": run_rejection, "ppo": run_ppo, "dpo": run_dpo, "all": run_all}


def run(args: argparse.Namespace) -> int:
    from llama_from_scratch import datafiles
    from llama_from_scratch.alignment.errors import AlignmentError

    try:
        return ACTIONS[args.action](args)
    except (AlignmentError, datafiles.DataError) as err:
        raise CLIError(str(err)) from None
