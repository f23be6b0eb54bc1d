"""The published scaling laws L(N, D) = E + A / N^alpha + B / D^beta and their compute-optimal models.

N is the number of parameters, D the number of training tokens, L the loss in nats per token on
the authors' own data (MassiveText, with their tokenizer): the constants do not transfer to our
tokenizer or corpus, only the shape of the law does. Two sets of constants:

* `CHINCHILLA`: Hoffmann et al. 2022, eq. 10 (their Approach 3, fitted with a Huber loss).
* `EPOCH`: Besiroglu et al. 2024, "Chinchilla scaling: a replication attempt", who refitted
  Approach 3 on data read off the paper's own figure and found the published constants
  inconsistent with it (rounding, and an optimiser stopped early).

Training costs C = 6 N D FLOPs (the 6N rule, chapter 8). Minimising L subject to that budget has a
closed form (`compute_optimal`); `numerical_optimum` finds the same point by a golden-section
search, so the algebra is checked against a plain minimisation. Not handled: other FLOP counts
than 6ND (attention at long context adds 3.5-6% for LLaMA 2; see compute.py), and data repeated
for several epochs (the law assumes fresh tokens).

Chapter: scaling_laws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np

from llama_from_scratch.scaling.errors import ScalingError


@dataclass(frozen=True)
class Law:
    """L(N, D) = E + A / N^alpha + B / D^beta: N parameters, D training tokens, L nats per token."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    name: str = ""

    def __post_init__(self) -> None:
        for key in ("A", "B", "alpha", "beta"):
            value = getattr(self, key)
            if not math.isfinite(value) or value <= 0:
                raise ScalingError(f"law {self.name or '?'}: {key} must be a positive finite number, "
                                   f"got {value}; with {key} <= 0 the loss does not fall with scale")
        if not math.isfinite(self.E) or self.E < 0:
            raise ScalingError(f"law {self.name or '?'}: E (the irreducible loss) must be finite and "
                               f">= 0, got {self.E}")

    def loss(self, params, tokens):
        """The predicted loss for `params` (N) and `tokens` (D): floats, or numpy arrays of any
        broadcastable shapes (the result has the broadcast shape). Sizes must be positive."""
        n, d = np.asarray(params, dtype=np.float64), np.asarray(tokens, dtype=np.float64)
        if not (np.all(n > 0) and np.all(d > 0)):  # also catches NaN
            raise ScalingError(f"parameters and tokens must be positive, got {params} and {tokens}")
        out = self.E + self.A / n**self.alpha + self.B / d**self.beta
        return float(out) if out.ndim == 0 else out


CHINCHILLA = Law(1.69, 406.4, 410.7, 0.34, 0.28, "chinchilla")
EPOCH = Law(1.8172, 482.01, 2085.43, 0.3478, 0.3658, "epoch")
LAWS = {"chinchilla": CHINCHILLA, "epoch": EPOCH}


class Table3Row(NamedTuple):
    params: float
    flops: float
    tokens: float


# Hoffmann et al. 2022, Table 3: Approach 1's compute-optimal tokens and FLOPs for given sizes.
# 6 N D matches the FLOPs within 1% on every row but 67B, where 1.5T is 4.5% high:
# 5.76e23 / (6 * 67e9) = 1.43T (Chinchilla itself, 70B, was trained on 1.4T).
CHINCHILLA_TABLE3 = (
    Table3Row(400e6, 1.92e19, 8.0e9),
    Table3Row(1e9, 1.21e20, 20.2e9),
    Table3Row(10e9, 1.23e22, 205.1e9),
    Table3Row(67e9, 5.76e23, 1.5e12),
    Table3Row(175e9, 3.85e24, 3.7e12),
    Table3Row(280e9, 9.90e24, 5.9e12),
    Table3Row(520e9, 3.43e25, 11.0e12),
    Table3Row(1e12, 1.27e26, 21.2e12),
    Table3Row(10e12, 1.30e28, 216.2e12),
)


def _check_flops(flops) -> np.ndarray:
    c = np.asarray(flops, dtype=np.float64)
    if not (np.all(np.isfinite(c)) and np.all(c > 0)):
        raise ScalingError(f"the compute budget must be a positive finite number of FLOPs, got {flops}")
    return c


