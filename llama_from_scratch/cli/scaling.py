"""`python -m llama_from_scratch scaling`: compute-optimal sizes, scaling-law fits, the IsoFLOP sweep.

    scaling optimum --flops C [--law chinchilla|epoch]
        -> {"params": N_opt, "tokens": D_opt, "loss": L(N_opt, D_opt)}
    scaling fit --runs FILE.json [--approach 1|2|3] [--bootstrap N] [--seed S]
        -> approach 3: {"E", "A", "B", "alpha", "beta"}; 1 and 2: {"a", "b"} (N_opt ~ C^a, D_opt ~ C^b);
           with --bootstrap, also {"intervals": {name: [2.5%, 97.5%]}, "bootstrap": N, "skipped": K}
           (K resamples whose fit failed, e.g. a budget left with too few sizes, are not in the intervals)
    scaling sweep --data TEXT --out DIR [--budgets 1e11,3e11,1e12,3e12] [--resume] [--seed S]
        -> DIR/runs.json as runs finish; stdout: one line {"runs": count, "out": "DIR/runs.json"}
    scaling corpus --out FILE
        -> FILE: this Python's standard-library source as one text (a larger corpus for `sweep`);
           stdout: {"python": version, "files": count, "bytes": size, "out": FILE}

Each prints one JSON line on stdout; progress goes to stderr; bad input exits with status 2.
`fit` reads a JSON list of records `{"params": N, "tokens": D, "flops": C, "loss": L}` (N =
non-embedding parameters, C = 6 N D); approach 1 also uses each record's `"curve"` (`[[tokens
seen, loss], ...]`) where present, else only the final points.

Chapter: scaling_laws.
"""

from __future__ import annotations

import argparse
import json
import math

from llama_from_scratch.cli.main import CLIError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    opt = sub.add_parser("optimum", help="the compute-optimal N and D of a published law for a budget")
    opt.add_argument("--flops", required=True, type=float, metavar="C", help="training compute, FLOPs")
    opt.add_argument("--law", default="chinchilla", choices=("chinchilla", "epoch"),
                     help="Hoffmann et al. 2022 or Besiroglu et al. 2024 (Epoch AI's refit)")
    fit = sub.add_parser("fit", help="fit a scaling law to a sweep's records")
    fit.add_argument("--runs", required=True, metavar="FILE.json", help="a JSON list of run records")
    fit.add_argument("--approach", type=int, default=3, choices=(1, 2, 3), help="Chinchilla's approach 1, 2 or 3")
    fit.add_argument("--bootstrap", type=int, metavar="N", help="add 95%% intervals from N resamples")
    fit.add_argument("--seed", type=int, default=0, help="the bootstrap's seed")
    sweep = sub.add_parser("sweep", help="train an IsoFLOP grid of tiny LLaMAs (resumable)")
    sweep.add_argument("--data", required=True, metavar="TEXT", help="a UTF-8 text file (the last 10%% validates)")
    sweep.add_argument("--out", required=True, metavar="DIR", help="where sweep.json and runs.json go")
    sweep.add_argument("--budgets", default="1e11,3e11,1e12,3e12", help="comma-separated FLOP budgets")
    sweep.add_argument("--resume", action="store_true", help="finish the sweep already in DIR")
    sweep.add_argument("--seed", type=int, default=0, help="initialisation and batch-order seed")
    corpus = sub.add_parser("corpus", help="write the Python standard library's source as one text file")
    corpus.add_argument("--out", required=True, metavar="FILE", help="the text file to write")


def run(args: argparse.Namespace) -> int:
    from llama_from_scratch.scaling.errors import ScalingError

    try:
        result = {"optimum": _optimum, "fit": _fit, "sweep": _sweep, "corpus": _corpus}[args.action](args)
    except ScalingError as err:
        raise CLIError(str(err)) from None
    print(json.dumps(result), flush=True)
    return 0


def _optimum(args: argparse.Namespace) -> dict[str, float]:
    from llama_from_scratch.scaling.laws import LAWS, compute_optimal

    law = LAWS[args.law]
    params, tokens = compute_optimal(law, args.flops)
    return {"params": params, "tokens": tokens, "loss": float(law.loss(params, tokens))}


def _fit(args: argparse.Namespace) -> dict[str, object]:
    from llama_from_scratch.scaling.bootstrap import bootstrap
    from llama_from_scratch.scaling.isoflop import approach1, approach2
    from llama_from_scratch.scaling.parametric import fit_parametric
    from llama_from_scratch.scaling.records import load_runs

    if args.bootstrap is not None and args.bootstrap < 2:
        raise CLIError(f"--bootstrap needs at least 2 resamples, got {args.bootstrap}")
    records = load_runs(args.runs)
    fitter, keys = {1: (approach1, ("a", "b")), 2: (approach2, ("a", "b")),
                    3: (fit_parametric, ("E", "A", "B", "alpha", "beta"))}[args.approach]
    point = fitter(records)
    result: dict[str, object] = {k: float(point[k]) for k in keys}
    if args.bootstrap:
        # approach 2 resamples within each budget, so every budget keeps enough sizes for its parabola
        intervals = bootstrap(records, fitter, args.bootstrap, seed=args.seed, keys=keys, by_budget=args.approach == 2)
        result["intervals"] = {k: [float(intervals[k][0]), float(intervals[k][1])] for k in keys}
        result["bootstrap"] = args.bootstrap
        result["skipped"] = int(intervals["skipped"])  # resamples whose fit failed: not in the intervals
    if not all(math.isfinite(v) for k, v in result.items() if k in keys):
        raise CLIError(f"the approach {args.approach} fit did not converge: {result}")
    return result


def _sweep(args: argparse.Namespace) -> dict[str, object]:
    from llama_from_scratch.scaling.grid import parse_budgets
    from llama_from_scratch.scaling.sweep import run_sweep

    records = run_sweep(args.data, args.out, parse_budgets(args.budgets), seed=args.seed, resume=args.resume,
                        step_progress=True)
    return {"runs": len(records), "out": f"{args.out.rstrip('/')}/runs.json"}


def _corpus(args: argparse.Namespace) -> dict[str, object]:
    from llama_from_scratch.scaling.corpus import write_stdlib_corpus

    try:
        return {**write_stdlib_corpus(args.out), "out": args.out}
    except OSError as err:
        raise CLIError(f"cannot write {args.out}: {err.strerror}; choose another --out") from None
