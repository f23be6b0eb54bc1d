"""`python -m llama_from_scratch tokenize`: text to token ids and back, one line at a time.

    echo "Hello world" | python -m llama_from_scratch tokenize            # 15043 3186
    echo '"Hello\\nworld"' | python -m llama_from_scratch tokenize --jsonl   # [15043, 13, 11526]
    echo "15043 3186" | python -m llama_from_scratch tokenize --decode     # Hello world

Each stdin line, without its "\\n" (a "\\r" before it is kept: it is part of the text), gives one
output line. Output is UTF-8 and flushed after every line, so another program can talk to it
line by line. Errors go to stderr with exit status 2; nothing but results goes to stdout.

Chapter: tokenizer.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from llama_from_scratch.cli.main import CLIError

if TYPE_CHECKING:
    from llama_from_scratch.tokenizer.base import Tokenizer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tokenizer", metavar="PATH",
                        help="a SentencePiece .model or llama2.c tokenizer .bin "
                             "(default: the LLaMA 2 tokenizer, llama2_tokenizer.model from the data folder)")
    parser.add_argument("--jsonl", action="store_true",
                        help="each input line is a JSON string (with --decode: a JSON list of ids); "
                             "each output line is a JSON list of ids (with --decode: a JSON string)")
    parser.add_argument("--bos", action="store_true", help="put the BOS id in front of every line's ids")
    parser.add_argument("--eos", action="store_true", help="put the EOS id after every line's ids")
    parser.add_argument("--decode", action="store_true", help="ids in, text out")


def load(path: str | None) -> Tokenizer:
    from llama_from_scratch import datafiles
    from llama_from_scratch.tokenizer.load import load_tokenizer

    try:
        return load_tokenizer(path if path else datafiles.path("llama2_tokenizer.model"))
    except (OSError, ValueError, datafiles.DataError) as err:
        raise CLIError(str(err)) from None


def parse_ids(line: str, number: int, jsonl: bool) -> list[int]:
    try:
        ids = json.loads(line) if jsonl else [int(tok) for tok in line.split()]
    except ValueError:
        want = "a JSON list of integers" if jsonl else "integers separated by spaces"
        raise CLIError(f"stdin line {number}: expected {want}, got {line[:60]!r}") from None
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise CLIError(f"stdin line {number}: expected a JSON list of integers, got {line[:60]!r}")
    return ids


def run(args: argparse.Namespace) -> int:
    from llama_from_scratch.tokenizer.checks import TokenizerInputError

    if args.decode and (args.bos or args.eos):
        raise CLIError("--bos and --eos apply to encoding; leave them out with --decode")
    tokenizer = load(args.tokenizer)
    out = sys.stdout.buffer
    for number, raw in enumerate(sys.stdin.buffer, start=1):
        try:
            line = raw[:-1].decode("utf-8") if raw.endswith(b"\n") else raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise CLIError(f"stdin line {number} is not valid UTF-8 (byte 0x{raw[err.start]:02x} at offset "
                           f"{err.start}); convert the input to UTF-8 first") from None
        try:
            if args.decode:
                text = tokenizer.decode(parse_ids(line, number, args.jsonl))
                result = json.dumps(text, ensure_ascii=False) if args.jsonl else text
            else:
                if args.jsonl:
                    try:
                        line = json.loads(line)
                    except ValueError:
                        raise CLIError(f"stdin line {number} is not JSON: {line[:60]!r}") from None
                    if not isinstance(line, str):
                        raise CLIError(f"stdin line {number}: expected a JSON string, got {type(line).__name__}")
                ids = tokenizer.encode(line, bos=args.bos, eos=args.eos)
                result = json.dumps(ids) if args.jsonl else " ".join(map(str, ids))
        except TokenizerInputError as err:
            raise CLIError(f"stdin line {number}: {err}") from None
        out.write(result.encode("utf-8") + b"\n")
        out.flush()
    return 0
