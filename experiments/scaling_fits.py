"""Chapter 9's slow part: the committed IsoFLOP sweep fitted three ways, with bootstrap intervals.

    python -m experiments.scaling_fits                  # committed: 2.7 minutes here, 1 thread
    python -m experiments.scaling_fits --bootstrap 4 --bootstrap3 3 --out /tmp/f.json  # seconds

Reads both seeds' records (experiments/results/scaling_sweep/seed*/runs.json; N = non-embedding
parameters, D = tokens, C = 6 N D) and fits them together: Kaplan's L(N), L(D), L(C) power laws;
Chinchilla's approaches 1, 2 and 3 (approach 3 from `--starts` L-BFGS starts, 20 as the package's
default); 95% percentile bootstrap intervals on the exponents a, b (N_opt ~ C^a, D_opt ~ C^b), on
approach 3's five constants and on N_opt at the sweep's budgets and a few beyond them
(`--beyond`): `--bootstrap` resamples for approaches 1 and 2 (approach 2 resamples within each
budget), `--bootstrap3` for approach 3, each refitted from only `--bootstrap-starts` (5) L-BFGS
starts, since 20 take 1-2 s a fit; the JSON records how far a 5-start fit of the full data is from
the 20-start one ("resample_starts_max_rel_diff", about 0 on the committed sweep).
The same fits on only the runs that saw the data at most `--max-epochs` times (Muennighoff et al.
2023: up to about 4 epochs is nearly as good as fresh data) show where repetition bends the
curves; budgets left with fewer than 3 sizes are dropped from approach 2 there. And the seed
spread: for each (budget, size) trained with several seeds, the range of their final losses, and
per budget whether the best size beats the runner-up by more than the seed noise.

Writes experiments/results/scaling_fits.json atomically (schema: experiments/README.md).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from experiments.common import ROOT, command_line, machine, now, write_json
from llama_from_scratch.scaling.bootstrap import bootstrap, optimal_params
from llama_from_scratch.scaling.errors import ScalingError
from llama_from_scratch.scaling.isoflop import approach1, approach2
from llama_from_scratch.scaling.laws import Law, compute_optimal, exponents
from llama_from_scratch.scaling.parametric import fit_parametric
from llama_from_scratch.scaling.powerlaw import kaplan_constant, kaplan_fits
from llama_from_scratch.scaling.records import check_records, group_by_budget, load_runs

SWEEP = "experiments/results/scaling_sweep"
CONSTANTS = ("E", "A", "B", "alpha", "beta")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", default=f"{SWEEP}/seed0/runs.json,{SWEEP}/seed1/runs.json",
                   help="comma-separated runs.json files, fitted together (relative to the repository)")
    p.add_argument("--out", default=str(ROOT / "experiments/results/scaling_fits.json"))
    p.add_argument("--bootstrap", type=int, default=1000, help="resamples for approaches 1 and 2")
    p.add_argument("--bootstrap3", type=int, default=200, help="resamples for approach 3")
    p.add_argument("--starts", type=int, default=20, help="L-BFGS starts of approach 3's point fit")
    p.add_argument("--bootstrap-starts", type=int, default=5, help="L-BFGS starts per approach-3 resample")
    p.add_argument("--max-epochs", type=float, default=4.0, help="the repetition cut of the second fit")
    p.add_argument("--beyond", default="1e14,1e15,1e16", help="budgets past the sweep for N_opt(C)")
    p.add_argument("--seed", type=int, default=0, help="the bootstrap's seed")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    if min(a.bootstrap, a.bootstrap3) < 2 or min(a.starts, a.bootstrap_starts) < 1:
        p.error("--bootstrap and --bootstrap3 need at least 2 resamples, the starts at least 1")
    return a


def key(flops: float) -> str:
    return f"{flops:g}"


def frontier(approach: int, budgets: list[float]) -> Callable[[list[dict]], dict[str, float]]:
    """Approach 1 or 2 as one function of the records: a, b and N_opt at each budget."""
    def fit(records: list[dict]) -> dict[str, float]:
        result = (approach1 if approach == 1 else approach2)(records)
        return {"a": result["a"], "b": result["b"],
                **{key(c): result["n_coefficient"] * c ** result["a"] for c in budgets}}
    return fit


def derived(p: dict[str, float], budgets: list[float]) -> dict[str, float]:
    """Approach 3's fit `p` with the exponents it implies and N_opt at each budget."""
    law = Law(*(p[k] for k in CONSTANTS), name="approach 3")  # ScalingError if alpha, beta <= 0
    a, b = exponents(law)
    return {**{k: p[k] for k in CONSTANTS}, "a": a, "b": b,
            **{key(c): compute_optimal(law, c)[0] for c in budgets}}


