"""Power laws fitted in log space, and Kaplan et al.'s L(N), L(D) and L(C).

A power law y = k x^p is a straight line in log-log axes, log y = log k + p log x, so an ordinary
least-squares line through (log x, log y) fits it (numpy's lstsq; natural logs). Kaplan et al.
(2020) write the same line as L = (X_c / X)^alpha_X: alpha_X = -p and X_c = k^(1/alpha_X)
(`kaplan_constant`). Least squares in log space weighs every point's relative error equally; it
does not handle an irreducible term (L = E + A / N^alpha is not a line: that is approach 3).

`kaplan_fits` reduces a sweep to frontiers before fitting, as Kaplan et al. did:
  L(N): the best loss each model size reached (min over its runs: budgets, seeds);
  L(D): the lower envelope in data: at each distinct D, the best loss of any run with <= D tokens;
  L(C): the best loss per IsoFLOP budget (`records.group_by_budget`), at the nominal budget
          (or the group's geometric-mean FLOPs when the records have no "budget").
N = non-embedding parameters, D = training tokens, C = 6 N D FLOPs, L in nats per token. The
frontiers are only as good as the sweep's range: a size trained on too few tokens sits above
its L(N) asymptote, and repeated data (many epochs) bends L(D) upwards.

Chapter: scaling_laws.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from llama_from_scratch.scaling.errors import ScalingError
from llama_from_scratch.scaling.records import check_records, group_by_budget


@dataclass(frozen=True)
class PowerLaw:
    """y = coefficient * x ** exponent (a falling loss has a negative exponent)."""

    coefficient: float
    exponent: float

    def __call__(self, x: float | np.ndarray) -> float | np.ndarray:
        """The law at `x` (a float or an array of any shape, elementwise)."""
        return self.coefficient * np.asarray(x, dtype=np.float64) ** self.exponent


def fit_power_law(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> PowerLaw:
    """Least squares of log y on log x for `x`, `y` of shape `(points,)`: the line's slope is the
    exponent, exp(intercept) the coefficient. ScalingError for fewer than 2 points, a non-positive
    or non-finite value (no logarithm) or all x equal (no slope)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ScalingError(f"a power law needs as many x as y values, got {x.size} and {y.size}")
    if x.size < 2:
        raise ScalingError(f"a power law fits 2 numbers and needs at least 2 points, got {x.size}")
    for name, values in (("x", x), ("y", y)):
        bad = ~(np.isfinite(values) & (values > 0))
        if bad.any():
            raise ScalingError(f"a power law needs positive finite values: {name}[{int(np.argmax(bad))}] = "
                               f"{float(values[bad][0])!r} has no logarithm")
    if np.all(x == x[0]):
        raise ScalingError(f"every x is {x[0]:g}: a power law needs at least 2 different x values")
    design = np.stack([np.ones_like(x), np.log(x)], axis=1)
    (intercept, slope), *_ = np.linalg.lstsq(design, np.log(y), rcond=None)
    return PowerLaw(coefficient=float(np.exp(intercept)), exponent=float(slope))


def kaplan_constant(law: PowerLaw) -> float:
    """X_c of Kaplan's form L = (X_c / X)^alpha with alpha = -law.exponent: X_c = k^(1/alpha)."""
    if law.exponent == 0:
        raise ScalingError("a flat law (exponent 0) has no Kaplan constant X_c")
    return float(law.coefficient ** (1.0 / -law.exponent))


def _best_per(keys: np.ndarray, losses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    distinct = np.unique(keys)
    return distinct, np.array([losses[keys == key].min() for key in distinct])


def kaplan_fits(records: Sequence[dict]) -> dict[str, PowerLaw]:
    """Power laws "N", "D" and "C" for L(N), L(D) and L(C) on the frontiers described in the
    module docstring. Each needs at least 2 distinct sizes, token counts or budgets
    (ScalingError)."""
    check_records(records, 2, "a power law (2 numbers)")
    params = np.array([r["params"] for r in records], dtype=np.float64)
    tokens = np.array([r["tokens"] for r in records], dtype=np.float64)
    losses = np.array([r["loss"] for r in records], dtype=np.float64)
    fits = {}
    sizes, best = _best_per(params, losses)
    if sizes.size < 2:
        raise ScalingError("L(N) needs at least 2 model sizes, got one "
                           f"({sizes[0]:g} parameters)")
    fits["N"] = fit_power_law(sizes, best)
    counts = np.unique(tokens)
    if counts.size < 2:
        raise ScalingError("L(D) needs at least 2 different token counts, got one "
                           f"({counts[0]:g})")
    envelope = [losses[tokens <= d].min() for d in counts]
    fits["D"] = fit_power_law(counts, envelope)
    groups = group_by_budget(records)
    if len(groups) < 2:
        raise ScalingError(f"L(C) needs at least 2 compute budgets, got {len(groups)}")
    fits["C"] = fit_power_law(list(groups),
                              [min(r["loss"] for r in group) for group in groups.values()])
    return fits
