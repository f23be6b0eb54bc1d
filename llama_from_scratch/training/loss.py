"""Cross-entropy from logits, written out: the loss that pretraining minimises.

For one position with logits `z` (one per vocabulary entry) and target token `t`,

    loss = -log softmax(z)[t] = logsumexp(z) - z[t],   logsumexp(z) = m + log(sum(exp(z - m)))

with `m = max(z)`. Shifting by the maximum changes nothing mathematically but keeps every
`exp` in (0, 1], so logits of 1e4 or 1e6 stay finite; the naive `log(softmax(z)[t])` computes
`exp(1e4) = inf` and returns nan. The mean runs over the positions whose target is not
`ignore_index` (instruction tuning masks the prompt's tokens that way).

Computed in float32 whatever the logits' dtype: bfloat16 has 8 bits of mantissa, too few for
a sum over 32,000 exponentials. Not handled: soft (probability) targets, label smoothing,
class weights, and reductions other than the mean. Memory: two `(positions, vocab)`
float32 temporaries, where PyTorch's fused kernel needs one; fine at this book's scale.

Chapter: pretraining.
"""

from __future__ import annotations

import torch


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                  ignore_index: int = -100) -> torch.Tensor:
    """Mean negative log-likelihood, in nats, of `targets` under `logits`; a float32 scalar.

    logits: `(..., vocab)` of any float dtype, e.g. `(batch, seq, vocab)`; targets: `(...)`
    integer token ids in `[0, vocab)`, e.g. `(batch, seq)`, or `ignore_index` for positions
    left out of the mean. Equal to `torch.nn.functional.cross_entropy` on the float32 logits.
    ValueError when the shapes disagree, a target is out of range, or every target is
    ignored (PyTorch returns nan there, which a training loop would only report as a
    non-finite loss).
    """
    if not logits.is_floating_point():
        raise ValueError(f"logits must be floating point, got {logits.dtype}")
    if logits.dim() < 1 or targets.shape != logits.shape[:-1]:
        raise ValueError(f"targets {tuple(targets.shape)} must have the logits' shape without "
                         f"the vocabulary dimension: logits {tuple(logits.shape)} need "
                         f"targets {tuple(logits.shape[:-1])}")
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise ValueError(f"targets must be integer token ids (int64), got {targets.dtype}; "
                         "soft (probability) targets are not handled")
    vocab = logits.shape[-1]
    z = logits.float().reshape(-1, vocab)  # (positions, vocab)
    t = targets.reshape(-1).long()  # (positions,)
    keep = t != ignore_index  # (positions,)
    n_kept = int(keep.sum())
    if n_kept == 0:
        raise ValueError(f"every one of the {t.numel()} targets is ignore_index "
                         f"({ignore_index}): there is nothing to average; skip this batch or "
                         "leave some targets unmasked")
    kept_targets = t[keep]
    if int(kept_targets.min()) < 0 or int(kept_targets.max()) >= vocab:
        raise ValueError(f"target ids must lie in [0, {vocab}) (the vocabulary) or be "
                         f"ignore_index ({ignore_index}); got ids from "
                         f"{int(kept_targets.min())} to {int(kept_targets.max())}")
    # The shift's gradient cancels exactly (logsumexp does not depend on m): m is a constant.
    m = z.max(dim=-1, keepdim=True).values.detach()  # (positions, 1)
    lse = m.squeeze(-1) + torch.exp(z - m).sum(dim=-1).log()  # (positions,)
    # (positions,): ignored ids gathered as 0, then dropped
    safe = torch.where(keep, t, torch.zeros_like(t))
    target_logit = z.gather(-1, safe.unsqueeze(-1)).squeeze(-1)  # (positions,)
    return (lse - target_logit)[keep].sum() / n_kept
