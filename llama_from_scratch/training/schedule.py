"""The learning rate as a function of the step: linear warmup, then cosine decay to 10% of the peak.

LLaMA 2 (Touvron et al., 2023, section 2.2): 2,000 warmup steps, then a cosine decay of the
learning rate down to 10% of its peak. With `step` the 0-based index of the optimizer step
about to be taken:

    step < warmup_steps:               max_lr * (step + 1) / warmup_steps
    warmup_steps <= step <= max_steps: min_lr + (max_lr - min_lr) * (1 + cos(pi * progress)) / 2,
                                       progress = (step - warmup_steps) / (max_steps - warmup_steps)
    step > max_steps:                  min_lr                       (min_lr = final_ratio * max_lr)

The first step already has a non-zero rate (`max_lr / warmup_steps`: a step at lr 0 would be
wasted); the last warmup step and the first cosine step both use `max_lr`. A run of
`max_steps` steps takes steps 0 .. max_steps - 1, so its last rate is a hair above min_lr.
A pure function of the step, so a resumed run needs no scheduler state.

Chapter: pretraining.
"""

from __future__ import annotations

import math


def lr_at(step: int, max_lr: float, warmup_steps: int, max_steps: int,
          final_ratio: float = 0.1) -> float:
    """The learning rate for 0-based optimizer step `step` (see the module docstring).

    ValueError for a negative step or max_lr, `max_steps < warmup_steps`, or a final_ratio
    outside [0, 1]. `warmup_steps = 0` starts at max_lr; `max_steps = warmup_steps` drops to
    min_lr right after the warmup.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0 (0-based), got {step}")
    if not max_lr >= 0:
        raise ValueError(f"max_lr must be >= 0, got {max_lr}")
    if warmup_steps < 0 or max_steps < warmup_steps:
        raise ValueError("need 0 <= warmup_steps <= max_steps, got "
                         f"warmup_steps={warmup_steps}, max_steps={max_steps}")
    if not 0 <= final_ratio <= 1:
        raise ValueError(f"final_ratio must lie in [0, 1] (LLaMA 2: 0.1), got {final_ratio}")
    min_lr = final_ratio * max_lr
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / (max_steps - warmup_steps)  # in [0, 1)
    # Written down from max_lr so that the first cosine step is max_lr exactly.
    return max_lr - (max_lr - min_lr) * 0.5 * (1.0 - math.cos(math.pi * progress))
