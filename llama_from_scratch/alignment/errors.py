"""AlignmentError: bad input to the alignment task.

Raised for a topic that can never be matched, a held-out topic where training data is built, or a
generator of the wrong kind. The message says what was wrong and what to do; the CLI prints it
and exits with status 2. TrainingStopped is the one raised when a loss, a gradient or a reward
stops being finite: the model then holds its last good weights (those before the update that
made it non-finite), and the CLI saves them before exiting with status 2.

Chapter: instruction_tuning (also shown in: reward_model, rlhf).
"""

from __future__ import annotations

import math
from typing import Any


class AlignmentError(ValueError):
    """Bad input to the alignment task; the message says what to do instead."""


class TrainingStopped(AlignmentError):
    """A non-finite value at `step` (1-based); `records` are the steps before it. The model trained
    in place holds the weights it had before that step's cause."""

    def __init__(self, message: str, step: int, records: list[dict]):
        super().__init__(message)
        self.step, self.records = step, records


def require_ints(settings: Any, names: tuple[str, ...], minimum: int = 1) -> None:
    """AlignmentError naming the first of `settings`' fields `names` that is not an int >= `minimum`."""
    for name in names:
        value = getattr(settings, name)
        if type(value) is not int or value < minimum:
            raise AlignmentError(f"{name} must be an integer >= {minimum}, got {value!r}")


def stop_unless_finite(model: Any, previous: dict | None, loss: float, grad_norm: float, step: int,
                       records: list[dict], what: str) -> None:
    """Nothing when the loss and the gradient norm of 0-based `step` are finite. Otherwise put
    `model` back to `previous` (its state dict before the latest update, which made this step's
    loss; None at step 0, when nothing was updated yet) and raise TrainingStopped."""
    if math.isfinite(loss) and math.isfinite(grad_norm):
        return
    if previous is not None:
        model.load_state_dict(previous)
    raise TrainingStopped(f"the {what} loss became {loss} at step {step + 1}; the model is kept as it was after "
                          f"step {max(0, step - 1)}; lower --lr", step + 1, records)
