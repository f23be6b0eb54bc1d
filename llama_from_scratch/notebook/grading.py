"""Helpers for the graded exercises' grader cells: say what is wrong, not only that it is.

Chapter: warmup.
"""

from __future__ import annotations

from typing import Any, Callable

import torch


def attempt(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call the learner's `fn`; an unimplemented stub becomes a clear AssertionError."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise AssertionError(
            f"`{fn.__name__}` is not implemented yet: replace the `raise NotImplementedError` in its "
            "cell with your code, run that cell, then run this grader again."
        ) from None


def check_close(actual: Any, expected: torch.Tensor, what: str, atol: float = 1e-6, rtol: float = 1e-5) -> None:
    """Assert that `actual` equals `expected` (a tensor) in type, shape, dtype and values.

    The message names `what` was checked and where the first mismatch is.
    """
    if not isinstance(actual, torch.Tensor):
        raise AssertionError(f"{what}: expected a torch.Tensor, got {type(actual).__name__}")
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {tuple(actual.shape)}, expected {tuple(expected.shape)}")
    if actual.dtype != expected.dtype:
        raise AssertionError(f"{what}: dtype {actual.dtype}, expected {expected.dtype}")
    if expected.dtype == torch.bool or not expected.is_floating_point():
        bad = actual != expected
    else:
        bad = ~torch.isclose(actual, expected, atol=atol, rtol=rtol, equal_nan=True)
    if bad.any():
        index = tuple(int(i) for i in bad.nonzero()[0])
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.numel()} values differ; first at index {index}: "
            f"yours {actual[index].item()!r}, expected {expected[index].item()!r}"
        )
