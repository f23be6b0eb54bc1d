"""Chinchilla's approach 3: L(N, D) = E + A / N^alpha + B / D^beta fitted to every run at once.

Hoffmann et al. (2022, section 3.3 and appendix D.2) parameterise E = exp(e), A = exp(a),
B = exp(b), so that the predicted log-loss is

    log L(N, D) = logsumexp(a - alpha log N, b - beta log D, e)

and minimise the sum over runs of Huber_delta(predicted log L - observed log L) with delta = 1e-3
by L-BFGS, started from a grid of initialisations (alpha, beta in {0, 0.5, 1, 1.5, 2}; e in
{-1, -0.5, 0, 0.5, 1, 1.5}; a, b in {0, 5, ..., 25}: 5,400 points), keeping the best fit. The Huber
loss is quadratic for residuals under delta (0.1% of the loss) and linear above, so an outlying
run pulls the fit less than in least squares. N = non-embedding parameters, D = training tokens.

To run in seconds here, the objective is evaluated at all 5,400 grid points at once (one batched
tensor expression) and L-BFGS (float64, strong-Wolfe line search) runs only from the best `starts`
of them; the paper ran it from every grid point. Besiroglu et al. (2024) found that the paper's
optimiser stopped before convergence, because of a poor choice of loss scale: here L-BFGS stops
only at a gradient under 1e-12 (or no progress), and the tests check that the gradient is ~0 at
the result. Not handled: weighting runs, or data repeated over many epochs (the law assumes
fresh tokens).

Chapter: scaling_laws.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import torch

from llama_from_scratch.scaling.errors import ScalingError
from llama_from_scratch.scaling.records import check_records

DELTA = 1e-3
ALPHAS = BETAS = (0.0, 0.5, 1.0, 1.5, 2.0)
ES = (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5)
AS = BS = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)


def initial_grid() -> torch.Tensor:
    """The paper's 5,400 initialisations as rows (a, b, e, alpha, beta), shape `(5400, 5)`, float64."""
    rows = itertools.product(AS, BS, ES, ALPHAS, BETAS)
    return torch.tensor(list(rows), dtype=torch.float64)


def predicted_log_loss(theta: torch.Tensor, log_n: torch.Tensor, log_d: torch.Tensor) -> torch.Tensor:
    """log L for parameters `theta` of shape `(..., 5)` as (a, b, e, alpha, beta) at runs of shape
    `(runs,)`: shape `(..., runs)`."""
    a, b, e, alpha, beta = (theta[..., i, None] for i in range(5))
    terms = torch.stack([a - alpha * log_n, b - beta * log_d, e.expand(*e.shape[:-1], log_n.shape[-1])])
    return torch.logsumexp(terms, dim=0)


def huber_objective(theta: torch.Tensor, log_n: torch.Tensor, log_d: torch.Tensor,
                    log_loss: torch.Tensor, delta: float = DELTA) -> torch.Tensor:
    """Sum over runs of Huber_delta(predicted - observed log-loss): 0.5 r^2 where |r| <= delta, else
    delta (|r| - 0.5 delta). `theta` `(..., 5)`, runs `(runs,)`; returns shape `(...)`."""
    residual = predicted_log_loss(theta, log_n, log_d) - log_loss
    huber = torch.nn.functional.huber_loss(residual, torch.zeros_like(residual), reduction="none",
                                           delta=delta)
    return huber.sum(dim=-1)


def _logs(records: Sequence[dict], field: str) -> torch.Tensor:
    return torch.tensor([math.log(r[field]) for r in records], dtype=torch.float64)


def _lbfgs(start: torch.Tensor, objective) -> torch.Tensor:
    theta = start.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([theta], lr=1.0, max_iter=500, history_size=20,
                                  tolerance_grad=1e-12, tolerance_change=1e-16,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        value = objective(theta)
        value.backward()
        return value

    optimizer.step(closure)
    return theta.detach()


def fit_parametric(records: Sequence[dict], delta: float = DELTA,
                   starts: int = 20) -> dict[str, float]:
    """Approach 3 on `records` (see the module docstring): returns E, A, B, alpha, beta and
    "objective" (the Huber sum at the fit), all floats. Needs at least 6 runs (5 numbers are
    fitted) with at least 2 different sizes and 2 different token counts (ScalingError)."""
    check_records(records, 6, "approach 3 (5 numbers: E, A, B, alpha, beta)")
    if starts < 1:
        raise ScalingError(f"starts must be at least 1, got {starts}")
    for field in ("params", "tokens"):
        if len({r[field] for r in records}) < 2:
            raise ScalingError(f'approach 3 needs runs with at least 2 different "{field}" '
                               "values: with one, its exponent cannot be told apart from the "
                               "constant")
    log_n, log_d, log_loss = (_logs(records, field) for field in ("params", "tokens", "loss"))

    def objective(theta: torch.Tensor) -> torch.Tensor:
        return huber_objective(theta, log_n, log_d, log_loss, delta)

    grid = initial_grid()
    with torch.no_grad():
        order = torch.argsort(objective(grid))
    best, best_value = None, math.inf
    for start in grid[order[:starts]]:
        theta = _lbfgs(start, objective)
        value = float(objective(theta))
        if math.isfinite(value) and value < best_value:
            best, best_value = theta, value
    if best is None:
        raise ScalingError("approach 3 diverged from every start: check the records' losses")
    a, b, e, alpha, beta = best.tolist()
    return {"E": math.exp(e), "A": math.exp(a), "B": math.exp(b), "alpha": alpha, "beta": beta,
            "objective": best_value}


def fit_gradient(fit: dict[str, float], records: Sequence[dict], delta: float = DELTA) -> np.ndarray:
    """Gradient of the Huber objective with respect to (a, b, e, alpha, beta) at `fit`, shape `(5,)`:
    ~0 at a local minimum (the tests' check that L-BFGS converged)."""
    theta = torch.tensor([math.log(fit["A"]), math.log(fit["B"]), math.log(fit["E"]), fit["alpha"],
                          fit["beta"]], dtype=torch.float64, requires_grad=True)
    columns = (_logs(records, field) for field in ("params", "tokens", "loss"))
    huber_objective(theta, *columns, delta=delta).backward()
    return theta.grad.numpy()
