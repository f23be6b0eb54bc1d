"""Chinchilla's approaches 1 and 2: the compute-optimal model size N_opt(C) read off the runs.

Approach 2 (IsoFLOP profiles, Hoffmann et al. 2022 section 3.2): at each fixed budget C the loss
against log N is a valley; a parabola in ln N through each budget's runs puts its minimum at
N_opt(C), D_opt = C / (6 N_opt). Approach 1 (section 3.1): every point of every training curve is
a (C, N, L) triple; at each C the size whose curve is lowest there is N_opt(C). Both then fit
N_opt = n_coefficient C^a and D_opt = d_coefficient C^b by least squares in log space; with
D = C / (6 N), b = 1 - a exactly. N = non-embedding parameters, D = tokens, C = 6 N D FLOPs.

Chapter: scaling_laws.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from llama_from_scratch.scaling.errors import ScalingError
from llama_from_scratch.scaling.powerlaw import fit_power_law
from llama_from_scratch.scaling.records import check_records, group_by_budget


def _frontier(flops: list[float], params: list[float]) -> dict[str, float]:
    n_law = fit_power_law(flops, params)
    d_law = fit_power_law(flops, [c / (6 * n) for c, n in zip(flops, params)])
    return {"a": n_law.exponent, "b": d_law.exponent, "n_coefficient": n_law.coefficient,
            "d_coefficient": d_law.coefficient}


def approach2(records: Sequence[dict]) -> dict:
    """IsoFLOP parabolas. Runs are grouped by budget (`records.group_by_budget`: their
    "budget", else clusters of nearby FLOPs); each group gets L = c2 (ln N)^2 + c1 ln N + c0
    by `numpy.polyfit` on all its runs (seeds are not averaged), minimum at
    ln N_opt = -c1 / (2 c2).

    Returns {"a", "b", "n_coefficient", "d_coefficient", "minima"}: N_opt = n_coefficient C^a,
    D_opt = d_coefficient C^b, and per budget {"flops": C (the nominal budget, or the group's
    geometric-mean FLOPs), "params": N_opt, "tokens": D_opt, "loss": the parabola's minimum,
    "parabola": [c2, c1, c0], "extrapolated": whether N_opt lies outside the sizes trained}.
    An extrapolated minimum is left out of the regression (a parabola's vertex beyond its
    points is a guess: the budget's sizes did not bracket the optimum; add sizes on that
    side).
    ScalingError: fewer than 2 budgets, a budget with fewer than 3 sizes, a parabola that opens
    downwards (no minimum; a noisy or too narrow range of sizes), fewer than 2 budgets whose
    minimum lies inside the sizes trained."""
    check_records(records, 6, "approach 2 (a parabola per budget, at least 2 budgets)")
    groups = group_by_budget(records)
    if len(groups) < 2:
        raise ScalingError(f"approach 2 needs at least 2 compute budgets to fit N_opt(C), got "
                           f"{len(groups)}")
    minima = []
    for budget, group in groups.items():
        log_n = np.log([r["params"] for r in group])
        if np.unique(log_n).size < 3:
            raise ScalingError(f"budget {budget:.3g} FLOPs has {np.unique(log_n).size} model "
                               f"sizes: a parabola needs at least 3")
        parabola = np.polyfit(log_n, [r["loss"] for r in group], 2)
        c2, c1, _ = parabola
        if not c2 > 0:
            raise ScalingError(f"budget {budget:.3g} FLOPs: the parabola of loss in log N "
                               f"opens downwards (curvature {c2:.3g}), so it has no minimum; "
                               f"train sizes on both sides of the best one, or check the runs "
                               f"for noise")
        log_opt = -c1 / (2 * c2)
        n_opt = math.exp(log_opt)
        minima.append({"flops": budget, "params": n_opt, "tokens": budget / (6 * n_opt),
                       "loss": float(np.polyval(parabola, log_opt)),
                       "parabola": [float(c) for c in parabola],
                       "extrapolated": not log_n.min() <= log_opt <= log_n.max()})
    used = [m for m in minima if not m["extrapolated"]]
    if len(used) < 2:
        raise ScalingError(f"approach 2: only {len(used)} of {len(minima)} budgets have their "
                           f"parabola's minimum inside the sizes they trained; add sizes on "
                           f"the side of the minimum")
    fit = _frontier([m["flops"] for m in used], [m["params"] for m in used])
    return {**fit, "minima": minima}


def _curve(index: int, record: dict) -> tuple[np.ndarray, np.ndarray]:
    """A run's (ln C, loss) points in increasing C: its curve with C = 6 N tokens_seen, or its end."""
    points = record.get("curve") or [[record["tokens"], record["loss"]]]
    try:
        tokens, losses = np.asarray(points, dtype=np.float64).reshape(-1, 2).T
    except (TypeError, ValueError):
        raise ScalingError(f'run {index} has a "curve" that is not a list of [tokens_seen, loss] '
                           f"pairs") from None
    if not (np.isfinite(tokens).all() and np.isfinite(losses).all() and (tokens > 0).all()
            and (losses > 0).all()):
        raise ScalingError(f'run {index} has a "curve" point that is not positive and finite')
    log_c, keep = np.unique(np.log(6 * record["params"] * tokens), return_index=True)
    return log_c, losses[keep]


