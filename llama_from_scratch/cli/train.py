"""`python -m llama_from_scratch train`: pretrain a LLaMA on a text file, resumably.

    python -m llama_from_scratch train --data TEXT --out DIR
        [--tokenizer FILE | --vocab-size N] [--preset NAME] [--dim D --n-layers L --n-heads H
        --n-kv-heads K] [--seq-len T] [--batch-size B] [--grad-accum N] [--max-steps N] [--lr LR]
        [--warmup-steps N] [--eval-every N] [--eval-batches N] [--save-every N] [--seed S]
        [--resume] [--device D] [--dtype D] [--parallel ddp|fsdp] [--backend auto|gloo|nccl]

    torchrun --nproc-per-node N -m llama_from_scratch train ...   (the same flags)

stdout gets one JSON line at the end, `{"step", "val_loss", "bits_per_byte", "checkpoint"}`
(the loss on the whole validation split, as `evaluate` computes it); progress and errors go
to stderr; a user's error exits with status 2. Without --tokenizer or --vocab-size the run
uses LLaMA 2's tokenizer; --vocab-size N trains a SentencePiece-style BPE of N pieces on the
first 90% of the text (the part the model trains on) and saves it in DIR.

Under torchrun (WORLD_SIZE > 1) the run is data parallel: --parallel ddp (the default:
DistributedDataParallel) or fsdp (FSDP2, each rank holding 1/N of weights and optimizer).
--batch-size stays the GLOBAL batch: every rank draws the windows one process would draw and
trains on its equal share, so the data do not depend on the number of ranks, and a run may
resume on another number of ranks. Only rank 0 writes the folder, the metrics and stdout.
A rank that dies stops the others at their next collective (exit 1, the last checkpoint
intact); a hung rank stops them after LLAMA_DIST_TIMEOUT_S seconds (default 180).

Chapter: pretraining.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, fields, replace

from llama_from_scratch.cli.main import CLIError
from llama_from_scratch.training.run import TrainSettings

SETTING_FLAGS = ["seq_len", "batch_size", "grad_accum", "max_steps", "lr", "warmup_steps", "eval_every",
                 "eval_batches", "save_every", "seed", "dtype"]
MODEL_FLAGS = ["dim", "n_layers", "n_heads", "n_kv_heads"]  # ModelArgs fields settable from the command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="TEXT", help="a UTF-8 text file (last 10%%: validation)")
    parser.add_argument("--out", required=True, metavar="DIR", help="the run's folder (checkpoint, metrics)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--tokenizer", metavar="FILE", help="a SentencePiece .model or llama2.c tokenizer .bin")
    which.add_argument("--vocab-size", type=int, metavar="N", help="train a BPE tokenizer of N pieces")
    parser.add_argument("--preset", metavar="NAME", help="model shape to start from (default: tiny)")
    for flag in MODEL_FLAGS:
        parser.add_argument(f"--{flag.replace('_', '-')}", type=int, metavar="N")
    types = {f.name: f.type for f in fields(TrainSettings)}
    for name in SETTING_FLAGS:  # None = the default, or the resumed run's value
        kind = {"int": int, "float": float, "str": str}[types[name]]
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, metavar=name.split("_")[-1].upper(),
                            **({"choices": ["float32", "bfloat16"]} if name == "dtype" else {}))
    parser.add_argument("--resume", action="store_true", help="continue the run saved in DIR")
    parser.add_argument("--device", default="cpu", metavar="DEV", help="cpu (default), cuda, ...")
    parser.add_argument("--parallel", choices=["ddp", "fsdp"], default="ddp",
                        help="under torchrun: replicate the model (ddp, default) or shard it (fsdp)")
    parser.add_argument("--backend", choices=["auto", "gloo", "nccl"], default="auto",
                        help="under torchrun: NCCL for GPUs, gloo for CPUs (auto, default)")


def settings_from(args: argparse.Namespace, base=None):
    """TrainSettings from the flags given, on top of `base` (a resumed run's) or the defaults."""
    given = {name: getattr(args, name) for name in SETTING_FLAGS if getattr(args, name) is not None}
    try:
        return replace(base, **given) if base is not None else TrainSettings(**given)
    except ValueError as err:
        raise CLIError(str(err)) from None


def model_args_from(args: argparse.Namespace, vocab_size: int, seq_len: int):
    from llama_from_scratch.model.config import preset

    shape = {name: getattr(args, name) for name in MODEL_FLAGS if getattr(args, name) is not None}
    try:
        return preset(args.preset or "tiny", **shape, vocab_size=vocab_size, max_seq_len=seq_len)
    except ValueError as err:
        raise CLIError(str(err)) from None


def tokenizer_differences(args: argparse.Namespace, saved) -> list[str]:
    """A resumed run keeps its saved tokenizer; --tokenizer or --vocab-size may repeat it, not change it."""
    from llama_from_scratch.tokenizer.load import load_tokenizer
    from llama_from_scratch.training.corpus_encoding import tokenizer_identity

    if args.vocab_size is not None and args.vocab_size != saved.vocab_size:
        return [f"vocab_size: {saved.vocab_size} -> {args.vocab_size}"]
    if args.tokenizer is not None:
        try:
            same = tokenizer_identity(load_tokenizer(args.tokenizer)) == tokenizer_identity(saved)
        except (OSError, ValueError) as err:
            raise CLIError(f"--tokenizer {args.tokenizer}: {err}") from None
        if not same:
            return [f"tokenizer: the run's saved tokenizer differs from {args.tokenizer}"]
    return []


def run(args: argparse.Namespace) -> int:
    import sys
    from contextlib import nullcontext
    from pathlib import Path

    import torch.distributed as dist

    from llama_from_scratch.distributed.process_group import (close_world, init_world, local_device,
                                                              lost_peer_message, world_from_env)
    from llama_from_scratch.training.checkpoint import RunLock, TrainingError

    out = Path(args.out)
    try:
        world = world_from_env()
    except ValueError as err:
        raise CLIError(str(err)) from None
    if not Path(args.data).is_file():
        raise CLIError(f"--data {args.data} is not a file")
    if world.is_writer:
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise CLIError(f"cannot write to the output folder {out}: {err.strerror}; choose another --out") from None
    try:
        with RunLock(out) if world.is_writer else nullcontext():
            init_world(local_device(args.device, world), args.backend)
            try:
                result = train_in(out, args, world)
            finally:
                close_world()
    except TrainingError as err:
        raise CLIError(str(err)) from None
    except (dist.DistError, RuntimeError) as err:  # DDP's reducer reports a lost peer as a RuntimeError
        lost = lost_peer_message(world, err)
        if lost is None:
            raise
        print(f"error: {lost}; the last checkpoint in {out} is intact: resume with --resume", file=sys.stderr)
        return 1
    if world.is_writer:
        print(json.dumps(result), flush=True)
    return 0


def parallel_for(args: argparse.Namespace, world):
    """One process, DDP or FSDP: how this run trains."""
    from llama_from_scratch.distributed.parallel import Parallel

    if not world.is_distributed:
        return Parallel(world)
    if args.parallel == "fsdp":
        from llama_from_scratch.distributed.fully_sharded import FullyShardedParallel

        return FullyShardedParallel(world)
    from llama_from_scratch.distributed.data_parallel import DataParallel

    return DataParallel(world)


def check_share(parallel, micro_batch: int) -> None:
    try:
        parallel.check_batch(micro_batch)
    except ValueError as err:
        raise CLIError(str(err)) from None


def train_in(out, args: argparse.Namespace, world) -> dict:
    """The run itself, with `out` locked by rank 0: set up or resume, train, evaluate."""
    import torch

    from llama_from_scratch.distributed.process_group import local_device, rank0_first
    from llama_from_scratch.training.checkpoint import load_state

    from llama_from_scratch.training.optimizer import AdamW, param_groups
    from llama_from_scratch.training.run import CHECKPOINT_FILE, MAY_CHANGE_ON_RESUME, differences, read_run
    from llama_from_scratch.training.batches import BatchSampler
    from llama_from_scratch.training.loop import bits_per_byte, evaluate, fit, restore
    from llama_from_scratch.training.setup import (build_model, open_data, prepare_tokenizer, resume_state,
                                                   run_tokenizer, write_new_run)

    parallel = parallel_for(args, world)
    has_checkpoint = (out / CHECKPOINT_FILE).exists()
    if has_checkpoint and not args.resume:
        raise CLIError(f"{out} already holds a checkpoint; pass --resume to continue it, or choose "
                       "another --out (nothing is overwritten)")
    if args.resume and not has_checkpoint:
        raise CLIError(f"--resume: {out} holds no checkpoint ({CHECKPOINT_FILE}) to resume from")
    if args.resume:
        before = read_run(out)
        settings = settings_from(args, before["train"])
        check_share(parallel, settings.micro_batch)
        changed = differences(asdict(before["train"]), asdict(settings), MAY_CHANGE_ON_RESUME)
        tokenizer = run_tokenizer(out)
        changed += tokenizer_differences(args, tokenizer)
        model_args = before["model"]
        if args.preset or any(getattr(args, flag) is not None for flag in MODEL_FLAGS):
            changed += differences(asdict(model_args), asdict(model_args_from(args, model_args.vocab_size,
                                                                              settings.seq_len)))
    else:
        settings = settings_from(args)
        check_share(parallel, settings.micro_batch)  # before anything is written
        with rank0_first(world):  # rank 0 writes the tokenizer, the others read it
            tokenizer = (prepare_tokenizer(out, args.tokenizer, args.vocab_size, args.data) if world.is_writer
                         else run_tokenizer(out))
        model_args = model_args_from(args, tokenizer.vocab_size, settings.seq_len)
        changed = []
    with rank0_first(world):  # rank 0 tokenizes (and caches) the text, the others read the cache
        data = open_data(args.data, tokenizer, settings)
    if args.resume:
        changed += differences(before["data"], data.identity)
        if changed:
            raise CLIError(f"--resume: this run in {out} was started differently; differing: {'; '.join(changed)}")
    elif world.is_writer:
        write_new_run(out, model_args, settings, data.identity, tokenizer)
    torch.manual_seed(settings.seed)
    device = local_device(args.device, world)
    model = parallel.wrap(build_model(model_args, settings.seed, device))  # the same init on every rank
    optimizer = AdamW(param_groups(parallel.unwrap(model), settings.weight_decay), lr=settings.lr,
                      betas=(settings.beta1, settings.beta2), eps=settings.eps, weight_decay=settings.weight_decay)
    sampler = BatchSampler(data.train, settings.seq_len, settings.micro_batch, settings.seed + 1)
    step = 0
    if args.resume:  # rank 0 also drops metrics logged after the checkpoint
        state = resume_state(out) if world.is_writer else load_state(out / CHECKPOINT_FILE)
        step = restore(state, model, optimizer, sampler, parallel)
    if step < settings.max_steps:
        fit(model, optimizer, sampler, data.val, settings, out, step, data.val_bytes_per_token,
            extra_state={"run": data.identity}, parallel=parallel)
    loss, _ = evaluate(parallel.unwrap(model), data.val, settings)
    return {"step": max(step, settings.max_steps), "val_loss": loss,
            "bits_per_byte": bits_per_byte(loss, data.val_bytes_per_token), "checkpoint": str(out / CHECKPOINT_FILE)}