def compute_optimal(law: Law, flops) -> tuple[float, float]:
    """(N_opt, D_opt) minimising `law.loss(N, D)` subject to 6 N D = `flops`, in closed form.

    Setting dL/dN = 0 along D = C / (6N) gives alpha A / N^alpha = beta B / D^beta, hence
    G = (alpha A / (beta B))^(1 / (alpha + beta)), N_opt = G (C/6)^(beta / (alpha + beta)) and
    D_opt = (C/6)^(alpha / (alpha + beta)) / G (Hoffmann et al. 2022, eq. 4). E does not move
    it.
    `flops` may be a float (floats back) or a numpy array (arrays of its shape back).
    """
    c6 = _check_flops(flops) / 6.0
    total = law.alpha + law.beta
    g = (law.alpha * law.A / (law.beta * law.B)) ** (1.0 / total)
    n, d = g * c6 ** (law.beta / total), c6 ** (law.alpha / total) / g
    return (float(n), float(d)) if n.ndim == 0 else (n, d)


def exponents(law: Law) -> tuple[float, float]:
    """(a, b) with N_opt ~ C^a and D_opt ~ C^b: a = beta / (alpha + beta), b = alpha / (alpha + beta).

    Why Chinchilla's fitted constants put 32B parameters (and 3.0T tokens) at Gopher's 5.76e23
    FLOPs while its Table 3 says 67B: Table 3 is Approach 1 (the minimum-loss envelope), whose
    N_opt ~ C^0.50; the parametric fit (Approach 3) has a = 0.28 / 0.62 = 0.45 and its own
    constants: its N_opt is already 0.7x Table 3's at 1e20 FLOPs and falls to 0.3x by 1e28 (the
    paper notes that Approach 3 predicts smaller models than the other two). Besiroglu et al.
    (2024) found the published Approach-3 constants do not fit the paper's own data; their refit
    (`EPOCH`) gives a = 0.51, in line with Approaches 1 and 2, and lands within 25% of every
    Table 3 row.
    """
    total = law.alpha + law.beta
    return law.beta / total, law.alpha / total


def golden_minimum(f: Callable[[float], float], lo: float, hi: float, grid: int = 201,
                   tol: float = 1e-12) -> float:
    """The x in [lo, hi] minimising a unimodal `f`: the best of `grid` evenly spaced points,
    then a golden-section search between its neighbours until the bracket is below `tol`
    (relative to max(1, |x|)). Not handled: several local minima closer than the grid spacing."""
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi and grid >= 3):
        raise ScalingError(f"need finite lo < hi and grid >= 3, got {lo}, {hi}, {grid}")
    xs = np.linspace(lo, hi, grid)
    best = int(np.argmin([f(float(x)) for x in xs]))
    a, b = float(xs[max(best - 1, 0)]), float(xs[min(best + 1, grid - 1)])
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    x1, x2 = b - ratio * (b - a), a + ratio * (b - a)
    f1, f2 = f(x1), f(x2)
    for _ in range(400):
        if b - a <= tol * max(1.0, abs(a)):
            break
        if f1 <= f2:
            b, x2, f2 = x2, x1, f1
            x1 = b - ratio * (b - a)
            f1 = f(x1)
        else:
            a, x1, f1 = x1, x2, f2
            x2 = a + ratio * (b - a)
            f2 = f(x2)
    return (a + b) / 2.0


def numerical_optimum(law: Law, flops: float) -> tuple[float, float]:
    """(N_opt, D_opt) for a budget of `flops` = 6 N D found by minimising the loss over log N
    (`golden_minimum`), without the closed form: the check on `compute_optimal`."""
    c6 = float(_check_flops(flops)) / 6.0
    half = 0.5 * math.log(c6)  # log N where N = D; the optimum is within e^30 of it either way

    def reducible(log_n: float) -> float:
        # E is left out: it does not move the minimum, and it would swamp the last digits.
        return law.A * math.exp(-law.alpha * log_n) + law.B * math.exp(-law.beta * (math.log(c6) - log_n))

    log_n = golden_minimum(reducible, half - 30.0, half + 30.0)
    return math.exp(log_n), c6 / math.exp(log_n)
