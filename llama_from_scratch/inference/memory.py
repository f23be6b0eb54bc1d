"""How much memory a model needs, before loading it: weights plus the KV cache.

    weights   = parameters x bytes per element (2 for float16/bfloat16, 4 for float32)
    KV cache  = 2 (keys and values) x n_layers x n_kv_heads x head_dim x bytes, per token
              x batch x tokens kept (prompt + new tokens)

LLaMA 2 7B in float16: 6.74 B parameters = 13.5 GB (12.6 GiB) of weights and 0.5 MiB of
KV cache per token (4,096 tokens: 2 GiB). Units here are GiB (2**30 bytes), as
nvidia-smi's MiB and Colab's "GB" are. Not counted: activations (small with
`last_only` generation and fused attention) and the CUDA context (a few hundred MiB),
which `fits` reserves as `overhead`.

Chapter: real_weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llama_from_scratch.checkpoints.dtypes import dtype_bytes
from llama_from_scratch.model.config import ModelArgs
from llama_from_scratch.model.parameters import count_parameters

GiB = 2**30
# Colab's free tier (T4 GPU): what nvidia-smi and Colab's resource panel show.
T4_GPU_BYTES = 15 * GiB  # 15,360 MiB
COLAB_RAM_BYTES = int(12.7 * GiB)
OVERHEAD_BYTES = 1 * GiB  # CUDA context, allocator slack and activations: an allowance, not a measurement


def human(n: float) -> str:
    """Bytes as "12.55 GiB", "512.0 KiB", ...: binary units."""
    for unit, size in (("GiB", GiB), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} bytes"


@dataclass(frozen=True)
class MemoryAccount:
    """Bytes for `args` in `dtype` with a KV cache of `batch` x `tokens`."""

    args: ModelArgs
    dtype: torch.dtype
    n_params: int
    weight_bytes: int
    kv_bytes_per_token: int
    batch: int
    tokens: int

    @property
    def kv_bytes(self) -> int:
        return self.kv_bytes_per_token * self.batch * self.tokens

    @property
    def total_bytes(self) -> int:
        return self.weight_bytes + self.kv_bytes

    def max_tokens(self, device_bytes: int, overhead: int = OVERHEAD_BYTES) -> int:
        """Tokens of KV cache (per sequence of the batch) that fit beside the weights; 0 if none."""
        free = device_bytes - overhead - self.weight_bytes
        return max(0, free // (self.kv_bytes_per_token * self.batch))

    def fits(self, device_bytes: int, overhead: int = OVERHEAD_BYTES) -> bool:
        return self.total_bytes + overhead <= device_bytes

    def report(self, device_bytes: int | None = None, device_name: str = "the device") -> str:
        a, name = self.args, str(self.dtype).removeprefix("torch.")
        lines = [
            f"memory account: {self.n_params:,} parameters",
            f"  shape: dim {a.dim}, {a.n_layers} layers, {a.n_heads} heads, {a.kv_heads} KV heads, "
            f"vocab {a.vocab_size}",
            f"  weights ({name}): {human(self.weight_bytes)} ({self.weight_bytes / 1e9:.2f} GB)",
            f"  KV cache per token: {human(self.kv_bytes_per_token)} (2 x {a.n_layers} layers x "
            f"{a.kv_heads} KV heads x {a.head_dim} x {dtype_bytes(self.dtype)} bytes)",
            f"  KV cache for {self.batch} x {self.tokens} tokens: {human(self.kv_bytes)}",
            f"  total: {human(self.total_bytes)}",
        ]
        if device_bytes is not None:
            verdict = "fits" if self.fits(device_bytes) else "does NOT fit"
            lines.append(f"  {device_name}: {human(device_bytes)} -> {verdict}")
            lines.append(f"  (allowing {human(OVERHEAD_BYTES)} for the CUDA context and activations); "
                         f"room for {self.max_tokens(device_bytes):,} tokens of KV cache")
        return "\n".join(lines)


def memory_account(args: ModelArgs, dtype: torch.dtype = torch.float16, tokens: int | None = None,
                   batch: int = 1) -> MemoryAccount:
    """The account for `batch` sequences of `tokens` positions (default: the full context)."""
    n = count_parameters(args)  # a tied output matrix counts once
    size = dtype_bytes(dtype)
    return MemoryAccount(args=args, dtype=dtype, n_params=n, weight_bytes=n * size,
                         kv_bytes_per_token=2 * args.n_layers * args.kv_heads * args.head_dim * size,
                         batch=batch, tokens=args.max_seq_len if tokens is None else tokens)