def parametric(budgets: list[float], starts: int) -> Callable[[list[dict]], dict[str, float]]:
    return lambda records: derived(fit_parametric(records, starts=starts), budgets)


def counted(fit: Callable, bar: Any) -> Callable:
    def wrapped(records: list[dict]) -> dict:
        bar.update(1)
        return fit(records)
    return wrapped


def approach2_records(records: list[dict]) -> tuple[list[dict], list[float]]:
    """The records of budgets with at least 3 sizes (a parabola's need), and the budgets dropped."""
    kept, dropped = [], []
    for budget, group in group_by_budget(records).items():
        if len({r["params"] for r in group}) >= 3:
            kept += group
        else:
            dropped.append(budget)
    return kept, dropped


def frontier_fits(approach: int, records: list[dict], a: argparse.Namespace, budgets: list[float],
                  bar: Any) -> dict[str, Any]:
    """Approach 1 or 2: the point fit, N_opt at `budgets`, and the bootstrap intervals."""
    dropped: list[float] = []
    if approach == 2:
        records, dropped = approach2_records(records)
        if len(group_by_budget(records)) < 2:
            raise ScalingError(f"approach 2: fewer than 2 budgets have runs of 3 sizes (dropped: "
                               f"{', '.join(f'{c:.3g}' for c in dropped)}); a parabola needs 3")
    fitted = (approach1 if approach == 1 else approach2)(records)
    out = {k: fitted[k] for k in ("a", "b", "n_coefficient", "d_coefficient")}
    out["n_opt"] = optimal_params(records, approach, budgets)
    if approach == 2:
        out["minima"] = [{k: m[k] for k in ("flops", "params", "tokens", "loss", "extrapolated")}
                         for m in fitted["minima"]]
        out["budgets_dropped"] = dropped
    out["intervals"] = bootstrap(records, counted(frontier(approach, budgets), bar), a.bootstrap, seed=a.seed,
                                 by_budget=approach == 2)
    return {**out, "resamples": a.bootstrap}


def parametric_fits(records: list[dict], a: argparse.Namespace, budgets: list[float], bar: Any) -> dict[str, Any]:
    """Approach 3: the point fit from `--starts` starts, N_opt at `budgets`, the bootstrap intervals."""
    point = fit_parametric(records, starts=a.starts)
    full = derived(point, budgets)
    quick = full if a.bootstrap_starts == a.starts else parametric(budgets, a.bootstrap_starts)(records)
    intervals = bootstrap(records, counted(parametric(budgets, a.bootstrap_starts), bar), a.bootstrap3, seed=a.seed)
    return {**{k: full[k] for k in (*CONSTANTS, "a", "b")}, "objective": point["objective"],
            "n_opt": {key(c): full[key(c)] for c in budgets}, "intervals": intervals, "resamples": a.bootstrap3,
            "resample_starts": a.bootstrap_starts,
            "resample_starts_max_rel_diff": max(abs(quick[k] / full[k] - 1) for k in full)}


def fits(records: list[dict], a: argparse.Namespace, budgets: list[float], bar: Any) -> dict[str, Any]:
    """Every fit and interval on `records`; a fit these records cannot support (ScalingError, e.g.
    no budget left with 3 sizes) is {"error": its message}, and the others still run."""
    out: dict[str, Any] = {"runs": len(records)}
    jobs = {"kaplan": lambda: {name: {"coefficient": law.coefficient, "exponent": law.exponent,
                                      "alpha": -law.exponent, "x_c": kaplan_constant(law)}
                               for name, law in kaplan_fits(records).items()},
            "approach1": lambda: frontier_fits(1, records, a, budgets, bar),
            "approach2": lambda: frontier_fits(2, records, a, budgets, bar),
            "approach3": lambda: parametric_fits(records, a, budgets, bar)}
    for name, job in jobs.items():
        try:
            out[name] = job()
        except ScalingError as err:
            out[name] = {"error": str(err)}
    return out


