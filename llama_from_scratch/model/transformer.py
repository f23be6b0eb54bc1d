"""The LLaMA 2 decoder: token embedding, n_layers pre-norm blocks, final norm, output.

    h = x + attention(attention_norm(x))
    out = h + feed_forward(ffn_norm(h))

Parameter names follow Meta's llama/model.py, so a Meta (or llama2.c) state dict loads
as is: tok_embeddings, layers.N.attention.wq/wk/wv/wo, layers.N.feed_forward.w1/w2/w3,
layers.N.attention_norm, layers.N.ffn_norm, norm, output.

RoPE's cos/sin tables are non-persistent float32 buffers: `.to()`, `.cuda()`, `to_empty()`
move them (recomputed, never cast), they are not in `state_dict()`, and `forward` changes no
state. `Transformer(args)` starts from `init_weights` (ready to train); `hidden_states` is the
body without the output matrix, for the scalar heads of a reward model or a PPO value head.

Chapter: decoder (also shown in: rmsnorm_embeddings).
"""

from __future__ import annotations

import math
from collections.abc import Callable

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
        # x, h and the result: (batch, seq, dim)
        h = x + self.attention(self.attention_norm(x), cos, sin, start_pos, cache)
        return h + self.feed_forward(self.ffn_norm(h))


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
        self.reset_rope_tables()  # on the default device: meta under `empty_model`
        self.init_weights()

    def reset_rope_tables(self, device: torch.device | str | None = None) -> None:
        """(Re)compute RoPE's cos/sin tables, `(max_seq_len, head_dim/2)` float32 each, on `device`
        (default: the current default device), as non-persistent buffers: not in `state_dict()`."""
        cos, sin = precompute_freqs(self.args.head_dim, self.args.max_seq_len, self.args.rope_theta,
                                    device=device)
        self.register_buffer("freqs_cos", cos, persistent=False)
        self.register_buffer("freqs_sin", sin, persistent=False)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Transformer:
        # Every .to() / .cuda() / .half() / to_empty() ends here, and the parent casts floating
        # buffers with the parameters: after `.to(torch.bfloat16)` cos/sin would keep 8 bits of
        # mantissa (Meta and Hugging Face keep the tables in float32), and `to_empty` would leave
        # garbage in them. So the tables are recomputed in float32 on their new device instead.
        super()._apply(fn, recurse)
        self.reset_rope_tables(self.freqs_cos.device)
        return self

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """Initialise for training from scratch (`__init__` calls it; call again to re-draw).

        Every Linear and Embedding weight ~ N(0, 0.02); the residual projections, the matrices
        that write into the residual stream (`attention.wo` and `feed_forward.w2`), ~ N(0,
        0.02 / sqrt(2 * n_layers)): each layer adds two outputs to the stream, so its variance
        would otherwise grow with depth; RMSNorm weights = 1. A tied output matrix is the
        embedding and is drawn once. Sources: GPT-2 (Radford et al. 2019, section 2.3: residual
        layers scaled by 1/sqrt(N)) as nanoGPT's model.py writes it (`_init_weights`, then the
        scaled std for every `c_proj.weight`: attention's and the MLP's output projections), and
        llama2.c's model.py. Meta did not publish LLaMA 2's initialisation.

        llama2.c's code scales `w3` and `wo`, not `w2`. With Meta's names, w3 is the up projection
        inside the SwiGLU, and w2 (down) is the one that writes into the residual stream; we
        scale `w2`, as the GPT-2 rule says, so our init is not llama2.c's for w2 and w3.

        `generator` makes the draw reproducible; the numbers are drawn on the generator's device
        and copied, so one seed gives the same weights on any device. Parameters on the meta
        device are skipped (shapes only: nothing to draw), so `empty_model` stays free.
        """
        std = 0.02
        residual_std = std / math.sqrt(2 * self.args.n_layers)
        seen = set()  # a tied output.weight is the embedding: drawn once
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)) and id(module.weight) not in seen:
                seen.add(id(module.weight))
                residual = name.endswith(("attention.wo", "feed_forward.w2"))
                _normal_(module.weight, residual_std if residual else std, generator)
            elif isinstance(module, RMSNorm):
                module.weight.fill_(1.0)

    def embed(self, tokens: torch.Tensor, start_pos: int = 0) -> torch.Tensor:
        """`(batch, seq)` ids -> `(batch, seq, dim)` vectors. Only the token: LLaMA adds no position
        here (RoPE rotates q and k inside attention); a GPT-2-style model adds learned positions."""
        return self.tok_embeddings(tokens)

    def hidden_states(self, tokens: torch.Tensor, start_pos: int = 0,
                      cache: list[KVCache] | None = None, last_only: bool = False) -> torch.Tensor:
        """The body: token ids `(batch, seq)` -> final-normed hidden states `(batch, seq, dim)`,
        in the model's dtype, before the output matrix (`forward` applies it). A reward model's
        or a PPO value head's scalar head sits on these. Arguments as in `forward`; with
        `last_only=True` the result is `(batch, 1, dim)`.
        """
        b, seq = tokens.shape
        if start_pos + seq > self.args.max_seq_len:
            raise ValueError(f"positions up to {start_pos + seq} exceed the context length "
                             f"max_seq_len={self.args.max_seq_len}")
        h = self.embed(tokens, start_pos)  # (b, seq, dim)
        cos = self.freqs_cos[start_pos:start_pos + seq]  # (seq, head_dim/2)
        sin = self.freqs_sin[start_pos:start_pos + seq]  # (seq, head_dim/2)
        for i, layer in enumerate(self.layers):
            h = layer(h, cos, sin, start_pos, None if cache is None else cache[i])  # (b, seq, dim)
        if last_only:
            h = h[:, -1:]  # (b, 1, dim)
        return self.norm(h)  # (b, seq, dim)

    def forward(self, tokens: torch.Tensor, start_pos: int = 0,
                cache: list[KVCache] | None = None, last_only: bool = False) -> torch.Tensor:
        """tokens hold positions start_pos ..; `cache` (see `new_cache`) keeps earlier ones.

        `last_only=True` returns only the last position's logits `(b, 1, vocab_size)`: all that
        generation needs, and it skips the large output matmul for every other position.
        """
        h = self.hidden_states(tokens, start_pos, cache, last_only)  # (b, seq, dim)
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


def _normal_(weight: torch.Tensor, std: float, generator: torch.Generator | None) -> None:
    """weight ~ N(0, std) in place; drawn on the generator's device when it has one."""
    if weight.is_meta:
        return
    if generator is None or generator.device == weight.device:
        weight.normal_(0.0, std, generator=generator)
    else:  # a CPU generator for a GPU model: draw where the generator lives, then copy
        draw = torch.empty(weight.shape, dtype=weight.dtype, device=generator.device)
        weight.copy_(draw.normal_(0.0, std, generator=generator))
