"""Batches of token windows: random ones for training, fixed ones for evaluation.

A window of `seq_len + 1` consecutive tokens gives the inputs `x` (its first `seq_len`) and the
targets `y` (its last `seq_len`: every input's next token). Both are int64 `(batch, seq_len)`.

Training (`BatchSampler`): window starts drawn uniformly from 0..len(tokens) - seq_len - 1 with
`torch.randint` from the sampler's own CPU generator, seeded once: the batches depend on the seed
alone, not on anything else that draws random numbers. Its state (the generator's state and the
batch count) is saved and restored with a checkpoint, so a resumed run sees the very batches the
uninterrupted one would have. Only the windows are read from the (memory-mapped) tokens.

Evaluation (`eval_windows`): consecutive, non-overlapping windows from the start of the split,
the same on every call, so a checkpoint's validation loss is one fixed number.

Chapter: pretraining.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch


class CorpusTooShortError(ValueError):
    """A split shorter than one context window (`seq_len + 1` tokens)."""


def check_split(n_tokens: int, seq_len: int, split: str = "the split") -> None:
    """Raise CorpusTooShortError unless `n_tokens` hold one window of `seq_len` + 1 tokens."""
    if seq_len < 1:
        raise ValueError(f"the context length (seq_len) must be at least 1, got {seq_len}")
    if n_tokens < seq_len + 1:
        fix = f"at most {n_tokens - 1} (--seq-len)" if n_tokens > 1 else "a longer text"
        raise CorpusTooShortError(
            f"{split} has {n_tokens} tokens, but one context window of {seq_len} tokens needs {seq_len + 1} "
            f"(the inputs and each one's next token). Use a longer text, or a context length of {fix}")


def _windows(tokens: Any, starts: np.ndarray, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) for windows starting at `starts`: fancy indexing reads just those rows."""
    rows = np.asarray(tokens[starts[:, None] + np.arange(seq_len + 1)], dtype=np.int64)
    windows = torch.from_numpy(rows)
    return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()


class BatchSampler:
    """Random windows of `tokens` (a 1-D array of ids, e.g. a TokenFile's `.train`).

    `next()` -> (x, y), each int64 `(batch_size, seq_len)`. Raises CorpusTooShortError when the
    split is shorter than `seq_len + 1` tokens (`split` names it in the message).
    """

    def __init__(self, tokens: Sequence[int] | np.ndarray, seq_len: int, batch_size: int, seed: int,
                 split: str = "the training split"):
        check_split(len(tokens), seq_len, split)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.tokens = np.asarray(tokens)  # a view of a memmap or array, not a copy
        self.seq_len, self.batch_size = seq_len, batch_size
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(seed)
        self.batches = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch of random windows."""
        # exclusive: the last start leaves room for y's last token
        high = len(self.tokens) - self.seq_len
        starts = torch.randint(0, high, (self.batch_size,), generator=self.generator).numpy()
        self.batches += 1
        return _windows(self.tokens, starts, self.seq_len)

    def state_dict(self) -> dict[str, Any]:
        """{"generator": its state (a uint8 tensor), "batches": batches drawn}; loads with
        `torch.load(weights_only=True)`."""
        return {"generator": self.generator.get_state(), "batches": self.batches}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue exactly where the sampler that wrote `state` was."""
        if not isinstance(state, dict) or set(state) != {"generator", "batches"}:
            raise ValueError("a BatchSampler state is a dict with the keys 'generator' and 'batches', got "
                             f"{sorted(state) if isinstance(state, dict) else type(state).__name__}")
        self.generator.set_state(state["generator"])
        self.batches = int(state["batches"])


def batches_that_fit(n_tokens: int, seq_len: int, batch_size: int) -> int:
    """How many batches `eval_windows` can give: full batches of windows, or one smaller batch."""
    return max((n_tokens - 1) // seq_len // batch_size, 1)


def eval_windows(tokens: Sequence[int] | np.ndarray, seq_len: int, batch_size: int, n_batches: int | None = None,
                 split: str = "the validation split") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches (x, y) of consecutive non-overlapping windows from the start of `tokens`.

    Window k starts at token k * seq_len. `n_batches=None`: every full batch that fits; when not
    even one full batch fits, one batch of the windows there are. Asking for more batches than
    fit is a ValueError (checked now, not when iterating), as is a split under one window.
    """
    check_split(len(tokens), seq_len, split)
    tokens = np.asarray(tokens)
    n_windows = (len(tokens) - 1) // seq_len
    fit = batches_that_fit(len(tokens), seq_len, batch_size)
    if n_batches is None:
        n_batches = fit
    elif not 1 <= n_batches <= fit:
        raise ValueError(f"{split} holds {n_windows} windows of {seq_len} tokens, {fit} batch(es) of "
                         f"{min(batch_size, n_windows)}; asked for {n_batches}. Ask for 1 to {fit} batches")
    size = min(batch_size, n_windows)

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for b in range(n_batches):
            yield _windows(tokens, (b * size + np.arange(size)) * seq_len, seq_len)

    return batches()