def approach1(records: Sequence[dict], n_points: int = 40, interior: bool = True) -> dict:
    """Minimum-loss envelope over training curves. Each run's curve ("curve" points, FLOPs
    C = 6 N tokens_seen; a run without one contributes its final point only) is interpolated
    linearly in ln C; at each of `n_points` log-spaced C between the smallest and largest curve
    FLOPs, the run lowest there among those whose curve covers C (no extrapolation) gives
    N_opt(C). Runs with the same size (seeds, horizons) compete like different sizes. Without
    any curves this reduces to the best final run per budget group, placed at the nominal
    budget.

    With `interior`, points won by the smallest or the largest size of the sweep are left out
    of the regression (the optimum may lie beyond them: they pin N_opt to the edge and flatten
    a); they are kept in the envelope with "edge": True.
    Returns {"a", "b", "n_coefficient", "d_coefficient", "envelope": [{"flops", "params",
    "tokens", "loss", "edge"}...]} with N_opt = n_coefficient C^a, D_opt = d_coefficient C^b.

    Known bias: an intermediate point of a run whose cosine schedule is set for a longer
    horizon is pessimistic (the learning rate has not decayed yet), so the envelope favours
    runs near their end; Chinchilla trained each size to several horizons for that reason. A
    sweep with one horizon per size biases N_opt towards sizes whose final points sit at that
    C. ScalingError: fewer than 2 envelope points to regress (add sizes, curves, or
    interior=False)."""
    check_records(records, 2, "approach 1 (the envelope of the runs' curves)")
    if n_points < 2:
        raise ScalingError(f"n_points must be at least 2, got {n_points}")
    curves = [_curve(i, r) for i, r in enumerate(records)]
    sizes = [r["params"] for r in records]
    smallest, largest = min(sizes), max(sizes)
    spans = [(i, c) for i, c in enumerate(curves) if c[0].size > 1]
    candidates = []  # (C, N, loss) at each grid point
    if spans:
        low = min(c[0][0] for _, c in spans)
        high = max(c[0][-1] for _, c in spans)
        for log_c in np.linspace(low, high, n_points):
            best = min(((float(np.interp(log_c, *c)), i) for i, c in spans
                        if c[0][0] <= log_c <= c[0][-1]), default=None)
            if best is not None:
                candidates.append((math.exp(log_c), float(sizes[best[1]]), best[0]))
    ends = [r for r, c in zip(records, curves) if c[0].size == 1]
    for budget, group in group_by_budget(ends).items():
        best = min(group, key=lambda r: r["loss"])
        candidates.append((budget, float(best["params"]), float(best["loss"])))
    envelope = [{"flops": c, "params": n, "tokens": c / (6 * n), "loss": loss,
                 "edge": n in (smallest, largest)} for c, n, loss in sorted(candidates)]
    used = [e for e in envelope if not (interior and e["edge"])]
    if len(used) < 2:
        raise ScalingError(f"approach 1 has {len(used)} envelope points away from the "
                           f"smallest and largest sizes: add sizes around the optimum, "
                           f"curves, or pass interior=False")
    fit = _frontier([e["flops"] for e in used], [e["params"] for e in used])
    return {**fit, "envelope": envelope}
