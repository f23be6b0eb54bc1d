"""How many bytes each rank sends per step under data, sharded and tensor parallelism, and
how much memory AdamW training takes per rank.

Every collective is counted as the ring algorithm runs it (one of NCCL's algorithms, and the
bandwidth-optimal one: no algorithm sends less per rank): over N ranks a tensor is cut into N
chunks, and every step each rank sends one chunk to its right-hand neighbour while receiving
one from its left.

    reduce-scatter  N - 1 steps: add the incoming chunk, pass the sum on   (N-1)/N of the input
    all-gather      N - 1 steps: pass every finished chunk round the ring  (N-1)/N of the output
    all-reduce      a reduce-scatter, then an all-gather                   2 (N-1)/N of the tensor

The counts are bytes SENT by one rank (it receives as many): divide by a link's bandwidth in
ONE direction to get a time. They are exact when the tensor splits into N equal chunks, the
average over ranks otherwise. Not counted: headers, latency (a ring pays N - 1 hops of it per
phase, which dominates for small tensors), tree or hierarchical algorithms.

Chapter: scale_out.
"""

from __future__ import annotations

# Bytes per parameter of AdamW training state. Pure float32: weights, gradients and the two
# moments. Mixed precision (bf16 weights and gradients for the matmuls, a float32 master copy
# that the optimizer updates, float32 moments) comes to the same 16: 2 + 2 + 4 + 4 + 4.
ADAMW_FLOAT32 = {"params": 4, "grads": 4, "exp_avg": 4, "exp_avg_sq": 4}
ADAMW_MIXED = {"params (bf16)": 2, "grads (bf16)": 2, "master params": 4, "exp_avg": 4,
               "exp_avg_sq": 4}


def _check(world: int, **sizes: int) -> None:
    if world < 1:
        raise ValueError(f"world must be at least 1 rank, got {world}")
    for name, value in sizes.items():
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")


def all_reduce_bytes(n_bytes: int, world: int) -> float:
    """Bytes each rank sends in a ring all-reduce of an `n_bytes` tensor: 2 (N-1)/N n
    (a reduce-scatter, then an all-gather). 0 for a single rank."""
    _check(world, n_bytes=n_bytes)
    return 2 * (world - 1) / world * n_bytes


def all_gather_bytes(n_bytes_total: int, world: int) -> float:
    """Bytes each rank sends in a ring all-gather whose gathered result is `n_bytes_total`:
    every rank passes on the N - 1 chunks it does not own, (N-1)/N of the total."""
    _check(world, n_bytes_total=n_bytes_total)
    return (world - 1) / world * n_bytes_total


def reduce_scatter_bytes(n_bytes_total: int, world: int) -> float:
    """Bytes each rank sends in a ring reduce-scatter of an `n_bytes_total` input (each rank's
    full tensor; each ends with 1/N of the sum): N - 1 partial sums of one chunk, (N-1)/N."""
    _check(world, n_bytes_total=n_bytes_total)
    return (world - 1) / world * n_bytes_total


def ddp_step_bytes(n_params: int, world: int, grad_bytes: int = 4) -> float:
    """Bytes each rank sends per optimizer step under DistributedDataParallel: one all-reduce
    of every gradient (DDP cuts them into buckets; the total is the same).

    With gradient accumulation under `no_sync()` the micro-batches before the last skip the
    all-reduce, so it is once per step whatever the number of micro-batches.
    """
    _check(world, n_params=n_params, grad_bytes=grad_bytes)
    return all_reduce_bytes(n_params * grad_bytes, world)


def fsdp_step_bytes(n_params: int, world: int, param_bytes: int = 4, grad_bytes: int = 4,
                    reshard_after_forward: bool = True, micro_batches: int = 1) -> float:
    """Bytes each rank sends per optimizer step under fully sharded data parallel (FSDP2's
    `fully_shard`, ZeRO-3): per micro-batch an all-gather of the parameters for the forward,
    a second one for the backward if they were freed (resharded) after the forward, and a
    reduce-scatter of the gradients.

    That is 1.5x DDP's bytes with resharding (3 (N-1)/N against 2 (N-1)/N of the model), 1x
    without. FSDP2 keeps the root module's own parameters (those in no sharded child, e.g.
    embedding and output when only the blocks are wrapped) unsharded after the forward: count
    them with `reshard_after_forward=False` and add.
    """
    _check(world, n_params=n_params, param_bytes=param_bytes, grad_bytes=grad_bytes)
    if micro_batches < 1:
        raise ValueError(f"micro_batches must be at least 1, got {micro_batches}")
    gathers = 2 if reshard_after_forward else 1
    per_micro = (gathers * all_gather_bytes(n_params * param_bytes, world)
                 + reduce_scatter_bytes(n_params * grad_bytes, world))
    return micro_batches * per_micro


def tp_forward_bytes(dim: int, n_layers: int, vocab_size: int, tokens: int, world: int,
                     act_bytes: int = 4, logit_rows: int | None = None) -> float:
    """Bytes each rank sends in one forward pass of Meta's tensor-parallel layout (fairscale's
    ParallelEmbedding, ColumnParallelLinear, RowParallelLinear) over `tokens` positions:

        embedding   all-gather (tokens, dim): each rank looked up dim/N columns
        each layer  all-reduce (tokens, dim) twice: the partial sums after wo and after w2
                    (wq/wk/wv and w1/w3 are column-parallel and need nothing: their split
                    outputs feed the row-parallel wo and w2 directly)
        output      all-gather (logit_rows, vocab): each rank scored vocab/N words

    `logit_rows` defaults to `tokens`; generation scoring only the last position passes the
    batch size. The backward pass of training sends as much again (the conjugate collectives).
    """
    _check(world, dim=dim, n_layers=n_layers, vocab_size=vocab_size, tokens=tokens,
           act_bytes=act_bytes)
    rows = tokens if logit_rows is None else logit_rows
    activation = tokens * dim * act_bytes
    return (all_gather_bytes(activation, world)
            + 2 * n_layers * all_reduce_bytes(activation, world)
            + all_gather_bytes(rows * vocab_size * act_bytes, world))


def adamw_bytes_per_rank(n_params: int, world: int = 1, sharded: bool = True,
                         mixed_precision: bool = False) -> float:
    """Memory of AdamW training state per rank: 16 bytes per parameter (`ADAMW_FLOAT32`, or
    `ADAMW_MIXED` with `mixed_precision`: also 16), divided by the ranks when `sharded`
    (FSDP, ZeRO-3), the whole of it on every rank when replicated (DDP).

    Not counted: activations, temporary buffers (FSDP's gathered layer, DDP's buckets) and
    the allocator's slack.
    """
    _check(world, n_params=n_params)
    per_param = sum((ADAMW_MIXED if mixed_precision else ADAMW_FLOAT32).values())
    return n_params * per_param / (world if sharded else 1)
