"""Command-line options shared by `generate` and `chat`: which checkpoint, tokenizer, device, dtype.

`load_model_for_cli` prints the memory account (weights + KV cache) on stderr *before*
loading, so a reader sees whether the model fits before waiting for gigabytes to load.
Under `torchrun --nproc-per-node N` (chapter scale_out) it loads a Meta checkpoint tensor
parallel: each rank reads only its own shard (`distributed.tensor_parallel_load`).

Chapter: real_weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from llama_from_scratch.checkpoints.dtypes import DTYPES
from llama_from_scratch.cli.main import CLIError

if TYPE_CHECKING:
    from llama_from_scratch.distributed.process_group import World
    from llama_from_scratch.tokenizer.base import Tokenizer


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="PATH",
                        help="a Meta directory (params.json + consolidated.*.pth), a Hugging Face directory "
                             "(config.json + *.safetensors or pytorch_model*.bin), or a llama2.c .bin/.pt file")
    parser.add_argument("--tokenizer", metavar="PATH",
                        help="SentencePiece .model or llama2.c tokenizer.bin (default: tokenizer.model in the "
                             "checkpoint directory or beside it)")
    parser.add_argument("--device", default="auto", metavar="DEV",
                        help="cpu, cuda, cuda:1, ... (default: cuda if there is a GPU, else cpu)")
    parser.add_argument("--dtype", default="auto", choices=["auto", *DTYPES],
                        help="weights' dtype (default: as stored, Meta's bfloat16 or Hugging Face's float16; "
                             "bfloat16 becomes float16 on GPUs without fast bfloat16, such as the T4)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (slow first tokens)")
    parser.add_argument("--backend", choices=["auto", "gloo", "nccl"], default="auto",
                        help="under torchrun: NCCL for GPUs, gloo for CPUs (auto, default)")


def load_model_for_cli(args: argparse.Namespace, world: "World", tokens: int | None = None):
    """The model on the chosen device and dtype; the memory account goes to stderr first.
    `world`: this rank's `process_group.World` (from `on_every_rank`); with several ranks the
    model is loaded tensor parallel."""
    import torch

    from llama_from_scratch.checkpoints.errors import CheckpointError
    from llama_from_scratch.checkpoints.load import load_model, read_args, read_dtype
    from llama_from_scratch.inference.device import compile_model, device_memory, pick_device, pick_dtype
    from llama_from_scratch.distributed.process_group import local_device
    from llama_from_scratch.inference.memory import memory_account

    try:
        device = local_device(str(pick_device(args.device)), world)
        if world.is_distributed:
            return load_sharded_for_cli(args, world, device)
        model_args = read_args(args.checkpoint)
        stored = read_dtype(args.checkpoint)
        dtype = pick_dtype(args.dtype, device, stored)
    except (ValueError, OSError) as err:  # CheckpointError is a ValueError
        raise CLIError(str(err)) from err
    account = memory_account(model_args, dtype or stored, tokens=tokens)
    print(account.report(device_memory(device), f"{device} ({torch.cuda.get_device_name(device)})"
                         if device.type == "cuda" else str(device)), file=sys.stderr)
    try:
        model = load_model(args.checkpoint, device=device, dtype=dtype, progress=True)
    except (CheckpointError, OSError) as err:
        raise CLIError(str(err)) from err
    if args.compile:
        compile_model(model)
    return model


def on_every_rank(body: Callable[[argparse.Namespace, Any], int], args: argparse.Namespace) -> int:
    """`body(args, world)` on this rank: the only rank, or one of torchrun's. Ranks other than 0
    print nothing (their errors excepted); the process group is left at the end. A rank that
    loses the others (one died or hung) says so in one line on stderr and returns 1."""
    import torch.distributed as dist

    from llama_from_scratch.distributed.process_group import (close_world, lost_peer_message,
                                                              quiet_unless_writer, world_from_env)

    try:
        world = world_from_env()
    except ValueError as err:
        raise CLIError(str(err)) from None
    try:
        with quiet_unless_writer(world):
            return body(args, world)
    except (dist.DistError, RuntimeError) as err:
        lost = lost_peer_message(world, err)
        if lost is None:
            raise
        print(f"error: {lost}", file=sys.stderr)
        return 1
    finally:
        close_world()


def load_sharded_for_cli(args: argparse.Namespace, world: "World", device):
    """Rank `world.rank`'s tensor-parallel part of a Meta checkpoint (the process group joined here)."""
    from llama_from_scratch.checkpoints.errors import CheckpointError
    from llama_from_scratch.checkpoints.load import detect_format, read_dtype
    from llama_from_scratch.distributed.process_group import init_world
    from llama_from_scratch.distributed.tensor_parallel_load import load_tensor_parallel, local_weight_bytes
    from llama_from_scratch.inference.device import pick_dtype

    try:
        if detect_format(args.checkpoint) != "meta":
            raise CLIError(f"under torchrun, {args.checkpoint} must be in Meta's format (params.json + "
                           "consolidated.NN.pth): tensor parallelism reads each rank's own shard; convert it "
                           "with checkpoints.meta_format.save_meta, or run without torchrun")
        if args.compile:
            raise CLIError("--compile is not handled under torchrun; leave it out")
        dtype = pick_dtype(args.dtype, device, read_dtype(args.checkpoint))
        init_world(device, args.backend)
        model = load_tensor_parallel(args.checkpoint, world.rank, world.size, device, dtype)
    except (CheckpointError, ValueError, OSError) as err:
        raise CLIError(str(err)) from err
    held = local_weight_bytes(model)
    print(f"tensor parallel over {world.size} ranks: rank {world.rank} holds {held['sliced'] / 2**20:.1f} MiB of "
          f"sliced weights (+ {held['replicated'] / 2**10:.1f} KiB of replicated norms)", file=sys.stderr)
    return model


