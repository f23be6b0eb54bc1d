"""Rotary position embeddings (RoPE).

Split a head's vector into pairs of numbers and rotate pair i at position m by the
angle m * theta_i, with theta_i = theta ** (-2i / head_dim). The dot product of a
rotated query (position m) with a rotated key (position n) then depends only on
m - n: attention sees relative positions, and nothing is added to the embeddings.

Two conventions pair the dimensions differently:

* Meta (and llama2.c): adjacent pairs (0, 1), (2, 3), ... -- `apply_rope` (as rotations),
  `apply_rope_complex` (as complex multiplication, Meta's way; the model uses this one).
* Hugging Face: the two halves, (0, d/2), (1, d/2 + 1), ... -- `apply_rope_rotate_half`.

They give the same attention scores once the rows of wq and wk are permuted so that
each pair lands where the other convention expects it: `permute_to_rotate_half`
(Meta -> HF, the permutation in transformers' convert_llama_weights_to_hf.py) and
`permute_to_adjacent` (HF -> Meta). Not handled: RoPE scaling (Llama 3.1, NTK, YaRN).

Chapter: rope.
"""

from __future__ import annotations

import torch


def inverse_frequencies(head_dim: int, theta: float = 10000.0,
                        device: torch.device | str | None = None) -> torch.Tensor:
    """theta_i = 1 / theta ** (2i / head_dim) for i = 0 .. head_dim/2 - 1:
    `(head_dim // 2,)` float32.

    The one definition: the model's cos/sin tables and the `rope.freqs` that Meta's files
    hold both come from here. Written exactly as Meta's precompute_freqs_cis computes it
    (`1.0 / theta ** (arange(0, dim, 2) / dim)` in float32): llama2.c's stored tables, made
    from the same expression, match ours bit for bit.
    """
    return 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim)


def precompute_freqs(head_dim: int, max_seq_len: int, theta: float = 10000.0,
                     device: torch.device | str | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of every rotation angle: two `(max_seq_len, head_dim // 2)` float32
    tensors."""
    inv_freq = inverse_frequencies(head_dim, theta, device)  # (head_dim/2,)
    positions = torch.arange(max_seq_len, device=device).float()  # (max_seq_len,)
    angles = torch.outer(positions, inv_freq)  # (max_seq_len, head_dim/2): m * theta_i
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Meta's convention: rotate adjacent pairs (x[2i], x[2i+1]), written out as 2-D
    rotations.

    x: `(batch, heads, seq, head_dim)`; cos, sin: `(seq, head_dim // 2)` for the positions
    of x.
    """
    x32 = x.float().unflatten(-1, (-1, 2))  # (batch, heads, seq, head_dim/2, 2)
    x0, x1 = x32[..., 0], x32[..., 1]  # (batch, heads, seq, head_dim/2) each
    out = torch.stack([x0 * cos - x1 * sin,  # the 2-D rotation of each pair
                       x0 * sin + x1 * cos], dim=-1)  # (batch, heads, seq, head_dim/2, 2)
    return out.flatten(-2).type_as(x)  # (batch, heads, seq, head_dim)


def apply_rope_complex(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """`apply_rope` the way Meta's code does it, and the model's fast path: read each pair
    as a complex number a + ib and multiply it by e^(i m theta_j) = cos + i sin.

    One complex multiply instead of six real operations on strided halves: about 5x faster
    forward + backward on a CPU, and the same bits. Same shapes as `apply_rope`.
    """
    # (batch, heads, seq, head_dim/2) complex
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
    rotated = pairs * torch.complex(cos, sin)  # rotate each pair by m * theta_j
    return torch.view_as_real(rotated).flatten(-2).type_as(x)  # (batch, heads, seq, head_dim)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)  # (..., head_dim/2) each
    return torch.cat([-x2, x1], dim=-1)  # (..., head_dim)


def apply_rope_rotate_half(x: torch.Tensor, cos: torch.Tensor,
                           sin: torch.Tensor) -> torch.Tensor:
    """Hugging Face's convention: rotate the pairs (x[i], x[i + head_dim/2]).

    Same shapes as `apply_rope`.
    """
    cos = torch.cat([cos, cos], dim=-1)  # (seq, head_dim)
    sin = torch.cat([sin, sin], dim=-1)  # (seq, head_dim)
    return (x * cos + rotate_half(x) * sin).type_as(x)  # (batch, heads, seq, head_dim)


def permute_to_rotate_half(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorder the output rows of a Meta wq/wk `(n_heads * head_dim, dim)` for rotate-half.

    Within each head, rows 0, 2, 4, ... (each pair's first element) go to the first
    half and rows 1, 3, 5, ... to the second. Use n_kv_heads for wk.
    """
    out_dim, in_dim = w.shape
    head_dim = out_dim // n_heads
    return (w.view(n_heads, head_dim // 2, 2, in_dim)  # (heads, pair, 2, dim)
             .transpose(1, 2)  # (heads, 2, pair, dim): firsts, then seconds
             .reshape(out_dim, in_dim))


def permute_to_adjacent(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The inverse of `permute_to_rotate_half`: Hugging Face q_proj/k_proj rows -> Meta's."""
    out_dim, in_dim = w.shape
    head_dim = out_dim // n_heads
    return (w.view(n_heads, 2, head_dim // 2, in_dim)  # (heads, 2, pair, dim)
             .transpose(1, 2)  # (heads, pair, 2, dim): interleave the halves
             .reshape(out_dim, in_dim))
