"""The model's hyper-parameters, with presets that match Meta's `params.json`.

`ModelArgs` mirrors Meta's dataclass in llama/model.py (same field names), plus two
fields Meta does not need: `hidden_dim`, an explicit feed-forward size that overrides
the hidden-size rule (llama2.c checkpoints store it), and `tie_embeddings`, for models
whose output matrix is the token embedding (llama2.c's small models).

Chapter: decoder.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from llama_from_scratch.model.feedforward import llama_hidden_dim


@dataclass(frozen=True)
class ModelArgs:
    dim: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: int | None = None  # None: same as n_heads (multi-head attention)
    vocab_size: int = 32000
    multiple_of: int = 256  # feed-forward hidden size is rounded up to a multiple of this
    ffn_dim_multiplier: float | None = None
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_seq_len: int = 4096  # LLaMA 2's context length
    hidden_dim: int | None = None  # explicit feed-forward size; None: Meta's rule
    tie_embeddings: bool = False  # output.weight is tok_embeddings.weight

    def __post_init__(self) -> None:
        for name in ("dim", "n_layers", "n_heads", "vocab_size", "multiple_of", "max_seq_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.dim % self.n_heads != 0:
            raise ValueError(
                f"dim={self.dim} is not divisible by n_heads={self.n_heads}: every head gets "
                f"dim / n_heads dimensions; choose n_heads that divides {self.dim}")
        if (self.dim // self.n_heads) % 2 != 0:
            raise ValueError(
                f"head_dim = dim / n_heads = {self.dim // self.n_heads} is odd: RoPE rotates pairs "
                "of dimensions, so it must be even")
        if self.kv_heads < 1 or self.n_heads % self.kv_heads != 0:
            raise ValueError(
                f"n_heads={self.n_heads} is not divisible by n_kv_heads={self.n_kv_heads}: "
                "in grouped-query attention each key/value head serves n_heads / n_kv_heads "
                "query heads; choose n_kv_heads that divides n_heads")
        if self.hidden_dim is not None and self.hidden_dim < 1:
            raise ValueError(f"hidden_dim must be positive or None, got {self.hidden_dim}")

    @property
    def kv_heads(self) -> int:
        """Number of key/value heads (n_kv_heads, defaulting to n_heads)."""
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def ffn_hidden_dim(self) -> int:
        """The feed-forward hidden size: `hidden_dim` if given, else Meta's rule."""
        if self.hidden_dim is not None:
            return self.hidden_dim
        return llama_hidden_dim(self.dim, self.multiple_of, self.ffn_dim_multiplier)


# Meta's params.json for LLaMA 2 (vocab_size is -1 there: it comes from the tokenizer, 32,000).
PRESETS: dict[str, ModelArgs] = {
    "7B": ModelArgs(dim=4096, n_layers=32, n_heads=32, multiple_of=256, norm_eps=1e-5),
    "13B": ModelArgs(dim=5120, n_layers=40, n_heads=40, multiple_of=256, norm_eps=1e-5),
    "70B": ModelArgs(dim=8192, n_layers=80, n_heads=64, n_kv_heads=8, multiple_of=4096,
                     ffn_dim_multiplier=1.3, norm_eps=1e-5),
    # Tiny models for tests and notebooks: seconds on a CPU.
    "tiny": ModelArgs(dim=64, n_layers=2, n_heads=8, n_kv_heads=4, vocab_size=512, multiple_of=32,
                      max_seq_len=128),
    "tiny-mha": ModelArgs(dim=64, n_layers=2, n_heads=4, vocab_size=512, multiple_of=32, max_seq_len=128),
    # The shape of llama2.c's stories260K (its weights: llama_from_scratch.checkpoints.llama2c).
    "stories260K": ModelArgs(dim=64, n_layers=5, n_heads=8, n_kv_heads=4, vocab_size=512,
                             hidden_dim=172, max_seq_len=512, tie_embeddings=True),
}


def preset(name: str, **overrides) -> ModelArgs:
    """A preset by name, optionally with fields replaced: `preset("tiny", n_layers=4)`."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)
