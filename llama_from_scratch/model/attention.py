"""Causal self-attention with grouped-query heads and a KV cache.

One module covers the three variants, chosen by `n_kv_heads`:

* multi-head (MHA): n_kv_heads == n_heads, every query head has its own keys/values;
* multi-query (MQA): n_kv_heads == 1, all query heads share one key/value head;
* grouped-query (GQA): in between; LLaMA 2 70B uses 64 query heads and 8 KV heads.

Fewer key/value heads means a smaller KV cache: the cache holds keys and values of
every past position so that decoding one more token costs one new row, not a full
recompute. `attend_explicit` spells out the math for reading; `attend_sdpa` calls
PyTorch's fused `F.scaled_dot_product_attention`; the two are tested equal.
Not handled: padding masks (generation never feeds padding), dropout, sliding windows.

Chapter: attention.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from llama_from_scratch.model.config import ModelArgs
from llama_from_scratch.model.masks import causal_mask
from llama_from_scratch.model.rope import apply_rope_complex
from llama_from_scratch.model.softmax import softmax

# PyTorch 2.5 added `enable_gqa` to scaled_dot_product_attention; older versions copy heads.
SDPA_HAS_GQA = tuple(int(part) for part in torch.__version__.split(".")[:2]) >= (2, 5)


class KVCache:
    """Keys and values of past positions for one layer, preallocated to `max_seq_len`."""

    def __init__(self, batch: int, max_seq_len: int, n_kv_heads: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None):
        shape = (batch, n_kv_heads, max_seq_len, head_dim)
        # (batch, kv_heads, max_seq, head_dim) each
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)

    def update(self, start_pos: int, k: torch.Tensor,
               v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v `(batch, kv_heads, seq, head_dim)` at positions start_pos..;
        return all so far."""
        end = start_pos + k.shape[2]
        if end > self.k.shape[2]:
            raise ValueError(f"KV cache holds {self.k.shape[2]} positions; "
                             f"cannot write up to {end}")
        batch = k.shape[0]
        self.k[:batch, :, start_pos:end] = k
        self.v[:batch, :, start_pos:end] = v
        # (batch, kv_heads, end, head_dim) each
        return self.k[:batch, :, :end], self.v[:batch, :, :end]


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """`(batch, kv_heads, seq, head_dim) -> (batch, kv_heads * n_rep, seq, head_dim)`.

    Each key/value head is shared by n_rep consecutive query heads.
    """
    if n_rep == 1:
        return x
    b, kv_heads, seq, head_dim = x.shape
    # (b, kv_heads, n_rep, seq, hd): a view, no copy yet
    x = x[:, :, None, :, :].expand(b, kv_heads, n_rep, seq, head_dim)
    return x.reshape(b, kv_heads * n_rep, seq, head_dim)  # (b, heads, seq, hd)


def attend_explicit(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(head_dim) + causal mask) v, written out.

    q: `(batch, heads, q_len, head_dim)`; k, v: `(batch, kv_heads, kv_len, head_dim)`, where
    the queries are the last q_len of the kv_len positions.
    Returns `(batch, heads, q_len, head_dim)`.
    """
    n_rep = q.shape[1] // k.shape[1]
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)  # (batch, heads, kv_len, head_dim) each
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (batch, heads, q_len, kv_len)
    # (q_len, kv_len), True = may attend
    mask = causal_mask(q.shape[2], k.shape[2], device=q.device)
    scores = scores.masked_fill(~mask, float("-inf"))  # (batch, heads, q_len, kv_len)
    probs = softmax(scores.float(), dim=-1).type_as(q)  # (batch, heads, q_len, kv_len)
    return probs @ v  # (batch, heads, q_len, head_dim)


def attend_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The same as `attend_explicit` through PyTorch's fused kernel, without copying
    the cache."""
    b, n_heads, q_len, head_dim = q.shape
    n_kv_heads, kv_len = k.shape[1], k.shape[2]
    n_rep = n_heads // n_kv_heads
    if q_len == 1:  # decoding: one new token may see every cached position, so no mask.
        # The n_rep query heads of a group share one key/value head: make them the group's
        # "rows" of queries instead of copying the keys and values n_rep times.
        q = q.view(b, n_kv_heads, n_rep, head_dim)  # (b, kv_heads, n_rep, head_dim)
        out = F.scaled_dot_product_attention(q, k, v)  # (b, kv_heads, n_rep, head_dim)
        return out.view(b, n_heads, 1, head_dim)  # (b, heads, 1, head_dim)
    if q_len == kv_len and SDPA_HAS_GQA and n_rep > 1:  # no cache: the plain triangle;
        # the kernel itself lets each key/value head serve its n_rep query heads (no copies)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                              enable_gqa=True)  # (b, heads, q_len, hd)
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)  # (b, heads, kv_len, head_dim) each
    if q_len == kv_len:  # no cache: the plain lower-triangular mask
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (b, heads, q_len, hd)
    # is_causal aligns the triangle top-left; with a cache the queries are the *last* rows.
    mask = causal_mask(q_len, kv_len, device=q.device)  # (q_len, kv_len)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (b, heads, q_len, hd)


class Attention(nn.Module):
    """`(batch, seq, dim) -> (batch, seq, dim)`; `use_sdpa=False` selects the explicit path."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.n_heads = args.n_heads
        self.n_kv_heads = args.kv_heads
        self.head_dim = args.head_dim
        self.use_sdpa = True
        self.wq = nn.Linear(args.dim, self.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(args.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(args.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(self.n_heads * self.head_dim, args.dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                start_pos: int = 0, cache: KVCache | None = None) -> torch.Tensor:
        """x holds positions start_pos .. start_pos + seq - 1;
        cos, sin `(seq, head_dim // 2)` for them."""
        b, seq, _ = x.shape
        hd, kv_heads = self.head_dim, self.n_kv_heads
        q = self.wq(x).view(b, seq, self.n_heads, hd).transpose(1, 2)  # (b, heads, seq, hd)
        k = self.wk(x).view(b, seq, kv_heads, hd).transpose(1, 2)  # (b, kv_heads, seq, hd)
        v = self.wv(x).view(b, seq, kv_heads, hd).transpose(1, 2)  # (b, kv_heads, seq, hd)
        # positions enter here, and only here
        q, k = apply_rope_complex(q, cos, sin), apply_rope_complex(k, cos, sin)
        if cache is not None:
            k, v = cache.update(start_pos, k, v)  # (b, kv_heads, start_pos + seq, hd) each
        elif start_pos != 0:
            raise ValueError("start_pos > 0 needs a KV cache holding the earlier positions")
        attend = attend_sdpa if self.use_sdpa else attend_explicit
        out = attend(q, k, v)  # (b, heads, seq, head_dim)
        out = out.transpose(1, 2).reshape(b, seq, self.n_heads * hd)  # (b, seq, dim)
        return self.wo(out)  # (b, seq, dim)
