"""`python -m llama_from_scratch evaluate`: a training run's loss on the validation split.

    python -m llama_from_scratch evaluate --checkpoint DIR --data TEXT [--batches N]

stdout gets exactly one JSON line, `{"loss": nats per token, "bits_per_byte": ..., "tokens": N}`,
measured on the last 10% of TEXT's tokens (the run's tokenizer, context length and batch
size; all full windows, or the first N batches). The windows are fixed and nothing is
sampled, so a checkpoint gives the same numbers, to the last digit, on every call (same
machine and thread count). `train` ends with the same measurement.

Chapter: pretraining.
"""

from __future__ import annotations

import argparse
import json

from llama_from_scratch.cli.main import CLIError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="DIR", help="a folder written by `train`")
    parser.add_argument("--data", required=True, metavar="TEXT", help="the text file (its last 10%% is used)")
    parser.add_argument("--batches", type=int, metavar="N", help="only the first N batches (default: all)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from llama_from_scratch.training.checkpoint import TrainingError
    from llama_from_scratch.training.loop import bits_per_byte, evaluate
    from llama_from_scratch.training.run import load_trained_model, read_run
    from llama_from_scratch.training.setup import open_data, run_tokenizer

    if args.batches is not None and args.batches < 1:
        raise CLIError(f"--batches must be at least 1, got {args.batches}")
    if not Path(args.data).is_file():
        raise CLIError(f"--data {args.data} is not a file")
    folder = Path(args.checkpoint)
    try:
        run_info = read_run(folder)
        settings = run_info["train"]
        tokenizer = run_tokenizer(folder)
        data = open_data(args.data, tokenizer, settings)
        model = load_trained_model(folder)
    except TrainingError as err:
        raise CLIError(str(err)) from None
    if model.args.vocab_size != tokenizer.vocab_size:
        raise CLIError(f"the model's vocabulary ({model.args.vocab_size}) does not match its tokenizer's "
                       f"({tokenizer.vocab_size}) in {folder}")
    loss, n_tokens = evaluate(model, data.val, settings, args.batches)
    print(json.dumps({"loss": loss, "bits_per_byte": bits_per_byte(loss, data.val_bytes_per_token),
                      "tokens": n_tokens}), flush=True)
    return 0
