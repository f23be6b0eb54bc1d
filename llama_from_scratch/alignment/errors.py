"""AlignmentError: bad input to the alignment task.

Raised for a topic that can never be matched, a held-out topic where training data is built, or a
generator of the wrong kind. The message says what was wrong and what to do; the CLI prints it
and exits with status 2. TrainingStopped is the one raised when a loss, a gradient or a reward
stops being finite: the model then holds its last good weights (those before the update that
made it non-finite), and the CLI saves them before exiting with status 2.

Chapter: instruction_tuning (also shown in: reward_model, rlhf).
"""


class AlignmentError(ValueError):
    """Bad input to the alignment task; the message says what to do instead."""


class TrainingStopped(AlignmentError):
    """A non-finite value at `step` (1-based); `records` are the steps before it. The model trained
    in place holds the weights it had before that step's cause."""

    def __init__(self, message: str, step: int, records: list[dict]):
        super().__init__(message)
        self.step, self.records = step, records
