"""Seeding, so every chapter prints the same numbers on every run.

Chapter: warmup.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python's, NumPy's and PyTorch's global generators; return a seeded torch.Generator.

    Not handled: bit-identical results across different hardware or torch versions,
    which seeding alone cannot give.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
