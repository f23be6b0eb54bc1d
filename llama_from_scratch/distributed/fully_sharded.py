"""Sharded data parallelism (FSDP2, `fully_shard`): each rank stores 1/N of every weight.

Each decoder block is its own FSDP unit, and the root holds the rest (embedding, final norm,
output). Parameters become DTensors sharded along dim 0, so a rank keeps 1/N of the
weights, of their gradients and (the optimizer is built on the shards) of AdamW's two
moments: 16 bytes per parameter divided by N, where DDP keeps all 16. The price is traffic:
before a block runs forward, its shards are all-gathered into full weights and freed after;
backward gathers them again, and the gradients are reduce-scattered, each rank receiving
the sum for its own shard. Clipping works unchanged: our `clip_grad_norm` on DTensor
gradients computes the global norm (its result is a replicated DTensor).

Checkpoints hold the FULL state dicts in the single-process layout (gathered to rank 0 on
the CPU; the optimizer's states renamed to PyTorch's numbering), so they load in one process,
in DDP, or in FSDP on any number of ranks. Needs torch 2.6 or newer (where `fully_shard` became
public; gloo runs it on CPUs). Not handled: mixed-precision policies, CPU offload of the shards,
sharded (distributed-checkpoint) files.

Chapter: scale_out.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager
from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_model_state_dict,
                                                     set_optimizer_state_dict)
from torch.distributed.fsdp import fully_shard

from llama_from_scratch.distributed.parallel import Parallel, indexed_optimizer_state, named_optimizer_state

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


class FullyShardedParallel(Parallel):
    """FSDP2 over the ranks of `world`: one unit per decoder block, one for the rest."""

    name = "fsdp"

    def wrap(self, model: nn.Module) -> nn.Module:
        for block in model.layers:
            fully_shard(block)
        fully_shard(model)
        return model

    def gradient_sync(self, model: nn.Module,
                      last_micro_batch: bool) -> AbstractContextManager:
        return _requires_sync(model, last_micro_batch)

    def model_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The full state dict on rank 0 (an empty dict elsewhere): a collective, so every
        rank calls it."""
        return get_model_state_dict(model, options=FULL)

    def optimizer_state(self, model: nn.Module,
                        optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        state = get_optimizer_state_dict(model, optimizer, options=FULL)
        return indexed_optimizer_state(state) if state.get("param_groups") else state

    def load(self, model: nn.Module, optimizer: torch.optim.Optimizer,
             model_state: dict[str, Any], optimizer_state: dict[str, Any]) -> None:
        """Every rank passes the full states (read from the file) and keeps its own shards."""
        options = StateDictOptions(full_state_dict=True)
        set_model_state_dict(model, model_state, options=options)
        named = named_optimizer_state(optimizer_state)
        set_optimizer_state_dict(model, optimizer, named, options=options)


@contextmanager
def _requires_sync(model: nn.Module, sync: bool):
    model.set_requires_gradient_sync(sync)  # False: keep unsharded gradients, reduce later
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def shard_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, int]:
    """Bytes this rank holds: its parameter shards, their gradients, and AdamW's moments."""
    def local(t: torch.Tensor) -> torch.Tensor:
        return t.to_local() if hasattr(t, "to_local") else t

    params = list(model.parameters())
    out = {"parameters": sum(local(p).nbytes for p in params),
           "gradients": sum(local(p.grad).nbytes for p in params if p.grad is not None), "optimizer": 0}
    if optimizer is not None:
        out["optimizer"] = sum(local(v).nbytes for s in optimizer.state.values() for v in s.values()
                               if isinstance(v, torch.Tensor))
    return out
