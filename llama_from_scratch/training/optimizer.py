"""AdamW, written out, and which parameters get weight decay (LLaMA 2's optimizer settings).

For each parameter `p` with gradient `g`, at step `t = 1, 2, ...`:

    p <- p * (1 - lr * wd)                 decoupled weight decay: not part of the gradient
    m <- beta1 * m + (1 - beta1) * g       first moment (a running mean of g)
    v <- beta2 * v + (1 - beta2) * g * g   second moment (a running mean of g squared)
    p <- p - lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)

The bias corrections `1 - beta^t` undo the pull toward the zero that m and v start at. The
operations and their order are those of `torch.optim.AdamW`'s single-tensor code (its
default on CPU), so every step equals PyTorch's bit for bit, which tests/test_training_ops.py
checks over 100 steps. LLaMA 2 (Touvron et al., 2023, section 2.2): beta1 0.9, beta2 0.95,
eps 1e-5, weight decay 0.1; those are the defaults here. Not handled: amsgrad, maximize,
sparse or complex gradients, fused or multi-tensor (foreach) kernels.

Chapter: pretraining.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import nn


class AdamW(torch.optim.Optimizer):
    """Adam with decoupled weight decay; per-group `lr` and `weight_decay` (a schedule sets
    `lr`).

    State per parameter: `step` (an int), `exp_avg` (m) and `exp_avg_sq` (v), each shaped
    like the parameter. `state_dict()` / `load_state_dict()` come from torch's base class,
    so a resumed run continues exactly. Parameters whose `.grad` is None are skipped (their
    step count does not advance), as in PyTorch.
    """

    def __init__(self, params: Iterable[Any], lr: float = 3e-4,
                 betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-5,
                 weight_decay: float = 0.1):
        if not lr >= 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"betas must each lie in [0, 1), got {betas}")
        if not eps > 0:
            raise ValueError("eps must be > 0 (it keeps the division finite where v is 0), "
                             f"got {eps}")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """One update of every parameter that has a gradient; returns `closure()`'s loss if
        given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse or p.is_complex():
                    raise ValueError("AdamW here handles dense real tensors only; use "
                                     "torch.optim.AdamW for sparse or complex parameters")
                grad = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    layout = torch.preserve_format
                    state["exp_avg"] = torch.zeros_like(p, memory_format=layout)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=layout)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                state["step"] += 1
                t = state["step"]
                if wd != 0:
                    p.mul_(1 - lr * wd)  # decoupled: shrinks p itself, never enters m or v
                # lerp: m + (1 - beta1) * (g - m) == beta1 * m + (1 - beta1) * g, with
                # torch's own rounding.
                m.lerp_(grad, 1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                bias_correction1 = 1 - beta1 ** t
                bias_correction2 = 1 - beta2 ** t
                step_size = lr / bias_correction1
                denom = (v.sqrt() / bias_correction2 ** 0.5).add_(eps)  # sqrt(v_hat) + eps
                p.addcdiv_(m, denom, value=-step_size)
        return loss


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Split `model`'s trainable parameters into a decayed and a non-decayed group for AdamW.

    Decayed (`weight_decay`): the matrices (`p.dim() >= 2`) of the linear layers: attention's
    wq, wk, wv, wo, the feed-forward's w1, w2, w3 and an untied output matrix. Not decayed
    (0.0): RMSNorm gains and any biases (scales and offsets: pulling them toward 0 fights
    what they are for, and they are few) and embedding matrices (lookups: a rare token's row
    gets a gradient only when the token appears, and decay would shrink it every step in
    between). A tied output matrix IS the embedding: not decayed, listed once. LLaMA 2's
    paper gives weight decay 0.1 without saying which tensors; this split is minGPT's.
    nanoGPT, by contrast, decays every 2-D tensor, embeddings included, and Hugging Face's
    Trainer exempts only biases and norms.

    Returns `[{"params", "param_names", "weight_decay"}, ...]`, decayed group first; a group
    with no parameter is left out. Each dict works with this AdamW and torch.optim.AdamW.
    """
    embeddings = {id(module.weight) for module in model.modules()
                  if isinstance(module, nn.Embedding)}
    decay: tuple[list[nn.Parameter], list[str]] = ([], [])
    no_decay: tuple[list[nn.Parameter], list[str]] = ([], [])
    for name, p in model.named_parameters():  # a shared (tied) tensor is listed once
        if not p.requires_grad:
            continue
        group = decay if p.dim() >= 2 and id(p) not in embeddings else no_decay
        group[0].append(p)
        group[1].append(name)
    return [{"params": params, "param_names": names, "weight_decay": wd}
            for (params, names), wd in [(decay, weight_decay), (no_decay, 0.0)] if params]
