"""AlignmentError: bad input to the alignment task.

Raised for a topic that can never be matched, a held-out topic where training data is built, or a
generator of the wrong kind. The message says what was wrong and what to do; the CLI prints it
and exits with status 2.

Chapter: instruction_tuning (also shown in: reward_model, rlhf).
"""


class AlignmentError(ValueError):
    """Bad input to the alignment task; the message says what to do instead."""
