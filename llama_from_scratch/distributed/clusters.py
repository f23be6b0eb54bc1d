"""The cost model on paper: LLaMA 2 7B and 70B pretraining steps on real clusters.

Hardware, from the vendors' datasheets (per GPU):

    A100 80GB SXM  312 TFLOP/s dense bf16 (624 is with 2:4 sparsity), NVLink 3: 600 GB/s total
    H100 SXM       989 TFLOP/s dense bf16 (1,979 with sparsity),     NVLink 4: 900 GB/s total
    InfiniBand     HDR 200 Gb/s, NDR 400 Gb/s per port and direction; DGX A100 / DGX H100
                   nodes have one such port per GPU (8 per node) for the compute fabric

NVIDIA's NVLink figures are bidirectional (A100: 12 links x 25 GB/s each way x 2 directions);
InfiniBand's are per direction. Ring collectives send and receive at once, so their time is
bytes sent / ONE direction's bandwidth: 300 GB/s (A100), 450 GB/s (H100), 25 GB/s (HDR) and
50 GB/s (NDR) per GPU are the numbers used here.

LLaMA 2 (Touvron et al. 2023, section 2.2.1): pretrained on Meta's Research Super Cluster and
production clusters, both A100-80GB, InfiniBand (RSC) or RoCE (production) with 200 Gbps
end-points; Table 2's GPU-hours are `scaling.compute.LLAMA2_PRETRAINING`. The global batch is
4M tokens, sequences of 4,096. The paper does not say how the models were parallelised.

Assumptions: an MFU of 0.4 (the paper's hours imply 0.39 for 7B and 0.43 for 70B: 6 N D /
(hours x 3600 x 312e12)); bf16 weights, gradients and activations on the wire; data parallel
across nodes over InfiniBand, tensor parallel within a node over NVLink; no overlap of
communication with compute (real runs hide much of it); activations' memory not counted.

Chapter: scale_out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llama_from_scratch.distributed.cost_model import (adamw_bytes_per_rank, ddp_step_bytes,
                                                        fsdp_step_bytes, tp_forward_bytes)
from llama_from_scratch.model.config import preset
from llama_from_scratch.model.parameters import count_parameters
from llama_from_scratch.scaling.compute import (A100_BF16, LLAMA2_PRETRAINING, implied_utilisation,
                                                training_flops)

MFU = 0.4
BATCH_TOKENS = 1024 * 4096  # LLaMA 2's global batch: 4M tokens, 1,024 sequences of 4,096
WIRE_BYTES = 2  # bf16


@dataclass(frozen=True)
class Gpu:
    name: str
    peak_flops: float  # dense bf16 tensor-core FLOP/s
    memory_bytes: float
    nvlink_bytes_per_s: float  # ONE direction (NVIDIA quotes both together: twice this)


@dataclass(frozen=True)
class Cluster:
    name: str
    gpu: Gpu
    gpus_per_node: int
    network_bytes_per_s: float  # per GPU, ONE direction: its own InfiniBand port


A100_80GB = Gpu("A100 80GB SXM", A100_BF16, 80 * 2**30, 300e9)  # 81,920 MiB
H100_SXM = Gpu("H100 SXM", 989e12, 80 * 2**30, 450e9)  # 80 GiB, nominal
CLUSTERS = {
    "a100-hdr": Cluster("A100 80GB + InfiniBand HDR (LLaMA 2's RSC)", A100_80GB, 8, 200e9 / 8),
    "h100-ndr": Cluster("H100 SXM + InfiniBand NDR", H100_SXM, 8, 400e9 / 8),
}


def compute_seconds(n_params: float, tokens: float, gpus: int, gpu: Gpu, mfu: float = MFU) -> float:
    """6 N tokens / (GPUs x peak x MFU): the time for `gpus` GPUs to train on `tokens` tokens."""
    if gpus < 1 or not 0 < mfu <= 1:
        raise ValueError(f"need gpus >= 1 and 0 < mfu <= 1, got gpus={gpus}, mfu={mfu}")
    return training_flops(n_params, tokens) / (gpus * gpu.peak_flops * mfu)


def transfer_seconds(bytes_sent: float, cluster: Cluster, within_node: bool) -> float:
    """Time to send `bytes_sent` from one GPU: over NVLink within a node, else its network port."""
    bandwidth = cluster.gpu.nvlink_bytes_per_s if within_node else cluster.network_bytes_per_s
    return bytes_sent / bandwidth


def memory_plan(n_params: int, gpu: Gpu) -> dict[str, float | str]:
    """What fits: `train_bytes` (AdamW, 16 per parameter, replicated), `min_shards` (GPUs to
    shard that state over, activations aside), `serve_bytes` (bf16 weights), `serve_min_gpus`
    (tensor-parallel ranks to hold them), and `train` / `serve` saying what that takes."""
    train = adamw_bytes_per_rank(n_params, sharded=False, mixed_precision=True)
    serve = WIRE_BYTES * n_params
    shards, serve_gpus = math.ceil(train / gpu.memory_bytes), math.ceil(serve / gpu.memory_bytes)
    return {"train_bytes": train, "min_shards": shards, "serve_bytes": serve,
            "serve_min_gpus": serve_gpus,
            "train": "replicas fit: DDP" if shards == 1 else f"shard over >= {shards} GPUs (FSDP)",
            "serve": "one GPU" if serve_gpus == 1 else f"tensor parallel over >= {serve_gpus} GPUs"}


def training_days(n_params: float, tokens: float, gpus: int, gpu: Gpu, mfu: float = MFU) -> float:
    """Days for `gpus` GPUs to train on `tokens` tokens at `mfu`."""
    return compute_seconds(n_params, tokens, gpus, gpu, mfu) / 86400


def gpus_for_days(n_params: float, tokens: float, days: float, gpu: Gpu, mfu: float = MFU) -> int:
    """GPUs needed to train on `tokens` tokens within `days` days at `mfu` (rounded up)."""
    return math.ceil(compute_seconds(n_params, tokens, 1, gpu, mfu) / (days * 86400))


def step_report(size: str, cluster: Cluster, gpus: int, tp: int = 1, sharded: bool = True,
                mfu: float = MFU, batch_tokens: int = BATCH_TOKENS, tokens: float = 2e12
                ) -> dict[str, float | str | bool]:
    """One optimizer step of LLaMA 2 `size` ("7B", "13B" or "70B") on `gpus` GPUs of `cluster`:
    tensor parallel over `tp` GPUs of a node, data parallel (FSDP if `sharded`, else DDP) over
    the gpus / tp groups, across nodes. Each group's ranks hold 1/tp of the parameters (the
    norms, replicated in fact, are split too: a rounding).

    Keys: compute_s; dp_bytes and dp_s (per rank, over InfiniBand); tp_bytes and tp_s (forward
    and backward, over NVLink); comm_over_compute; state_bytes_per_gpu and fits (AdamW state
    only); days and gpu_hours for `tokens`; paper_gpu_hours and paper_mfu (Table 2).
    """
    if size not in LLAMA2_PRETRAINING or LLAMA2_PRETRAINING[size].preset is None:
        released = [k for k, run in LLAMA2_PRETRAINING.items() if run.preset]
        raise ValueError(f"no released LLaMA 2 shape {size!r}; "
                         f"choose one of {', '.join(released)}")
    if tp < 1 or tp > cluster.gpus_per_node or gpus % tp:
        raise ValueError(f"tp={tp} must divide gpus={gpus} and fit in one node of "
                         f"{cluster.gpus_per_node} GPUs")
    args = preset(size)
    n_params = count_parameters(args)
    groups = gpus // tp
    if sharded:
        dp_bytes = fsdp_step_bytes(n_params // tp, groups, WIRE_BYTES, WIRE_BYTES)
    else:
        dp_bytes = ddp_step_bytes(n_params // tp, groups, WIRE_BYTES)
    group_tokens = batch_tokens // groups
    tp_bytes = 2 * tp_forward_bytes(args.dim, args.n_layers, args.vocab_size, group_tokens, tp,
                                    WIRE_BYTES)
    compute = compute_seconds(n_params, batch_tokens, gpus, cluster.gpu, mfu)
    one_node = groups * tp <= cluster.gpus_per_node
    dp_s = transfer_seconds(dp_bytes, cluster, within_node=one_node)
    tp_s = transfer_seconds(tp_bytes, cluster, within_node=True)
    state = adamw_bytes_per_rank(n_params // tp, groups, sharded, mixed_precision=True)
    days = training_days(n_params, tokens, gpus, cluster.gpu, mfu)
    paper = LLAMA2_PRETRAINING[size]
    return {"size": size, "cluster": cluster.name, "gpus": gpus, "tp": tp,
            "dp": "fsdp" if sharded else "ddp", "n_params": n_params, "compute_s": compute,
            "dp_bytes": dp_bytes, "dp_s": dp_s, "tp_bytes": tp_bytes, "tp_s": tp_s,
            "comm_over_compute": (dp_s + tp_s) / compute, "state_bytes_per_gpu": state,
            "fits": state <= cluster.gpu.memory_bytes, "days": days,
            "gpu_hours": days * 24 * gpus, "paper_gpu_hours": paper.gpu_hours,
            "paper_mfu": implied_utilisation(paper.params, paper.tokens, paper.gpu_hours)}
