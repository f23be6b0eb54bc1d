"""Benchmark: training steps on N processes (DDP, FSDP2) against one process, same global batch.

    python benchmarks/scale_out.py                       # CPU: 2 gloo ranks x 1 thread vs 1 process x 2 threads
    python benchmarks/scale_out.py --size tiny --steps 2 --repeats 1   # seconds (the test)
    python benchmarks/scale_out.py --device cuda         # every GPU with NCCL vs one GPU (needs >= 2 GPUs)

Every variant runs `training.loop.train_step` with LLaMA 2's AdamW on the same global batch
drawn by one `BatchSampler` (random tokens: the data do not change the time), from the same
initial weights; the ranks each take their share (`Parallel.share`). The reference is one
process given all the cores the ranks share (on a CPU: --ranks threads), so the ratio says
what splitting the work across processes buys or costs here. Printed: tokens/s of each
variant, the ratios to the reference (median step times over --repeats rounds of --steps
steps after one warm-up step), the first step's loss of each (equal: the same data and
weights), and on CPUs the bytes a rank sent per step (the kernel's count) beside the cost
model's ring formula (NCCL's algorithm: gloo's FSDP sends more, as its reduce-scatter costs an
all-reduce; chapter 13 measures it). Not measured: tensor parallel training (this package serves it, does not
train it), several machines.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = {"tiny": dict(dim=64, n_layers=2, seq_len=32, batch=4),
         "small": dict(dim=256, n_layers=4, seq_len=256, batch=8)}
LAUNCH_TIMEOUT_S = 1800  # a hung variant is an error with its stderr, not a benchmark that never ends


def worker(args: argparse.Namespace) -> None:
    """One variant on this process (under torchrun for ddp and fsdp); rank 0 writes JSON."""
    import torch

    from llama_from_scratch.distributed.process_group import close_world, init_world, local_device, world_from_env

    torch.set_num_threads(args.threads)
    world = world_from_env()
    device = local_device(args.device, world)
    init_world(device)
    try:
        measure(args, world, device)  # returns with its model gone, before the group is (see close_world)
    finally:
        close_world()


def measure(args: argparse.Namespace, world, device) -> None:
    import torch

    from llama_from_scratch.distributed.comm_bytes import count_sent
    from llama_from_scratch.distributed.data_parallel import DataParallel
    from llama_from_scratch.distributed.fully_sharded import FullyShardedParallel
    from llama_from_scratch.distributed.parallel import Parallel
    from llama_from_scratch.model.config import ModelArgs
    from llama_from_scratch.model.transformer import Transformer
    from llama_from_scratch.training.batches import BatchSampler
    from llama_from_scratch.training.loop import train_step
    from llama_from_scratch.training.optimizer import AdamW, param_groups
    from llama_from_scratch.training.run import TrainSettings

    parallel = {"single": Parallel, "ddp": DataParallel, "fsdp": FullyShardedParallel}[args.variant](world)
    size = SIZES[args.size]
    margs = ModelArgs(dim=size["dim"], n_layers=size["n_layers"], n_heads=8, n_kv_heads=4, vocab_size=4096,
                      multiple_of=256, max_seq_len=size["seq_len"])
    with torch.device(device):
        model = Transformer(margs)
    model.init_weights(torch.Generator().manual_seed(0))
    model = parallel.wrap(model)
    optimizer = AdamW(param_groups(parallel.unwrap(model), 0.1), lr=1e-4)
    settings = TrainSettings(seq_len=size["seq_len"], batch_size=size["batch"], max_steps=10**6, warmup_steps=0)
    tokens = torch.randint(0, margs.vocab_size, (200_000,), generator=torch.Generator().manual_seed(1)).numpy()
    sampler = BatchSampler(tokens, settings.seq_len, settings.micro_batch, seed=2)
    first = train_step(model, optimizer, sampler, settings, 0, parallel)  # warm-up, also the loss check
    times, sent = [], []
    for step in range(1, args.steps * args.repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        with count_sent() as counted:
            start = time.perf_counter()
            train_step(model, optimizer, sampler, settings, step, parallel)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        sent.append(counted.bytes)
    if world.is_writer:
        n_params = sum(p.numel() for p in parallel.unwrap(model).parameters())
        Path(args.out).write_text(json.dumps({"variant": args.variant, "ranks": world.size, "first_loss":
                                              first["train_loss"], "step_s": statistics.median(times),
                                              "sent_per_step": statistics.median(sent), "n_params": n_params,
                                              "tokens_per_step": settings.batch_size * settings.seq_len}))


def launch(variant: str, ranks: int, threads: int, args: argparse.Namespace, out: Path) -> dict:
    flags = ["--worker", "--variant", variant, "--size", args.size, "--steps", str(args.steps), "--repeats",
             str(args.repeats), "--threads", str(threads), "--device", args.device, "--out", str(out)]
    command = [sys.executable, str(Path(__file__).resolve()), *flags]
    if variant != "single":
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks),
                   *command[1:]]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=LAUNCH_TIMEOUT_S)
    except subprocess.TimeoutExpired as err:
        stderr = err.stderr.decode(errors="replace") if isinstance(err.stderr, bytes) else err.stderr or ""
        raise RuntimeError(f"{variant} did not finish within {LAUNCH_TIMEOUT_S} s:\n{stderr[-3000:]}") from None
    if done.returncode:
        raise RuntimeError(f"{variant} failed:\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=list(SIZES), default="small")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ranks", type=int, default=None, help="default: 2 on a CPU, every GPU with --device cuda")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", help="write the results as JSON here too")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="single", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    from llama_from_scratch.distributed import cost_model

    cuda = args.device.startswith("cuda")
    if cuda:
        import torch

        ranks = args.ranks or torch.cuda.device_count()
        if ranks < 2:
            print(f"needs at least 2 GPUs for NCCL ranks; this machine has {torch.cuda.device_count()}: "
                  "nothing to compare", file=sys.stderr)
            return 2
    else:
        ranks = args.ranks or 2
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in ("single", "ddp", "fsdp"):
            threads = 1 if cuda or variant != "single" else ranks  # the reference gets every core
            results[variant] = launch(variant, ranks, threads, args, Path(tmp) / f"{variant}.json")
    single = results["single"]
    n = single["n_params"]
    formula = {"ddp": cost_model.ddp_step_bytes(n, ranks), "fsdp": cost_model.fsdp_step_bytes(n, ranks)}
    print(f"size {args.size}: {n:,} parameters, {single['tokens_per_step']:,} tokens per step, {ranks} ranks "
          f"({args.device}); reference: one process")
    for variant, result in results.items():
        line = (f"  {variant:6s} {single['tokens_per_step'] / result['step_s']:10,.0f} tokens/s   "
                f"ratio {single['step_s'] / result['step_s']:.2f}   first loss {result['first_loss']:.6f}")
        if variant in formula and not cuda:
            line += f"   sent/step {result['sent_per_step']:,.0f} B (NCCL's ring: {formula[variant]:,.0f})"
        print(line)
    if args.out:
        Path(args.out).write_text(json.dumps({"ranks": ranks, "device": args.device, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
