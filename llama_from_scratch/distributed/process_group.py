"""Joining the processes that `torchrun` starts: who am I, how many are we, which backend.

`torchrun --nproc-per-node N -m llama_from_scratch ...` starts N copies of the command and
tells each one its place in environment variables: RANK (0..N-1 over all machines),
LOCAL_RANK (0.. on this machine: which GPU to use), WORLD_SIZE (N), and MASTER_ADDR /
MASTER_PORT (where rank 0 listens, so the processes can find each other). A plain
`python -m llama_from_scratch ...` has none of them: a world of one, no process group.

The backend moves the bytes: NCCL between CUDA GPUs (NVLink, InfiniBand), gloo over TCP
between CPU processes. Asking for NCCL where there is no GPU falls back to gloo, and says so
on stderr. Every collective waits at most `timeout_s()` seconds (180 unless the environment
variable LLAMA_DIST_TIMEOUT_S says otherwise): a rank that dies closes its sockets and the
others fail at their next collective at once; a rank that hangs stops them after the timeout.
`lost_peer_message` tells such an error from others, for the commands' one-line message.
Not handled: several machines' rendezvous options beyond torchrun's own.

Chapter: scale_out.
"""

from __future__ import annotations

import gc
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

DEFAULT_TIMEOUT_S = 180
BACKENDS = ("auto", "gloo", "nccl")
T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place among the ranks (rank 0 of 1 when not launched by torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_distributed(self) -> bool:
        return self.size > 1

    @property
    def is_writer(self) -> bool:
        """Rank 0 alone writes checkpoints, metrics and stdout."""
        return self.rank == 0


def world_from_env() -> World:
    """The World torchrun described in RANK, WORLD_SIZE and LOCAL_RANK; a world of one without them."""
    try:
        world = World(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                      int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError as err:
        raise ValueError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers (torchrun sets them): {err}") from None
    if not 0 <= world.rank < world.size:
        raise ValueError(f"RANK {world.rank} is outside 0..WORLD_SIZE-1 (WORLD_SIZE {world.size})")
    return world


def timeout_s() -> float:
    """How long a collective may wait for the other ranks, in seconds."""
    raw = os.environ.get("LLAMA_DIST_TIMEOUT_S", str(DEFAULT_TIMEOUT_S))
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError("LLAMA_DIST_TIMEOUT_S must be a positive number of seconds, "
                         f"got {raw!r}")
    return value


def choose_backend(requested: str, device: torch.device) -> str:
    """"auto": NCCL for CUDA devices, gloo for the CPU. NCCL without a GPU (or without NCCL in
    this PyTorch build) falls back to gloo, with a note on stderr."""
    if requested not in BACKENDS:
        raise ValueError(f"unknown backend {requested!r}; choose one of {', '.join(BACKENDS)}")
    if requested == "auto":
        return "nccl" if device.type == "cuda" and dist.is_nccl_available() else "gloo"
    if requested == "nccl" and (device.type != "cuda" or not dist.is_nccl_available()):
        why = ("this PyTorch has no NCCL" if not dist.is_nccl_available() else
               "NCCL moves CUDA tensors and this run's device is the CPU")
        print(f"note: --backend nccl asked for, but {why}; using gloo (TCP between CPU "
              "processes)", file=sys.stderr)
        return "gloo"
    return requested


def init_world(device: torch.device, backend: str = "auto") -> World:
    """Join the process group torchrun set up (a no-op for a world of one); returns the World.

    On CUDA each process uses GPU LOCAL_RANK. Idempotent: a second call returns the World.
    """
    world = world_from_env()
    if not world.is_distributed or dist.is_initialized():
        return world
    chosen = choose_backend(backend, device)
    if device.type == "cuda":
        torch.cuda.set_device(world.local_rank)
    dist.init_process_group(chosen, timeout=timedelta(seconds=timeout_s()))
    return world


def local_device(name: str, world: World) -> torch.device:
    """"cuda" under torchrun means this rank's own GPU, cuda:LOCAL_RANK."""
    device = torch.device(name)
    if device.type == "cuda" and device.index is None and world.is_distributed:
        return torch.device("cuda", world.local_rank)
    return device


def close_world() -> None:
    """Leave the process group. Call it after a DDP-wrapped model is gone (return from
    the function that holds it first): DDP's reducer keeps the group alive from C++, and if
    the reducer drops the last reference, the gloo group is torn down with the GIL held while
    gloo's worker thread may need the GIL to free its last work: a deadlock (pytorch issue
    56297) that hung a benchmark's rank here once."""
    if dist.is_initialized():
        gc.collect()  # a DDP model kept only by a reference cycle goes now, while the group lives
        dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.is_distributed:
        dist.barrier()


@contextmanager
def rank0_first(world: World) -> Iterator[None]:
    """Rank 0 runs the block first (it may write files: a tokenizer, a token cache); the others
    wait, then run it too and find the files made."""
    if world.rank != 0:
        barrier(world)
    yield
    if world.rank == 0:
        barrier(world)


@contextmanager
def quiet_unless_writer(world: World) -> Iterator[None]:
    """Inside the block, stdout and stderr of every rank but 0 go nowhere, so the result and the
    progress are printed once; an error raised out of the block is still reported by each rank."""
    if world.is_writer:
        yield
        return
    saved = sys.stdout, sys.stderr
    with open(os.devnull, "w") as sink:
        sys.stdout = sys.stderr = sink
        try:
            yield
        finally:
            sys.stdout, sys.stderr = saved


def from_rank0(world: World, make: Callable[[], T]) -> T:
    """`make()` on rank 0, sent to every rank (a line typed on rank 0's stdin, say)."""
    if not world.is_distributed:
        return make()
    box = [make() if world.is_writer else None]
    dist.broadcast_object_list(box, src=0)  # pickled by rank 0 of this very job, not untrusted input
    return box[0]


def lost_peer_message(world: World, err: BaseException) -> str | None:
    """The line `rank R lost the other ranks (...)` when `err` says another rank died or hung
    (gloo's and NCCL's wording; DDP's reducer raises a RuntimeError), with the first sentence
    of the backend's error without its source-file tag ("[.../pair.cc:537]"); None for any
    other error, or in a world of one."""
    text = " ".join(str(err).split())
    lost = isinstance(err, dist.DistError) or any(sign in str(err).lower() for sign in (
        "connection reset", "connection closed", "broken pipe", "timed out", "timeout", "nccl", "gloo"))
    if not (world.is_distributed and lost):
        return None
    first = re.sub(r"\[[^\]]*\.(?:cc|cpp|h):\d+\]\s*", "", text).split(". ")[0] or type(err).__name__
    return f"rank {world.rank} lost the other ranks ({first[:200]})"
