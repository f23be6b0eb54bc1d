"""Global-norm gradient clipping: rescale all gradients together when their joint norm is
too large.

The norm is the L2 norm of every gradient entry of the model seen as one vector:
`sqrt(sum over tensors of ||g||^2)`, computed per tensor and then over the per-tensor norms
(in float32, as `torch.nn.utils.clip_grad_norm_` does for float32 gradients). When it exceeds
`max_norm` every gradient is multiplied by `max_norm / (norm + 1e-6)`, which keeps the
update's direction and caps its size; LLaMA 2 clips at 1.0. One deliberate difference from
PyTorch: a non-finite norm (inf or nan, a diverged step) leaves the gradients untouched
(PyTorch multiplies them by 0 or nan); the caller is expected to stop or skip the step.
Bfloat16 gradients: our norm is float32, PyTorch's is rounded to bfloat16.

Chapter: pretraining.
"""

from __future__ import annotations

from typing import Iterable

import torch


@torch.no_grad()
def clip_grad_norm(parameters: Iterable[torch.Tensor] | torch.Tensor,
                   max_norm: float) -> torch.Tensor:
    """Clip the gradients of `parameters` in place to a global L2 norm of at most `max_norm`.

    Returns the total norm BEFORE clipping, a float32 scalar tensor (0.0 when no parameter
    has a gradient). Parameters whose `.grad` is None are ignored. ValueError for a
    `max_norm` that is not positive.
    """
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0 (LLaMA 2 uses 1.0), got {max_norm}")
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    device = grads[0].device
    # one norm per tensor
    norms = [torch.linalg.vector_norm(g, 2, dtype=torch.float32).to(device) for g in grads]
    total = torch.linalg.vector_norm(torch.stack(norms), 2)  # () float32
    if not torch.isfinite(total):
        return total
    scale = float(max_norm) / (total + 1e-6)  # () float32, as PyTorch rounds it
    if scale < 1:
        for g in grads:
            g.mul_(scale.to(g.device))
    return total
