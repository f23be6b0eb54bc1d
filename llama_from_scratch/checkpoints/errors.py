"""The one error every checkpoint loader raises: `CheckpointError`.

Chapter: real_weights.
"""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint file is not what its header, its size or the expected config says."""
