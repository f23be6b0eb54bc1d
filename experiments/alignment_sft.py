"""Chapter 10's measurement: base against SFT on the held-out requests, several SFT seeds.

    OMP_NUM_THREADS=1 python -m experiments.alignment_sft --seeds 0     # committed: ~8 min a seed
    OMP_NUM_THREADS=1 python -m experiments.alignment_sft --seeds 1,2   # beside it
    python -m experiments.alignment_sft --seeds 0 --steps 4 --stories 64 --per-topic 1 \
        --out /tmp/s.json --work /tmp/s --policy-out /tmp/p      # a smoke test, seconds

For each seed, `align sft --base stories260K.bin --seed S` (the CLI itself, its defaults: 8,000
self-instructed stories, 600 steps; about 7 minutes) into `--work`; then the base model and every
SFT model answer the same requests: each held-out topic `--per-topic` times (8 topics x 32 = 256
lines), sampled as `align sample` does (alignment/measure.py), with the same `--eval-seed` for
every model. The issue's targets, checked per seed: the mean `topic` term at least 3x the base's,
and the mean true score no lower than the base's.

Writes experiments/results/alignment/sft.json (base and per-seed summaries, ratios, the spread
over seeds, a few answers side by side for the chapter), adding each seed's run to what the file
holds (under a lock: `--seeds 0` and `--seeds 1,2` may run side by side), and copies seed 0's SFT
model, without its tokenizer (the book never commits a copy of a data file), to
experiments/results/alignment/sft_policy/ (1 MB): chapters 11 and 12 start from it
(`notebook.results.committed_folder`, with stories260K's tokenizer beside).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from experiments.common import ROOT, command_line, copy_files, machine, now, write_json
from llama_from_scratch import datafiles
from llama_from_scratch.alignment.measure import answer_rows, requests, summarize
from llama_from_scratch.alignment.sampler import load_tokenizer_for
from llama_from_scratch.alignment.task import load_topics
from llama_from_scratch.checkpoints.load import load_model

RESULTS = ROOT / "experiments" / "results" / "alignment"
KEEP = ("checkpoint.pt", "run.json", "sft.json", "metrics.jsonl")  # not the tokenizer: a data file
SIDE_BY_SIDE = 2  # answers per held-out topic kept for the chapter's side-by-side table


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2", help="SFT seeds (default 0,1,2)")
    p.add_argument("--steps", type=int, default=None, help="passed to align sft (default: its own, 300)")
    p.add_argument("--stories", type=int, default=None, help="passed to align sft (default: its own, 2000)")
    p.add_argument("--min-mentions", type=int, default=None, help="passed to align sft (default: its own)")
    p.add_argument("--topics", default=None, help="passed to align sft (default: its own)")
    p.add_argument("--lr", default=None, help="passed to align sft (default: its own)")
    p.add_argument("--data", default=None, help="passed to align sft (default: self-instruct)")
    p.add_argument("--per-topic", type=int, default=32, help="answers per held-out topic (default 32)")
    p.add_argument("--eval-seed", type=int, default=0, help="seeds the measured answers (default 0)")
    p.add_argument("--out", type=Path, default=RESULTS / "sft.json")
    p.add_argument("--policy-out", default=str(RESULTS / "sft_policy"),
                   help="where the first seed's model goes ('' for nowhere)")
    p.add_argument("--work", type=Path, default=Path("/tmp/alignment_sft"), help="SFT runs (not committed)")
    return p.parse_args(argv)


def run_sft(base: Path, out: Path, seed: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, "-m", "llama_from_scratch", "align", "sft", "--base", str(base), "--out", str(out),
           "--seed", str(seed), "--overwrite"]
    cmd += ["--steps", str(args.steps)] if args.steps else []
    cmd += ["--stories", str(args.stories)] if args.stories else []
    cmd += ["--min-mentions", str(args.min_mentions)] if args.min_mentions else []
    cmd += ["--topics", args.topics] if args.topics else []
    cmd += ["--lr", args.lr] if args.lr else []
    cmd += ["--data", args.data] if args.data else []
    print(" ".join(cmd[1:]), file=sys.stderr)
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)  # progress: our stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(checkpoint: Path, asked: list[str], seed: int) -> tuple[dict, list[dict]]:
    model = load_model(checkpoint, dtype=torch.float32)
    tokenizer = load_tokenizer_for(checkpoint, model.args.vocab_size,
                                   datafiles.path("stories260K/tok512.bin"))
    rows = answer_rows(model, tokenizer, asked, seed, progress=True)
    return summarize(rows), rows


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    base = datafiles.path("stories260K/stories260K.bin")
    heldout = list(load_topics().heldout)
    asked = requests(heldout, args.per_topic)
    start = time.perf_counter()
    base_summary, base_rows = measure(base, asked, args.eval_seed)
    print(f"base: topic {base_summary['topic']:.3f}, true score {base_summary['true_score']:.3f}", file=sys.stderr)
    runs = []
    for seed in seeds:
        folder = args.work / f"seed{seed}"
        sft = run_sft(base, folder, seed, args)
        summary, rows = measure(folder, asked, args.eval_seed)
        ratio = summary["topic"] / base_summary["topic"]
        runs.append({"seed": seed, "sft": {k: sft[k] for k in ("examples", "first_loss", "final_loss", "data",
                                                               "seconds")},
                     "heldout": summary, "topic_ratio": ratio,
                     "meets_topic_target": ratio >= 3.0,
                     "meets_score_target": summary["true_score"] >= base_summary["true_score"]})
        print(f"seed {seed}: topic {summary['topic']:.3f} ({ratio:.2f}x), true score {summary['true_score']:.3f}",
              file=sys.stderr)
        samples = []
        if seed == 0:  # the committed policy and the side-by-side answers are seed 0's
            samples = side_by_side(heldout, base_rows, rows)
            if args.policy_out:
                copy_files(folder, KEEP, Path(args.policy_out))
        save(args, heldout, base_summary, run=runs[-1], samples=samples, seconds=time.perf_counter() - start)
    doc = json.loads(args.out.read_text())
    print(json.dumps({"out": str(args.out), "topic_ratio": [r["topic_ratio"] for r in doc["runs"]],
                      "true_score": [r["heldout"]["true_score"] for r in doc["runs"]],
                      "base_true_score": base_summary["true_score"]}))
    return 0


def save(args: argparse.Namespace, heldout: list[str], base: dict, run: dict, samples: list[dict],
         seconds: float) -> None:
    """Add `run` to --out (replacing its seed's), under a lock, so that processes running other
    seeds of the same setup can share one file; a file from another setup is an error."""
    setup = {"heldout_topics": heldout, "per_topic": args.per_topic, "eval_seed": args.eval_seed,
             "sft_options": {k: getattr(args, k) for k in ("steps", "stories", "min_mentions", "topics", "lr",
                                                           "data")}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    with open(args.work / ".results.lock", "w") as lock:  # the lock stays out of the repository
        fcntl.flock(lock, fcntl.LOCK_EX)
        doc = json.loads(args.out.read_text()) if args.out.exists() else {**setup, "runs": []}
        if {k: doc.get(k) for k in setup} != setup:
            raise SystemExit(f"{args.out} holds runs of another setup; delete it or pass another --out")
        runs = sorted([r for r in doc["runs"] if r["seed"] != run["seed"]] + [run], key=lambda r: r["seed"])
        ratios = [r["topic_ratio"] for r in runs]
        scores = [r["heldout"]["true_score"] for r in runs]
        doc.update({
            "what": "base (stories260K) against SFT on held-out requests, true score terms (alignment/measure.py)",
            "commands": sorted(set(doc.get("commands", [])) | {command_line("experiments.alignment_sft")}),
            "date": now(), "machine": machine(), "base": base, "runs": runs,
            "spread": {"topic_ratio": {"mean": float(np.mean(ratios)), "min": min(ratios), "max": max(ratios)},
                       "true_score": {"mean": float(np.mean(scores)), "min": min(scores), "max": max(scores)}},
            "samples": samples or doc.get("samples", []),
            "seconds": round(doc.get("seconds", 0) + seconds, 1)})
        write_json(args.out, doc)


def side_by_side(topics: list[str], base_rows: list[dict], sft_rows: list[dict]) -> list[dict]:
    """The first SIDE_BY_SIDE answers per topic from both models (the same lines, so the same draws)."""
    keep = []
    for topic in topics:
        lines = [i for i, r in enumerate(base_rows) if r["topic"] == topic][:SIDE_BY_SIDE]
        for i in lines:
            keep.append({"topic": topic, "line": i,
                         **{name: {"response": rows[i]["response"], "mentions": rows[i]["mentions"],
                                   "true_score": rows[i]["terms"]["true_score"]}
                            for name, rows in (("base", base_rows), ("sft", sft_rows))}})
    return keep


if __name__ == "__main__":
    sys.exit(main())