def seed_spread(records: list[dict]) -> dict[str, Any]:
    """Per (budget, size) with several seeds, the range of final losses. Per budget, the gap between
    the best and the second-best size (seed means) and chapter 8's noise rule: the gap counts when
    it exceeds twice its standard error, sqrt(s1^2/n1 + s2^2/n2) with s the seeds' std (n - 1)."""
    by_run: dict[tuple[float, int], list[float]] = {}
    for r in records:
        by_run.setdefault((float(r["budget"]), r["params"]), []).append(r["loss"])
    pairs = [{"budget": b, "params": n, "losses": v, "range": max(v) - min(v)}
             for (b, n), v in sorted(by_run.items()) if len(v) > 1]
    near = []
    for budget in sorted({b for b, _ in by_run}):
        ranked = sorted((float(np.mean(v)), n, v) for (b, n), v in by_run.items() if b == budget)
        if len(ranked) < 2 or min(len(ranked[0][2]), len(ranked[1][2])) < 2:
            continue  # no runner-up, or a single seed: no noise estimate
        (best, n_best, v_best), (second, n_second, v_second) = ranked[:2]
        noise = 2 * math.sqrt(np.var(v_best, ddof=1) / len(v_best) + np.var(v_second, ddof=1) / len(v_second))
        near.append({"budget": budget, "best": n_best, "runner_up": n_second, "gap": second - best,
                     "noise": noise, "within_noise": second - best <= noise})
    ranges = [p["range"] for p in pairs]
    return {"pairs": pairs, "mean": float(np.mean(ranges)) if ranges else None,
            "max": max(ranges, default=None), "near_minimum": near}


def main(argv: list[str] | None = None) -> int:
    from tqdm.auto import tqdm

    a = parse(argv)
    torch.set_num_threads(a.threads)
    start, files = time.perf_counter(), [Path(f) for f in a.runs.split(",")]
    try:
        records = [r for f in files for r in load_runs(f if f.is_absolute() else ROOT / f)]
        check_records(records, 6, "the fits")
        sweep = sorted(group_by_budget(records))
        budgets = sweep + [float(c) for c in a.beyond.split(",") if c.strip()]
        few = [r for r in records if r["epochs"] <= a.max_epochs]
        bar = tqdm(total=2 * (2 * a.bootstrap + a.bootstrap3), desc="bootstrap resamples", file=sys.stderr)
        result = {"all": fits(records, a, budgets, bar), "few_epochs": fits(few, a, budgets, bar)}
        bar.close()
        spread = seed_spread(records)
    except ScalingError as err:
        sys.exit(f"error: {err}")
    except KeyError as err:
        sys.exit(f"error: a record has no {err}: give runs.json files written by `scaling sweep` "
                 "(they keep each run's budget, seed and epochs)")
    write_json(Path(a.out), {
        "command": command_line("experiments.scaling_fits"), "created": now(), "machine": machine(),
        "config": {"runs": [str(f) for f in files], "bootstrap": a.bootstrap, "bootstrap3": a.bootstrap3,
                   "starts": a.starts, "bootstrap_starts": a.bootstrap_starts, "max_epochs": a.max_epochs,
                   "seed": a.seed, "budgets": budgets, "sweep_budgets": sweep},
        "runs_sha256": {str(f): hashlib.sha256((f if f.is_absolute() else ROOT / f).read_bytes()).hexdigest()
                        for f in files},
        "seeds": sorted({r.get("seed") for r in records}, key=str), **result,
        "seed_spread": spread, "seconds": round(time.perf_counter() - start, 1)})
    for subset, fit in result.items():
        found = [f"{fit[f'approach{i}']['a']:.3f} (approach {i})" if "a" in fit[f"approach{i}"]
                 else f"none ({fit[f'approach{i}']['error']})" for i in (1, 2, 3)]
        print(f"{subset}, {fit['runs']} runs: a = " + ", ".join(found))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
