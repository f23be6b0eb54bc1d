"""Data parallelism: every rank holds the whole model and trains on its share of each batch.

`DistributedDataParallel` (DDP) wraps the model. Backward fills each parameter's gradient
from this rank's rows, and DDP all-reduces the gradients in buckets while backward is still
running (communication overlaps compute), dividing by the number of ranks. Each rank's loss
is the mean over its equal share of rows, so the averaged gradient is the mean over the whole
micro-batch: the gradient one process gets from the same global batch, up to the order of
float32 additions. Every rank then takes the same AdamW step and the replicas stay identical.

With gradient accumulation only the last micro-batch all-reduces (`no_sync` before it): the
sum of the others' gradients is kept locally and reduced once. Memory per rank: the full 16
bytes per parameter of float32 AdamW; DDP saves time, not memory (that is FSDP's job).
Not handled: uneven shares (the batch must divide among the ranks), DDP's static-graph options.

Chapter: scale_out.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

from torch import nn
from torch.nn.parallel import DistributedDataParallel

from llama_from_scratch.distributed.parallel import Parallel


class DataParallel(Parallel):
    """DDP over the ranks of `world` (gloo on CPUs, NCCL on GPUs)."""

    name = "ddp"

    def wrap(self, model: nn.Module) -> nn.Module:
        device = next(model.parameters()).device
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)  # sends rank 0's weights once

    def unwrap(self, model: nn.Module) -> nn.Module:
        return model.module if isinstance(model, DistributedDataParallel) else model

    def gradient_sync(self, model: nn.Module,
                      last_micro_batch: bool) -> AbstractContextManager:
        return nullcontext() if last_micro_batch else model.no_sync()
