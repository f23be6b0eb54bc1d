"""The LLaMA 2 decoder: token embedding, n_layers pre-norm blocks, final norm, output.

    h = x + attention(attention_norm(x))
    out = h + feed_forward(ffn_norm(h))

Parameter names follow Meta's llama/model.py, so a Meta (or llama2.c) state dict loads
as is: tok_embeddings, layers.N.attention.wq/wk/wv/wo, layers.N.feed_forward.w1/w2/w3,
layers.N.attention_norm, layers.N.ffn_norm, norm, output.

Chapter: decoder (also shown in: rmsnorm_embeddings).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from llama_from_scratch.model.attention import Attention, KVCache
from llama_from_scratch.model.config import ModelArgs
from llama_from_scratch.model.feedforward import FeedForward
from llama_from_scratch.model.rmsnorm import RMSNorm
from llama_from_scratch.model.rope import precompute_freqs


class TransformerBlock(nn.Module):
    """One pre-norm decoder layer: `(batch, seq, dim) -> (batch, seq, dim)`."""

    def __init__(self, layer_id: int, args: ModelArgs):
        super().__init__()
        self.layer_id = layer_id
        self.attention = Attention(args)
        self.feed_forward = FeedForward(args.dim, args.ffn_hidden_dim)
        self.attention_norm = RMSNorm(args.dim, eps=args.norm_eps)
        self.ffn_norm = RMSNorm(args.dim, eps=args.norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                start_pos: int = 0, cache: KVCache | None = None) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), cos, sin, start_pos, cache)  # (b, seq, dim)
        return h + self.feed_forward(self.ffn_norm(h))  # (b, seq, dim)


class Transformer(nn.Module):
    """Token ids `(batch, seq)` -> next-token logits `(batch, seq, vocab_size)`, float32."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(TransformerBlock(i, args) for i in range(args.n_layers))
        self.norm = RMSNorm(args.dim, eps=args.norm_eps)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False)
        if args.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight  # one matrix, used twice
        # Like Meta's freqs_cis: plain float32 tensors, neither parameters nor buffers, so they are
        # not saved and `model.to(torch.bfloat16)` does not round the angles. Always real (CPU)
        # tensors, even when the model is built on the meta device; moved to the input's device on use.
        self.freqs_cos, self.freqs_sin = precompute_freqs(
            args.head_dim, args.max_seq_len, args.rope_theta, device="cpu")  # (max_seq_len, head_dim/2) each

    def forward(self, tokens: torch.Tensor, start_pos: int = 0,
                cache: list[KVCache] | None = None, last_only: bool = False) -> torch.Tensor:
        """tokens hold positions start_pos ..; with `cache` (from `new_cache`) earlier ones are remembered.

        `last_only=True` returns only the last position's logits `(b, 1, vocab_size)`: all that
        generation needs, and it skips the large output matmul for every other position.
        """
        b, seq = tokens.shape
        if start_pos + seq > self.args.max_seq_len:
            raise ValueError(f"positions up to {start_pos + seq} exceed the context length "
                             f"max_seq_len={self.args.max_seq_len}")
        h = self.tok_embeddings(tokens)  # (b, seq, dim)
        if self.freqs_cos.device != h.device:
            self.freqs_cos, self.freqs_sin = self.freqs_cos.to(h.device), self.freqs_sin.to(h.device)
        cos = self.freqs_cos[start_pos:start_pos + seq]  # (seq, head_dim/2)
        sin = self.freqs_sin[start_pos:start_pos + seq]  # (seq, head_dim/2)
        for i, layer in enumerate(self.layers):
            h = layer(h, cos, sin, start_pos, None if cache is None else cache[i])  # (b, seq, dim)
        if last_only:
            h = h[:, -1:]  # (b, 1, dim)
        h = self.norm(h)  # (b, seq, dim)
        return self.output(h).float()  # (b, seq, vocab_size)

    def new_cache(self, batch: int, max_seq_len: int | None = None) -> list[KVCache]:
        """An empty KV cache per layer, on this model's device and dtype."""
        w = self.tok_embeddings.weight
        return [KVCache(batch, max_seq_len or self.args.max_seq_len, self.args.kv_heads,
                        self.args.head_dim, dtype=w.dtype, device=w.device) for _ in self.layers]

    def set_attention_path(self, use_sdpa: bool) -> None:
        """Switch every layer between the fused (True) and the explicit-math (False) attention."""
        for layer in self.layers:
            layer.attention.use_sdpa = use_sdpa
