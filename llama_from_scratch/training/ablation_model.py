"""A decoder with switches, for ablations: LLaMA's block, a GPT-2-style block, and each change alone.

`AblationArgs` is `ModelArgs` plus four switches:

* `norm`: "rms" (RMSNorm, LLaMA) or "layer" (LayerNorm, GPT-2);
* `positions`: "rope" (rotary, LLaMA) or "learned" (a learned absolute position embedding added
  to the token embedding, GPT-2); with "learned" the RoPE tables are the identity rotation
  (cos = 1, sin = 0), which rotates nothing, so positions enter only through the embedding;
* `mlp`: "swiglu" (three matrices, LLaMA) or "gelu" (two matrices with GPT-2's tanh-approximated
  GELU, transformers' "gelu_new"); the GELU hidden size defaults to GPT-2's 4 * dim, and
  `ablation_params.match_parameters` picks one that gives a variant the parameters of another;
* `bias`: biases on every Linear (not the output matrix: GPT-2's lm_head has none) and on every
  norm (LayerNorm's own bias; RMSNorm gets an added one), GPT-2 style.

With the LLaMA switches the parameter names and the math are `model.transformer.Transformer`'s
(tests: a Transformer state dict loads as is and gives the same logits, and the same seed draws
the same initial weights); with the GPT-2 switches and tied embeddings it computes what
transformers' `GPT2LMHeadModel` does (tested on identical weights). Built from the package's
own `Attention`, `FeedForward`, `RMSNorm` and `precompute_freqs`. Not handled: dropout (LLaMA
pretrains without), GPT-2's fused c_attn layout (the test maps it), positions past max_seq_len.

Chapter: pretraining.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from llama_from_scratch.model.attention import Attention, KVCache
from llama_from_scratch.model.config import ModelArgs
from llama_from_scratch.model.feedforward import FeedForward
from llama_from_scratch.model.rmsnorm import RMSNorm
from llama_from_scratch.model.rope import precompute_freqs
from llama_from_scratch.model.transformer import Transformer

# The two ends of the ablation: every switch LLaMA's, or every switch GPT-2's.
BLOCKS: dict[str, dict[str, object]] = {
    "llama": {"norm": "rms", "positions": "rope", "mlp": "swiglu", "bias": False},
    "gpt2": {"norm": "layer", "positions": "learned", "mlp": "gelu", "bias": True},
}
CHOICES = {"norm": ("rms", "layer"), "positions": ("rope", "learned"), "mlp": ("swiglu", "gelu")}


@dataclass(frozen=True)
class AblationArgs(ModelArgs):
    norm: str = "rms"
    positions: str = "rope"
    mlp: str = "swiglu"
    bias: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} is not a choice; use one of {allowed}")

    @property
    def ffn_hidden_dim(self) -> int:
        """`hidden_dim` if given; else Meta's rule for SwiGLU and GPT-2's 4 * dim for GELU."""
        if self.mlp == "gelu" and self.hidden_dim is None:
            return 4 * self.dim
        return super().ffn_hidden_dim

    @property
    def ffn_matrices(self) -> int:
        """Matrices in the MLP: 3 for SwiGLU (gate, up, down), 2 for GELU (up, down)."""
        return 3 if self.mlp == "swiglu" else 2


def ablation_args(base: ModelArgs, block: str = "llama", **switches) -> AblationArgs:
    """`base`'s shape with a block's switches, then any single switch (or field) overridden:
    `ablation_args(preset("tiny"), "llama", norm="layer")` is LLaMA's block with LayerNorm."""
    if block not in BLOCKS:
        raise ValueError(f"unknown block {block!r}; choose one of {', '.join(BLOCKS)}")
    fields = {k: v for k, v in asdict(base).items() if k not in BLOCKS[block]}
    return AblationArgs(**{**fields, **BLOCKS[block], **switches})


class BiasedRMSNorm(RMSNorm):
    """RMSNorm plus a learned bias, for the `bias` switch with `norm="rms"`: `(..., dim)`."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__(dim, eps)
        self.bias = nn.Parameter(torch.zeros(dim))  # (dim,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + self.bias


class GeluMLP(nn.Module):
    """GPT-2's MLP: `w2(gelu_tanh(w1 x))`, `(..., dim) -> (..., dim)`. w1/w2 named as in FeedForward
    (up / down), so the init's residual scaling finds `feed_forward.w2` in both."""

    def __init__(self, dim: int, hidden_dim: int, bias: bool):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=bias)  # up (GPT-2: c_fc)
        self.w2 = nn.Linear(hidden_dim, dim, bias=bias)  # down (GPT-2: c_proj)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.gelu(self.w1(x), approximate="tanh"))  # (..., dim)


