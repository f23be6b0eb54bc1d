"""`python -m llama_from_scratch generate`: continue a prompt with a checkpoint.

stdout holds only the result: the generated continuation as text (not the prompt, no
stop token), then a newline; or with --print-ids the new ids, space-separated, on one
line. Loading messages (the memory account first), the context-length note and errors
go to stderr. Any checkpoint `load_model` handles (Meta, Hugging Face, llama2.c) runs on
--device (default: the GPU if there is one) in --dtype, optionally --compile'd.

Generation stops at the tokenizer's `stop_ids`, EOS or BOS (Meta's models end a text with
EOS, llama2.c's stories end where the next one's BOS begins). Who names those ids: the
tokenizer (--tokenizer, or tokenizer.model in or beside the checkpoint) when there is one;
else the checkpoint (Hugging Face's config.json; llama2.c's fixed 1 and 2); else nobody
(Meta's params.json): then nothing stops generation early, and --print-ids needs --prompt-ids
since there is no BOS for the default prompt. Sampling defaults follow Meta's
example_text_completion.py (temperature 0.6, top-p 0.9); the seed is fixed (1, as in Meta's
Llama.build) so a command repeats its output.

Chapter: sampling.
"""

from __future__ import annotations

import argparse
import sys

from llama_from_scratch.cli.main import CLIError
from llama_from_scratch.cli.options import (add_model_arguments, load_model_for_cli, load_tokenizer_for_cli,
                                           on_every_rank)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)  # --checkpoint, --tokenizer, --device, --dtype, --compile
    parser.add_argument("--prompt", metavar="TEXT", help="text, encoded with BOS first (default: BOS alone)")
    parser.add_argument("--prompt-ids", metavar='"1 5 7"', help="token ids used verbatim, space-separated")
    parser.add_argument("--max-new-tokens", type=int, default=256, metavar="N", help="default 256")
    parser.add_argument("--temperature", type=float, default=0.6, metavar="T", help="0 is greedy (default 0.6)")
    parser.add_argument("--top-k", type=int, default=None, metavar="K", help="keep the K most likely tokens")
    parser.add_argument("--top-p", type=float, default=0.9, metavar="P", help="nucleus sampling mass (default 0.9)")
    parser.add_argument("--seed", type=int, default=1, metavar="S", help="random seed (default 1)")
    parser.add_argument("--print-ids", action="store_true", help="print the new token ids instead of text")


def parse_prompt_ids(text: str, vocab_size: int) -> list[int]:
    try:
        ids = [int(t) for t in text.replace(",", " ").split()]
    except ValueError as err:
        raise CLIError(f"--prompt-ids must be integers separated by spaces, e.g. \"1 5 7\": {err}") from err
    if not ids:
        raise CLIError("--prompt-ids is empty; give at least one id (1 is BOS), or leave it out")
    bad = [i for i in ids if not 0 <= i < vocab_size]
    if bad:
        raise CLIError(f"--prompt-ids {bad} outside the model's vocabulary 0..{vocab_size - 1}")
    return ids


def special_ids(args: argparse.Namespace, tokenizer) -> tuple[int | None, tuple[int, ...]]:
    """(BOS for the default prompt, stop ids): the tokenizer's, else the checkpoint's, else none."""
    from llama_from_scratch.checkpoints.load import read_special_ids
    from llama_from_scratch.tokenizer.base import document_stop_ids

    if tokenizer is not None:
        return tokenizer.bos_id, tokenizer.stop_ids
    try:
        named = read_special_ids(args.checkpoint)
    except (ValueError, OSError) as err:  # CheckpointError is a ValueError
        raise CLIError(str(err)) from err
    return (None, ()) if named is None else (named[0], document_stop_ids(*named))


def run(args: argparse.Namespace) -> int:
    return on_every_rank(generate_text, args)


def generate_text(args: argparse.Namespace, world) -> int:
    """The command on one rank (under torchrun, the ranks serve one model tensor parallel)."""
    from llama_from_scratch.inference.generation import stream
    from llama_from_scratch.inference.sampling import check_sampling
    from llama_from_scratch.model.parameters import count_parameters

    if args.prompt is not None and args.prompt_ids is not None:
        raise CLIError("give --prompt or --prompt-ids, not both")
    try:
        check_sampling(args.temperature, args.top_k, args.top_p)
    except ValueError as err:
        raise CLIError(str(err)) from err
    if args.max_new_tokens < 0:
        raise CLIError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
    model = load_model_for_cli(args, world)  # prints the memory account (stderr) before loading
    a = model.args
    n_params = count_parameters(a)  # the whole model's, also when this rank holds a tensor-parallel slice
    print(f"loaded {args.checkpoint}: {n_params:,} parameters, dim {a.dim}, {a.n_layers} layers, "
          f"{a.n_heads} heads ({a.kv_heads} KV), context {a.max_seq_len}", file=sys.stderr)

    tokenizer = load_tokenizer_for_cli(args, a.vocab_size, required=args.prompt is not None or not args.print_ids,
                                       without=", or use --prompt-ids with --print-ids to work without one")
    bos, stop = special_ids(args, tokenizer)
    if args.prompt_ids is not None:
        prompt = parse_prompt_ids(args.prompt_ids, a.vocab_size)
    elif args.prompt is not None:
        prompt = tokenizer.encode(args.prompt, bos=True)
    elif bos is not None and bos >= 0:
        prompt = [bos]
    else:
        raise CLIError(f"no BOS id for the default prompt: neither a tokenizer nor {args.checkpoint} names "
                       "one; give the prompt as --prompt-ids, e.g. --prompt-ids 1 if 1 is your model's BOS")
    if len(prompt) > a.max_seq_len:
        raise CLIError(f"the prompt has {len(prompt)} tokens, more than the context length of "
                       f"{a.max_seq_len} tokens; shorten it")

    new_ids: list[int] = []
    stopped = False

    def ids():  # the sampled ids, up to (not including) a stop token
        nonlocal stopped
        for t in stream(model, prompt, args.max_new_tokens, temperature=args.temperature,
                        top_k=args.top_k, top_p=args.top_p, seed=args.seed):
            if t in stop:
                stopped = True
                return
            new_ids.append(t)
            yield t

    if args.print_ids:
        for _ in ids():
            pass
        print(" ".join(map(str, new_ids)))
    else:
        for piece in tokenizer.stream_text(ids(), prompt[-1]):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
    if not stopped and len(new_ids) < args.max_new_tokens:
        print(f"note: generation stopped at the context length of {a.max_seq_len} tokens "
              f"(prompt {len(prompt)} + {len(new_ids)} new)", file=sys.stderr)
    return 0
