"""What the training loop asks of a way to run: the interface, defined once, for one process.

`training.loop` trains through a `Parallel`. This base class is the single process: every
method is the identity or the plain PyTorch call. `DataParallel` (DDP) and
`FullyShardedParallel` (FSDP2) override what changes when several ranks share a step:

    share(x, y)          this rank's rows of a micro-batch: every rank draws the SAME windows
                         (one sampler, one seed) and keeps rows rank*k .. rank*k + k - 1, so a
                         run on N ranks sees exactly the data of a run on one
    gradient_sync(...)   whether backward communicates (only the last micro-batch needs to)
    mean(t)              a scalar averaged over ranks (the logged loss)
    as_float(t)          a scalar as a Python float (a sharded norm is a DTensor)
    model_state(m)       the full state dict, on the CPU, in the single-process layout
    optimizer_state(...) the optimizer's state dict, in the single-process layout
    load(...)            put such states back, whatever world size wrote them

So a checkpoint never depends on how many ranks wrote it. Not handled: pipeline parallelism.

Chapter: scale_out.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from llama_from_scratch.distributed.process_group import World


class Parallel:
    """One process: the training loop's reference behaviour."""

    name = "single"

    def __init__(self, world: World = World()):
        self.world = world

    def check_batch(self, micro_batch: int) -> None:
        """ValueError unless the ranks can split a micro-batch of `micro_batch` rows equally."""
        if micro_batch % self.world.size:
            raise ValueError(
                f"the batch does not divide among {self.world.size} ranks: each micro-batch holds {micro_batch} "
                f"sequences (--batch-size / --grad-accum), and every rank needs the same share. Choose a "
                f"--batch-size that is a multiple of --grad-accum x {self.world.size}")

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module to train (before the optimizer is built on its parameters)."""
        return model

    def unwrap(self, model: nn.Module) -> nn.Module:
        """The module to evaluate: every rank runs it on the same windows."""
        return model

    def share(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's rows of `(micro_batch, seq)` inputs and targets:
        `(micro_batch / ranks, seq)` each."""
        rows = x.shape[0] // self.world.size
        start = self.world.rank * rows
        return x[start:start + rows], y[start:start + rows]

    def gradient_sync(self, model: nn.Module, last_micro_batch: bool) -> AbstractContextManager:
        return nullcontext()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """A scalar averaged over the ranks (gloo has no AVG: a SUM, then a division)."""
        if not self.world.is_distributed:
            return value
        value = value.detach().clone()
        dist.all_reduce(value)
        return value / self.world.size

    def as_float(self, value: torch.Tensor) -> float:
        return float(value.full_tensor() if hasattr(value, "full_tensor") else value)

    def model_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return self.unwrap(model).state_dict()

    def optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        return optimizer.state_dict()

    def load(self, model: nn.Module, optimizer: torch.optim.Optimizer, model_state: dict[str, Any],
             optimizer_state: dict[str, Any]) -> None:
        self.unwrap(model).load_state_dict(model_state)
        optimizer.load_state_dict(optimizer_state)


def named_optimizer_state(state: dict[str, Any]) -> dict[str, Any]:
    """PyTorch's optimizer state dict (parameters numbered 0, 1, ... in group order) -> the same keyed
    by parameter name, as `torch.distributed.checkpoint.state_dict` writes it. Needs the groups'
    `param_names` (our `param_groups` always sets them)."""
    index_to_name: dict[int, str] = {}
    groups = []
    for group in state["param_groups"]:
        if "param_names" not in group:
            raise ValueError("the optimizer state has no param_names; build the optimizer from "
                             "training.optimizer.param_groups")
        index_to_name.update(zip(group["params"], group["param_names"]))
        groups.append({**group, "params": list(group["param_names"])})
    return {"state": {index_to_name[i]: s for i, s in state["state"].items()}, "param_groups": groups}


def indexed_optimizer_state(state: dict[str, Any]) -> dict[str, Any]:
    """The inverse of `named_optimizer_state`: names -> 0, 1, ... in group order."""
    name_to_index: dict[str, int] = {}
    groups = []
    for group in state["param_groups"]:
        first = len(name_to_index)
        name_to_index.update((name, first + k) for k, name in enumerate(group["params"]))
        groups.append({**group, "params": [name_to_index[n] for n in group["params"]],
                       "param_names": list(group["params"])})
    return {"state": {name_to_index[n]: s for n, s in state["state"].items()}, "param_groups": groups}
