"""The reward model: the policy's body with a scalar head on the last token, and its ranking loss.

    prompt + answer ids  (batch, seq)  -> Transformer.hidden_states (chapter 6's body, final norm
                                          included, no output matrix)       (batch, seq, dim)
                                       -> the LAST REAL token's vector       (batch, dim)
                                       -> head = nn.Linear(dim, 1)           (batch,) rewards

LLaMA 2 (Touvron et al. 2023, section 3.2.2) starts the reward model from a chat model
checkpoint "so that both models benefit from knowledge acquired in pretraining", and replaces
the next-token classification head with a regression head for a scalar. Here the body starts as a
copy of the SFT policy's weights (its unused output matrix stays in the state dict so that a
Transformer state dict loads as it is); the head starts small (N(0, 0.02), bias 0), so the
first rewards are near 0 and the first updates are not dominated by a random head.

Sequences are right-padded (`pad`): under the causal mask no real position reads the padding
after it, so reading position `length - 1` gives exactly the reward of the unpadded sequence
(up to float rounding). A sequence is cut to the context (`max_seq_len`) if it is longer.

The loss is the binary ranking loss of the paper's equations 1 and 2:

    L = -log sigmoid(r_chosen - r_rejected - m(strength))

with m = 0 (Bradley-Terry, `margin="none"`) or the margins of the paper's Table 27, which grow
with the labeler's strength: the model is pushed to separate clearly different answers further.

Not handled: two heads (LLaMA 2's separate helpfulness and safety reward models).

Chapter: reward_model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from llama_from_scratch.alignment.errors import AlignmentError
from llama_from_scratch.alignment.instructions import prompt_ids
from llama_from_scratch.alignment.labeler import STRENGTHS
from llama_from_scratch.model.transformer import Transformer
from llama_from_scratch.tokenizer.base import Tokenizer

# LLaMA 2, Table 27: the margin m(r) for each preference rating, strongest first (as STRENGTHS).
MARGINS = {"none": (0.0, 0.0, 0.0, 0.0), "small": (1.0, 2 / 3, 1 / 3, 0.0), "large": (3.0, 2.0, 1.0, 0.0)}
HEAD_STD = 0.02


def scalar_head(body: Transformer, generator: torch.Generator | None = None) -> nn.Linear:
    """`nn.Linear(dim, 1)` on the body's device and dtype, weights N(0, HEAD_STD), bias 0: the reward
    model's head, and PPO's value head (ppo_train.ActorCritic)."""
    weight = body.tok_embeddings.weight
    head = nn.Linear(body.args.dim, 1, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        draw = torch.empty(head.weight.shape, dtype=weight.dtype).normal_(0.0, HEAD_STD, generator=generator)
        head.weight.copy_(draw)
        head.bias.zero_()
    return head


class RewardModel(nn.Module):
    """Token ids `(batch, seq)` and real lengths `(batch,)` -> rewards `(batch,)`, float32."""

    def __init__(self, body: Transformer, generator: torch.Generator | None = None):
        super().__init__()
        self.body = body
        self.head = scalar_head(body, generator)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if tokens.dim() != 2 or lengths.shape != tokens.shape[:1]:
            raise ValueError("need tokens (batch, seq) and lengths (batch,), got "
                             f"{tuple(tokens.shape)} and {tuple(lengths.shape)}")
        if bool((lengths < 1).any()) or bool((lengths > tokens.shape[1]).any()):
            raise ValueError(f"every length must be between 1 and seq={tokens.shape[1]}, got "
                             f"{lengths.tolist()}")
        h = self.body.hidden_states(tokens)  # (batch, seq, dim)
        rows = torch.arange(tokens.shape[0], device=h.device)
        last = h[rows, lengths.to(h.device) - 1]  # (batch, dim)
        return self.head(last).squeeze(-1).float()  # (batch,)


def reward_ids(tokenizer: Tokenizer, topic: str, answer: str, max_len: int) -> list[int]:
    """What the reward model reads: the prompt (as `align sample` feeds it, BOS first), then the
    answer's ids, cut to `max_len` tokens. No EOS is added: the answer's own last token ends it."""
    return (prompt_ids(tokenizer, topic) + tokenizer.encode(answer))[:max_len]


def pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """int64 tokens `(batch, longest)`, right-padded with `pad_id`, and the lengths `(batch,)`."""
    if not sequences or any(len(s) == 0 for s in sequences):
        raise ValueError("pad needs at least one sequence, none of them empty")
    longest = max(len(s) for s in sequences)
    tokens = torch.full((len(sequences), longest), pad_id, dtype=torch.long)  # (batch, longest)
    for row, s in enumerate(sequences):
        tokens[row, :len(s)] = torch.tensor(s, dtype=torch.long)
    return tokens, torch.tensor([len(s) for s in sequences], dtype=torch.long)


def margins(strengths: Sequence[str], margin: str) -> torch.Tensor:
    """m(strength) for each pair `(pairs,)` float32, from Table 27's `margin` ("none", "small", "large").

    AlignmentError for an unknown margin or strength."""
    if margin not in MARGINS:
        raise AlignmentError(f"unknown margin {margin!r}: use one of {', '.join(MARGINS)}")
    table = dict(zip(STRENGTHS, MARGINS[margin]))
    unknown = sorted({s for s in strengths if s not in table})
    if unknown:
        raise AlignmentError(f"unknown preference strength(s) {unknown}: the labeler's are {list(STRENGTHS)}")
    return torch.tensor([table[s] for s in strengths], dtype=torch.float32)


def ranking_loss(chosen: torch.Tensor, rejected: torch.Tensor,
                 margin: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over pairs of -log sigmoid(r_chosen - r_rejected - m): a float32 scalar.

    chosen, rejected and margin: `(pairs,)`; margin None is Bradley-Terry (m = 0). logsigmoid
    keeps it finite for large differences, where log(sigmoid(x)) would give log(0) = -inf.
    """
    if (chosen.shape != rejected.shape or chosen.dim() != 1
            or (margin is not None and margin.shape != chosen.shape)):
        raise ValueError("need chosen, rejected (and margin) of one shape (pairs,), got "
                         f"{tuple(chosen.shape)}, {tuple(rejected.shape)}"
                         + ("" if margin is None else f", {tuple(margin.shape)}"))
    diff = chosen.float() - rejected.float()  # (pairs,)
    if margin is not None:
        diff = diff - margin.to(diff.device)
    return -F.logsigmoid(diff).mean()
