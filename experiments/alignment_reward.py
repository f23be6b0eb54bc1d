"""Chapter 11's measurement: reward models with and without LLaMA 2's margin, several seeds.

    OMP_NUM_THREADS=1 python -m experiments.alignment_reward --runs small:1,none:1   # one process
    OMP_NUM_THREADS=1 python -m experiments.alignment_reward --runs small:2,none:2   # beside it
    python -m experiments.alignment_reward --runs small:1 --pairs 32 --heldout-pairs 16 \
        --out /tmp/r.json --work /tmp/r --model-out /tmp/rm         # a smoke test, seconds

Each run is `align reward --policy POLICY --margin M --seed S` (the CLI itself: 8,192 training
pairs sampled from the SFT policy on the training topics, labelled by the simulated labeler, one
epoch) measured on `--heldout-pairs` (512) pairs of the held-out topics, the same pairs for
every run (`--eval-seed 0`). POLICY is the committed SFT model (experiments/alignment_sft.py),
completed with stories260K's tokenizer in `--work`. About 20 minutes a run on one thread.

Results go into experiments/results/alignment/reward.json, one entry per (margin, seed, pairs, lr),
merged
with what is already there, so several processes can each run their share (each rewrites the
file atomically under a lock). The reward model of `--keep` (default small:1) is copied, without
its 10 MB of sampled pairs and without the tokenizer, to experiments/results/alignment/
reward_model/ (1 MB) for chapters 11 and 12.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import shutil
import subprocess
import sys
from pathlib import Path

from experiments.common import ROOT, command_line, copy_files, machine, now, read_json, rounded, write_json
from llama_from_scratch import datafiles

RESULTS = ROOT / "experiments" / "results" / "alignment"
KEEP = ("reward.pt", "reward.json", "metrics.jsonl")


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default="small:1,none:1", help="margin:seed,... (default small:1,none:1)")
    p.add_argument("--pairs", type=int, default=8192, help="training pairs per run (default 8192)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate per run (default 1e-3)")
    p.add_argument("--heldout-pairs", type=int, default=512, help="held-out pairs (default 512)")
    p.add_argument("--policy", type=Path, default=RESULTS / "sft_policy", help="the committed SFT model")
    p.add_argument("--keep", default="small:1", help="the run whose model is committed")
    p.add_argument("--out", type=Path, default=RESULTS / "reward.json")
    p.add_argument("--model-out", type=Path, default=RESULTS / "reward_model")
    p.add_argument("--work", type=Path, default=Path("/tmp/alignment_reward"))
    return p.parse_args(argv)


def with_tokenizer(folder: Path, dest: Path) -> Path:
    """A copy of a committed folder (the SFT policy, the reward model) at `dest`, completed with
    stories260K's tokenizer, which is a data file and so is not committed: what `align` reads."""
    if not (dest / "tokenizer.bin").is_file():
        shutil.copytree(folder, dest, dirs_exist_ok=True)
        shutil.copy2(datafiles.path("stories260K/tok512.bin"), dest / "tokenizer.bin")
    return dest


def run(policy: Path, out: Path, margin: str, seed: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, "-m", "llama_from_scratch", "align", "reward", "--policy", str(policy),
           "--out", str(out), "--margin", margin, "--seed", str(seed), "--pairs", str(args.pairs),
           "--heldout-pairs", str(args.heldout_pairs), "--lr", str(args.lr), "--overwrite"]
    print(" ".join(cmd[1:]), file=sys.stderr)
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)  # progress: our stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def curve(records: list[dict], every: int) -> list[list[float]]:
    """[[last step, mean loss, mean batch accuracy], ...] over each `every` steps (training batches)."""
    return [[chunk[-1]["step"], rounded(sum(r["loss"] for r in chunk) / len(chunk), 4),
             rounded(sum(r["accuracy"] for r in chunk) / len(chunk), 4)]
            for chunk in (records[i:i + every] for i in range(0, len(records), every))]


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    args.work.mkdir(parents=True, exist_ok=True)
    policy = with_tokenizer(args.policy, args.work / "policy")
    for spec in args.runs.split(","):
        margin, seed = spec.split(":")
        folder = args.work / f"{margin}_seed{seed}_pairs{args.pairs}_lr{args.lr:g}"
        summary = run(policy, folder, margin, int(seed), args)
        saved = json.loads((folder / "reward.json").read_text())
        records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        key = (margin, int(seed), args.pairs, args.lr)
        entry = {"margin": margin, "seed": int(seed), "pairs": args.pairs, "lr": args.lr,
                 "metrics": saved["metrics"], "counts": saved["counts"],
                 "calibration": saved["calibration"], "settings": saved["settings"],
                 "curve": curve(records, 16),
                 "seconds": summary["seconds"]}
        with open(args.work / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            doc = read_json(args.out) or {"what": "reward models on the committed SFT policy's pairs "
                                                  "(align reward), held-out pairwise accuracy", "runs": []}
            doc["runs"] = [r for r in doc["runs"] if (r["margin"], r["seed"], r["pairs"], r["lr"]) != key] + [entry]
            doc["runs"].sort(key=lambda r: (r["pairs"], r["lr"], r["margin"], r["seed"]))
            doc.update({"commands": sorted(set(doc.get("commands", [])) | {command_line(
                "experiments.alignment_reward")}), "date": now(), "machine": machine()})
            write_json(args.out, doc)
        if spec == args.keep and args.pairs == 8192 and args.lr == 1e-3 and args.model_out:
            copy_files(folder, KEEP, args.model_out)
        print(f"{spec}: held-out accuracy {summary['accuracy']:.3f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
