"""The causal mask: a token may look at itself and the past, never the future.

With a KV cache the queries are the last `q_len` of `kv_len` positions: query i sits
at absolute position `kv_len - q_len + i` and may see keys 0 .. that position.

Chapter: warmup.
"""

from __future__ import annotations

import torch


def causal_mask(q_len: int, kv_len: int | None = None,
                device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean mask `(q_len, kv_len)`: True where query i may attend to key j.

    `kv_len` defaults to `q_len` (no cache). Requires `kv_len >= q_len >= 0`.
    """
    kv_len = q_len if kv_len is None else kv_len
    if not 0 <= q_len <= kv_len:
        raise ValueError(f"need 0 <= q_len <= kv_len, got q_len={q_len}, kv_len={kv_len}")
    offset = kv_len - q_len  # absolute position of query 0
    q_pos = torch.arange(q_len, device=device)[:, None] + offset  # (q_len, 1)
    k_pos = torch.arange(kv_len, device=device)[None, :]  # (1, kv_len)
    return k_pos <= q_pos  # (q_len, kv_len)


def additive_mask(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Turn a boolean mask into the additive form scores use: 0 where allowed, -inf
    elsewhere."""
    out = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return out.masked_fill(~mask, float("-inf"))