def make_norm(args: AblationArgs) -> nn.Module:
    if args.norm == "layer":
        return nn.LayerNorm(args.dim, eps=args.norm_eps, bias=args.bias)
    return BiasedRMSNorm(args.dim, args.norm_eps) if args.bias else RMSNorm(args.dim, args.norm_eps)


def _add_biases(module: nn.Module, names: tuple[str, ...]) -> None:
    """Swap the bias-free Linears that `Attention` / `FeedForward` build for ones with a bias."""
    for name in names:
        old = getattr(module, name)
        setattr(module, name, nn.Linear(old.in_features, old.out_features, bias=True))


class AblationBlock(nn.Module):
    """One pre-norm layer (GPT-2 is pre-norm too): `(batch, seq, dim) -> (batch, seq, dim)`."""

    def __init__(self, layer_id: int, args: AblationArgs):
        super().__init__()
        self.layer_id = layer_id
        self.attention = Attention(args)  # registration order = TransformerBlock's (same init draws)
        if args.bias:
            _add_biases(self.attention, ("wq", "wk", "wv", "wo"))
        if args.mlp == "swiglu":
            self.feed_forward = FeedForward(args.dim, args.ffn_hidden_dim)
            if args.bias:
                _add_biases(self.feed_forward, ("w1", "w2", "w3"))
        else:
            self.feed_forward = GeluMLP(args.dim, args.ffn_hidden_dim, args.bias)
        self.attention_norm = make_norm(args)
        self.ffn_norm = make_norm(args)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                start_pos: int = 0, cache: KVCache | None = None) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), cos, sin, start_pos, cache)  # (b, seq, dim)
        return h + self.feed_forward(self.ffn_norm(h))  # (b, seq, dim)


class AblationModel(Transformer):
    """Token ids `(batch, seq)` -> next-token logits `(batch, seq, vocab_size)`, float32; the same
    interface as `Transformer` (start_pos, KV cache, last_only, hidden_states, new_cache)."""

    def __init__(self, args: AblationArgs):
        # Transformer's methods are inherited (forward, new_cache, set_attention_path, and `_apply`
        # keeping the RoPE tables float32); its __init__ is not, since the parts differ.
        nn.Module.__init__(self)
        self.args = args
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        learned = args.positions == "learned"
        self.pos_embeddings = nn.Embedding(args.max_seq_len, args.dim) if learned else None
        self.layers = nn.ModuleList(AblationBlock(i, args) for i in range(args.n_layers))
        self.norm = make_norm(args)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False)
        if args.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        self.reset_rope_tables()
        self.init_weights()

    def reset_rope_tables(self, device: torch.device | str | None = None) -> None:
        """cos/sin `(max_seq_len, head_dim/2)` float32, non-persistent; identity for learned positions."""
        a = self.args
        cos, sin = precompute_freqs(a.head_dim, a.max_seq_len, a.rope_theta, device=device)
        if a.positions == "learned":  # angle 0 everywhere: RoPE rotates nothing
            cos, sin = torch.ones_like(cos), torch.zeros_like(sin)
        self.register_buffer("freqs_cos", cos, persistent=False)
        self.register_buffer("freqs_sin", sin, persistent=False)

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """`Transformer.init_weights`'s scheme and draws (the position embedding, a Linear or
        Embedding weight too, ~ N(0, 0.02)), then GPT-2's rest: LayerNorm weights 1, every bias 0.
        Same module order, so the LLaMA switches and one generator give the Transformer's weights."""
        super().init_weights(generator)
        for module in self.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight.fill_(1.0)
            if getattr(module, "bias", None) is not None:  # nn.Linear(bias=False) has bias None
                module.bias.zero_()

    def embed(self, tokens: torch.Tensor, start_pos: int = 0) -> torch.Tensor:
        """Token embeddings `(batch, seq, dim)`, plus GPT-2's learned positions when switched on."""
        h = self.tok_embeddings(tokens)  # (b, seq, dim)
        if self.pos_embeddings is None:
            return h
        positions = torch.arange(start_pos, start_pos + tokens.shape[1], device=tokens.device)  # (seq,)
        return h + self.pos_embeddings(positions)  # (b, seq, dim): GPT-2's wte + wpe
