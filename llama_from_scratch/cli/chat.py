"""`python -m llama_from_scratch chat`: talk to a LLaMA 2 chat model (e.g. 7B-chat).

Each turn, the whole dialog so far is encoded in Meta's chat format
(`tokenizer.chat.encode_dialog`: [INST] ... [/INST], <<SYS>> for the system prompt, BOS
and EOS as ids) and the answer is generated until the tokenizer's `stop_ids` (EOS, which
ends a chat model's answer, or BOS, which would begin another document), streamed to stdout. With
--message, one answer is printed and the command exits; otherwise user messages are read
from stdin, one per line (an empty line is skipped, "/reset" starts a new dialog, end of
input ends the chat). Each turn re-reads the whole dialog (the KV cache is not kept between
turns). Sampling defaults are Meta's example_chat_completion.py's
(temperature 0.6, top-p 0.9). Under torchrun a Meta checkpoint is served tensor parallel and
rank 0 reads the lines for every rank; a rank that dies stops the others with one line on
stderr (exit 1). Not handled: multi-line messages, saving a dialog.

Chapter: real_weights.
"""

from __future__ import annotations

import argparse
import sys

from llama_from_scratch.cli.main import CLIError
from llama_from_scratch.cli.options import (add_model_arguments, load_model_for_cli, load_tokenizer_for_cli,
                                           on_every_rank)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--system", metavar="TEXT", help="a system prompt (Meta's <<SYS>> block)")
    parser.add_argument("--message", metavar="TEXT", help="one user message: answer it and exit")
    parser.add_argument("--max-new-tokens", type=int, default=512, metavar="N")
    parser.add_argument("--temperature", type=float, default=0.6, metavar="T", help="0 is greedy (default 0.6)")
    parser.add_argument("--top-p", type=float, default=0.9, metavar="P", help="nucleus sampling mass (default 0.9)")
    parser.add_argument("--seed", type=int, default=1, metavar="S", help="random seed (default 1)")


def answer(model, tokenizer, dialog: list[dict[str, str]], args: argparse.Namespace, out) -> str:
    """Stream the model's reply to `dialog` (ending with a user message) to `out`; return it."""
    from llama_from_scratch.inference.generation import stream
    from llama_from_scratch.tokenizer.chat import encode_dialog

    prompt = encode_dialog(dialog, tokenizer)
    limit = model.args.max_seq_len
    if len(prompt) >= limit:
        raise CLIError(f"the dialog is {len(prompt)} tokens, the context holds {limit}: start a new one")
    ids = stream(model, prompt, args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                 seed=args.seed, stop_ids=tokenizer.stop_ids)
    pieces = []
    for piece in tokenizer.stream_text(ids, prompt[-1]):
        pieces.append(piece)
        out.write(piece)
        out.flush()
    out.write("\n")
    return "".join(pieces).strip()


def run(args: argparse.Namespace) -> int:
    return on_every_rank(chat_on_rank, args)


def chat_on_rank(args: argparse.Namespace, world) -> int:
    """The chat on one rank: under torchrun rank 0 reads stdin and every rank gets its lines."""
    from llama_from_scratch.distributed.process_group import from_rank0
    from llama_from_scratch.inference.sampling import check_sampling

    try:
        check_sampling(args.temperature, None, args.top_p)
    except ValueError as err:
        raise CLIError(str(err)) from err
    model = load_model_for_cli(args, world)
    tokenizer = load_tokenizer_for_cli(args, model.args.vocab_size)
    start = [{"role": "system", "content": args.system}] if args.system else []
    dialog = list(start)
    try:
        if args.message is not None:
            answer(model, tokenizer, dialog + [{"role": "user", "content": args.message}], args, sys.stdout)
            return 0
        interactive = sys.stdin.isatty()
        while True:
            if interactive:
                print("you> ", end="", file=sys.stderr, flush=True)
            line = from_rank0(world, sys.stdin.readline)
            if not line:
                return 0
            text = line.strip()
            if not text:
                continue
            if text == "/reset":
                dialog = list(start)
                print("(new dialog)", file=sys.stderr)
                continue
            dialog.append({"role": "user", "content": text})
            reply = answer(model, tokenizer, dialog, args, sys.stdout)
            dialog.append({"role": "assistant", "content": reply})
    except ValueError as err:  # a special tag inside a message
        raise CLIError(str(err)) from err