def tokenizer_path(args: argparse.Namespace) -> Path:
    """--tokenizer, or tokenizer.model inside a checkpoint directory or beside the checkpoint
    (Meta's download keeps it one level above llama-2-7b/); a training run's folder may hold
    llama2.c's tokenizer.bin instead."""
    if args.tokenizer:
        return Path(args.tokenizer)
    checkpoint = Path(args.checkpoint)
    inside = [checkpoint / "tokenizer.model", checkpoint / "tokenizer.bin"] if checkpoint.is_dir() else []
    candidates = inside + [checkpoint.parent / "tokenizer.model"]
    return next((p for p in candidates if p.is_file()), candidates[0])


def load_tokenizer_for_cli(args: argparse.Namespace, vocab_size: int, required: bool = True,
                           without: str = "") -> Tokenizer | None:
    """The tokenizer at `tokenizer_path(args)`, checked against the model's vocabulary.

    With `required=False`, None when there is no --tokenizer and no file at the default path
    (an explicit --tokenizer must exist). `without` ends the missing-file error: how to do
    without one.
    """
    from llama_from_scratch.tokenizer.load import load_tokenizer

    path = tokenizer_path(args)
    if not path.is_file():
        if not required and not args.tokenizer:
            return None
        hint = "" if args.tokenizer else " (the default: tokenizer.model in or beside the checkpoint)"
        raise CLIError(f"tokenizer {path}{hint} does not exist; pass --tokenizer PATH{without}")
    try:
        tokenizer = load_tokenizer(path)
    except (ValueError, OSError) as err:  # ModelFormatError is a ValueError
        raise CLIError(str(err)) from err
    if tokenizer.vocab_size != vocab_size:
        raise CLIError(f"tokenizer {path} has {tokenizer.vocab_size} tokens but the model's vocabulary is "
                       f"{vocab_size}: they do not belong together; pass the right --tokenizer")
    return tokenizer
