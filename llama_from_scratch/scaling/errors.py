"""ScalingError: bad input to a scaling-law function (too few points, non-positive sizes or losses,
a budget too small for any model). The message says what was wrong and what to do; the CLI
prints it and exits with status 2.

Chapter: scaling_laws.
"""


class ScalingError(ValueError):
    """Bad input to a scaling-law fit, law or sweep; the message says what to do instead."""
