"""The command line: `python -m llama_from_scratch COMMAND ...`.

Each command lives in its own module, which provides `add_arguments(parser)` and
`run(args) -> int`. Modules are imported only when their command runs, so
`python -m llama_from_scratch data` does not pay for importing torch.
Results go to stdout; messages, progress and errors go to stderr.

Chapter: tokenizer.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("llama_from_scratch.cli.data", "list, locate or download the book's data files"),
    "tokenize": ("llama_from_scratch.cli.tokenize", "text to token ids and back, line by line (LLaMA 2 or llama2.c tokenizers)"),
    "generate": ("llama_from_scratch.cli.generate", "continue a prompt with a checkpoint (greedy, temperature, top-k, top-p)"),
    "chat": ("llama_from_scratch.cli.chat", "talk to a LLaMA 2 chat model in Meta's chat format (multi-turn, GPU)"),
    "train": ("llama_from_scratch.cli.train", "pretrain a LLaMA on a text file (LLaMA 2's recipe, resumable)"),
    "evaluate": ("llama_from_scratch.cli.evaluate", "validation loss and bits per byte of a training run"),
    "scaling": ("llama_from_scratch.cli.scaling", "compute-optimal sizes, scaling-law fits and the IsoFLOP sweep"),
    "align": ("llama_from_scratch.cli.align", "the alignment task: sample answers to story prompts, score them by the true score"),
}


class CLIError(Exception):
    """A user error: printed on stderr as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llama_from_scratch", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.set_defaults(_module=module)
        # Arguments are added lazily (see main) so --help for one command imports only it.
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    # Import only the chosen command's module, then re-parse with its arguments.
    known, _ = parser.parse_known_args(argv[:1] if argv and not argv[0].startswith("-") else argv)
    module = importlib.import_module(known._module)
    sub = argparse.ArgumentParser(prog=f"python -m llama_from_scratch {known.command}",
                                  description=COMMANDS[known.command][1])
    module.add_arguments(sub)
    args = sub.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except CLIError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `... | head`: not an error worth a traceback
        return 0
