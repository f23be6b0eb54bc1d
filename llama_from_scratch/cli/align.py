"""`python -m llama_from_scratch align`: the alignment task of chapters 10 to 12.

    align score < FILE.jsonl
        -> every input line {"topic": ..., "response": ..., ...} written back, in order, with
           "true_score" added (a full-precision float; an existing "true_score" is replaced)

Each action is a subcommand: its parser is added in `add_arguments` and its function in
`ACTIONS`. `score` reads the whole input before writing anything, so a bad line leaves stdout
empty: a line that is not JSON, not an object, lacks "topic" or "response", or whose topic is
empty or not one lowercase word exits with status 2 naming the line. Held-out topics are
scored like any other (scoring is measurement).

Chapter: instruction_tuning (also shown in: reward_model, rlhf).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable

from llama_from_scratch.cli.main import CLIError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub.add_parser("score", help="add the true score to JSON lines {topic, response} read from stdin",
                   description="Read JSON lines with \"topic\" and \"response\" from stdin; write each back "
                               "with \"true_score\" added.")


def read_answers(stream: Iterable[bytes]) -> list[dict]:
    """The JSON objects of a JSON-lines stream, each checked to hold a usable topic and a response."""
    from llama_from_scratch.alignment.errors import AlignmentError
    from llama_from_scratch.alignment.task import check_topic

    rows = []
    for number, raw in enumerate(stream, start=1):
        try:
            row = json.loads(raw)
        except ValueError:
            shown = raw[:60].decode("utf-8", errors="replace")
            raise CLIError(f"stdin line {number} is not JSON (or not UTF-8): {shown!r}") from None
        if not isinstance(row, dict):
            raise CLIError(f"stdin line {number}: expected a JSON object with \"topic\" and \"response\", "
                           f"got {type(row).__name__}")
        for key in ("topic", "response"):
            if key not in row:
                raise CLIError(f"stdin line {number} has no {key!r}; each line needs \"topic\" and \"response\"")
        if not isinstance(row["response"], str):
            raise CLIError(f"stdin line {number}: \"response\" must be a string, got {type(row['response']).__name__}")
        try:
            check_topic(row["topic"])
        except AlignmentError as err:
            raise CLIError(f"stdin line {number}: {err}") from None
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


ACTIONS = {"score": score_answers}


def run(args: argparse.Namespace) -> int:
    from llama_from_scratch import datafiles
    from llama_from_scratch.alignment.errors import AlignmentError

    try:
        return ACTIONS[args.action](args)
    except (AlignmentError, datafiles.DataError) as err:
        raise CLIError(str(err)) from None
