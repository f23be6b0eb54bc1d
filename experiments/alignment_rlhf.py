"""Chapter 12's measurements: rejection sampling, PPO and DPO from the committed SFT and reward models,
and the whole pipeline `align all` from stories260K.

    OMP_NUM_THREADS=1 python -m experiments.alignment_rlhf --runs ppo:0.1:1,dpo:0.1:1     # one process
    OMP_NUM_THREADS=1 python -m experiments.alignment_rlhf --runs ppo:0:1,rejection:8:1   # beside it
    OMP_NUM_THREADS=1 python -m experiments.alignment_rlhf --all 1     # `align all --seed 1`, ~25 min
    python -m experiments.alignment_rlhf --runs dpo:0.5:1,ppo:0.1:1 --steps 1 --per-topic 1 \
        --policy P --reward R --pairs R/pairs.jsonl --out /tmp/r.json --work /tmp/r  # seconds

A run is METHOD:SETTING:SEED, each the CLI itself on the committed SFT policy (completed with
stories260K's tokenizer in --work) and, for rejection sampling and PPO, the committed reward model:

    rejection:K:S   align rejection --k K --seed S   (K@T: also --temperature T)
    ppo:BETA:S      align ppo --beta BETA --seed S --max-kl inf    (--steps, default the CLI's)
    dpo:BETA:S      align dpo --beta BETA --seed S (--steps), on the reward model's
                    own training pairs (--pairs: by default the 8,192 that
                    `experiments.alignment_reward --runs small:1` leaves in its work folder; they
                    are 10 MB, so they are not committed: run that first)

each measured on --per-topic answers per held-out topic (default 32: 256 answers, as chapter 10).
Results are merged into experiments/results/alignment/rlhf.json, one entry per (method, setting,
seed, steps), with the training records thinned for plots and four answers to show; `--all S`
writes the JSON line and every stage's record of `align all` into rlhf_all.json. Several processes
can each run their share: the files are rewritten atomically under a lock.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import subprocess
import sys
from pathlib import Path

from experiments.alignment_reward import with_tokenizer
from experiments.common import ROOT, command_line, machine, now, read_json, rounded, write_json
from llama_from_scratch import datafiles

RESULTS = ROOT / "experiments" / "results" / "alignment"
PAIRS = Path("/tmp/alignment_reward/small_seed1_pairs8192_lr0.001/pairs.jsonl")


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default="", help="METHOD:SETTING:SEED,... (module docstring)")
    p.add_argument("--all", type=int, metavar="SEED", help="run `align all --seed SEED` from stories260K")
    p.add_argument("--steps", type=int, help="PPO iterations or DPO/rejection steps (default: the CLI's)")
    p.add_argument("--per-topic", type=int, default=32, help="held-out answers per topic (default 32)")
    p.add_argument("--pairs", type=Path, default=PAIRS, help="the reward model's pairs.jsonl (for DPO)")
    p.add_argument("--policy", type=Path, default=RESULTS / "sft_policy", help="the committed SFT model")
    p.add_argument("--reward", type=Path, default=RESULTS / "reward_model", help="the committed reward model")
    p.add_argument("--out", type=Path, default=RESULTS / "rlhf.json")
    p.add_argument("--all-out", type=Path, default=RESULTS / "rlhf_all.json")
    p.add_argument("--work", type=Path, default=Path("/tmp/alignment_rlhf"))
    return p.parse_args(argv)


def align(argv: list[str]) -> dict:
    cmd = [sys.executable, "-m", "llama_from_scratch", "align", *argv]
    print(" ".join(cmd[1:]), file=sys.stderr)
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)  # progress: our stderr
    if done.returncode not in (0, 2) or not done.stdout.strip():
        raise SystemExit(f"align {argv[0]} failed with status {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def thin(records: list[dict], every: int, keys: tuple[str, ...]) -> list[dict]:
    return [{"step": r["step"], **{k: rounded(r[k], 4) for k in keys if k in r}}
            for r in records if r["step"] % every == 0 or r is records[-1] or "kl" in r and "reward" not in r]


def one_run(spec: str, args: argparse.Namespace) -> tuple[tuple, dict]:
    method, setting, seed = spec.split(":")
    policy = with_tokenizer(args.policy, args.work / "policy")
    reward = with_tokenizer(args.reward, args.work / "reward") if method != "dpo" else None
    folder = args.work / f"{method}_{setting.replace('@', '_t')}_seed{seed}_steps{args.steps}"
    common = ["--policy", str(policy), "--out", str(folder), "--seed", seed, "--overwrite",
              "--heldout-per-topic", str(args.per_topic)] + (["--steps", str(args.steps)] if args.steps else [])
    if method == "rejection":
        k, _, temperature = setting.partition("@")
        line = align(["rejection", *common, "--reward", str(reward), "--k", k,
                      *(["--temperature", temperature] if temperature else [])])
    elif method == "ppo":
        line = align(["ppo", *common, "--reward", str(reward), "--beta", setting,
                      "--max-kl", "inf"])  # over-optimisation is measured, not stopped
    elif method == "dpo":
        line = align(["dpo", *common, "--pairs", str(args.pairs), "--beta", setting])
    else:
        raise SystemExit(f"unknown method {method!r}: use rejection, ppo or dpo")
    summary = json.loads((folder / f"{method}.json").read_text())
    records = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    keys = ("reward", "kl", "true_score", "length", "loss", "accuracy", "margin", "clip_fraction")
    heldout = summary["heldout"]
    entry = {"method": method, "setting": setting, "seed": int(seed), "steps": args.steps,
             "heldout": {k: v for k, v in heldout.items() if k != "samples"},
             "samples": heldout["samples"][:4], "records": thin(records, 5 if method == "ppo" else 10, keys),
             **{k: summary[k] for k in ("best_of_k_train", "picked_true_score", "train_kl", "stopped")
                if k in summary}, "seconds": line["seconds"]}
    return (method, setting, int(seed), args.steps), entry


def merge(path: Path, lock_dir: Path, update) -> None:
    with open(lock_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        doc = update(read_json(path))
        doc.update({"commands": sorted(set(doc.get("commands", [])) | {command_line("experiments.alignment_rlhf")}),
                    "date": now(), "machine": machine()})
        write_json(path, doc)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    args.work.mkdir(parents=True, exist_ok=True)
    for spec in filter(None, args.runs.split(",")):
        key, entry = one_run(spec, args)

        def update(doc, key=key, entry=entry):
            doc = doc or {"what": "RLHF from the committed SFT policy, measured on the held-out topics", "runs": []}
            doc["runs"] = [r for r in doc["runs"] if (r["method"], r["setting"], r["seed"], r["steps"]) != key]
            doc["runs"] = sorted(doc["runs"] + [entry], key=lambda r: (r["method"], r["setting"], r["seed"],
                                                                      r["steps"] or 0))
            return doc
        merge(args.out, args.work, update)
        print(f"{spec}: true score {entry['heldout']['true_score']:.3f}, KL {entry['heldout']['kl']:.2f}",
              file=sys.stderr)
    if args.all is not None:
        out = args.work / f"all_seed{args.all}"
        cmd = [sys.executable, "-m", "llama_from_scratch", "align", "all", "--base",
               str(datafiles.path("stories260K/stories260K.bin")), "--out", str(out), "--seed", str(args.all)]
        print(" ".join(cmd[1:]), file=sys.stderr)
        line = json.loads(subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True).stdout.splitlines()[-1])
        stages = {s: json.loads((out / s / "stage.json").read_text()) for s in line["stages"]}
        for s in ("rejection", "ppo", "dpo"):
            records = [json.loads(x) for x in (out / s / "metrics.jsonl").read_text().splitlines()]
            stages[s]["records"] = thin(records, 5 if s == "ppo" else 10, ("reward", "kl", "true_score", "loss"))
        merge(args.all_out, args.work, lambda doc: {**(doc or {}), "line": line, "stages": stages,
                                                    "what": "align all from stories260K, as committed"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
