"""Bootstrap confidence intervals for the scaling-law fits.

Resample the runs with replacement, refit, repeat `n` times: the spread of the refitted numbers
is how much they depend on which runs happened to be in the sweep. The 2.5th and 97.5th
percentiles give a 95% percentile interval (Efron and Tibshirani 1993, chapter 13). A resample
whose fit is impossible (too few distinct sizes, a parabola opening downwards) raises
ScalingError and is skipped; the count of skipped resamples is reported, because many of them
mean the intervals come from the luckier resamples only. Not handled: bias correction (BCa), and
the seed-to-seed noise of a single run beyond what the sweep's repeats show.

For approach 2 the resampling is done within budgets (`by_budget=True`: each budget keeps its
number of runs) so that every resample still has every IsoFLOP curve; resampling across budgets
would mostly measure how often a budget loses its sizes.

Chapter: scaling_laws.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

import numpy as np

from llama_from_scratch.scaling.errors import ScalingError
from llama_from_scratch.scaling.isoflop import approach1, approach2
from llama_from_scratch.scaling.laws import Law, compute_optimal
from llama_from_scratch.scaling.parametric import fit_parametric
from llama_from_scratch.scaling.records import group_by_budget


def _numeric(fit: dict) -> dict[str, float]:
    return {k: float(v) for k, v in fit.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def _resample(records: Sequence[dict], rng: np.random.Generator, by_budget: bool) -> list[dict]:
    groups = list(group_by_budget(records).values()) if by_budget else [list(records)]
    return [group[i] for group in groups for i in rng.integers(0, len(group), size=len(group))]


def bootstrap(records: Sequence[dict], fit: Callable[[Sequence[dict]], dict], n: int, seed: int = 0,
              keys: Sequence[str] | None = None, by_budget: bool = False) -> dict:
    """95% percentile intervals of `fit`'s numeric outputs over `n` resamples of `records`.

    `fit` maps a list of records to a dict (e.g. `approach2`, `fit_parametric`); its top-level
    finite numbers (or only `keys`) are collected. Resamples draw `len(records)` runs with
    replacement (`numpy.random.default_rng(seed)`: the same seed gives the same intervals), or
    within each budget group with `by_budget`. Returns {key: (lo, hi)} for each number plus
    "skipped": how many resamples raised ScalingError. ScalingError if `n` < 2 or fewer than 2
    resamples could be fitted."""
    if n < 2:
        raise ScalingError(f"a bootstrap needs at least 2 resamples, got {n}")
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {}
    skipped = 0
    for _ in range(n):
        try:
            values = _numeric(fit(_resample(records, rng, by_budget)))
        except ScalingError:
            skipped += 1
            continue
        for key in keys if keys is not None else values:
            if key not in values:
                raise ScalingError(f"the fit has no numeric output {key!r}: it has {sorted(values)}")
            samples.setdefault(key, []).append(values[key])
    if n - skipped < 2:
        raise ScalingError(f"only {n - skipped} of {n} bootstrap resamples could be fitted: the sweep "
                           f"is too small for this fit to survive resampling; add runs")
    intervals: dict = {key: (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5)))
                       for key, v in samples.items()}
    intervals["skipped"] = skipped
    return intervals


def optimal_params(records: Sequence[dict], approach: int, budgets: Sequence[float],
                   starts: int = 20) -> dict[str, float]:
    """N_opt at each of `budgets` (FLOPs) under approach 1, 2 or 3 fitted to `records`, keyed by the
    budget written with `:g` (e.g. "1e+21"). Approaches 1 and 2: n_coefficient C^a; approach 3
    (`starts` L-BFGS starts): the law's closed form G (C/6)^(beta / (alpha + beta))
    (`laws.compute_optimal`)."""
    if approach in (1, 2):
        fit = (approach1 if approach == 1 else approach2)(records)
        return {f"{c:g}": fit["n_coefficient"] * c ** fit["a"] for c in budgets}
    if approach == 3:
        fit = fit_parametric(records, starts=starts)
        law = Law(fit["E"], fit["A"], fit["B"], fit["alpha"], fit["beta"], "approach 3")
        return {f"{c:g}": compute_optimal(law, c)[0] for c in budgets}
    raise ScalingError(f"approach must be 1, 2 or 3, got {approach!r}")


def optimal_params_intervals(records: Sequence[dict], approach: int, budgets: Sequence[float], n: int,
                             seed: int = 0, starts: int = 20) -> dict:
    """Bootstrap intervals on N_opt(C) at `budgets` for approach 1, 2 or 3 (`optimal_params`):
    {f"{C:g}": (lo, hi), ..., "skipped": count}. Approach 2 resamples within budgets; approach 3
    refits from `starts` L-BFGS starts per resample (about a second each for ~30 runs)."""
    fit = partial(optimal_params, approach=approach, budgets=budgets, starts=starts)
    return bootstrap(records, fit, n, seed, by_budget=approach == 2)
