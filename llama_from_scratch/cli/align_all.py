"""`python -m llama_from_scratch align all`: chapters 10 to 12 in one command, resumable stage by stage.

    align all --base CKPT [--tokenizer FILE] --out DIR [--seed S] [--overwrite]
        -> DIR/sft, DIR/reward, DIR/rejection, DIR/ppo, DIR/dpo (each what its own `align` action
           writes) and one JSON line on stdout: {"out", "base", "seed", "stages": {stage: {...}},
           "resumed": [stages found finished], "seconds"}; per stage the held-out mean true score,
           its sd and standard error, and "kl" to the SFT model (0 for the SFT model itself);
           for "reward" the held-out pairwise accuracy instead

Each stage is the very `align` action of its name, run in this process with the options in
STAGES: lighter SFT and reward stages than those actions' own defaults (2,000 stories and 300
steps instead of 8,000 and 600; 4,096 pairs instead of 8,192), so that the whole pipeline takes
about 25 minutes on one thread of a 2-core CPU. With 2,048 pairs the reward model was no better
than chance on held-out pairs (51%), and rejection sampling and PPO then learned nothing useful. A stage is
finished when DIR/<stage>/stage.json exists: it is written atomically after the stage's folder
(itself renamed into place whole) and its measurement. A finished stage is never redone; an
unfinished one (killed mid-way) is started again from scratch, its half-made hidden folder removed.

DIR must be missing, empty, or an `align all` folder of the same --base, --tokenizer and --seed
(DIR/all.json says which); --overwrite replaces an `align all` folder and nothing else.
Errors: exit status 2 and one line on stderr, as in every `align` action.

Chapter: rlhf.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import sys
import time
from pathlib import Path

from llama_from_scratch.cli.main import CLIError

ALL_FILE, STAGE_FILE = "all.json", "stage.json"
# stage -> the `align` action's arguments after the ones every stage gets (--out, --seed, inputs)
STAGES = {
    "sft": ["--stories", "2000", "--steps", "300"],
    "reward": ["--pairs", "4096"],
    "rejection": [],
    "ppo": [],
    "dpo": [],
}
HELDOUT_PER_TOPIC = 16  # answers per held-out topic in each stage's measurement (128 in all)


def add_all_parser(sub: argparse._SubParsersAction) -> None:
    every = sub.add_parser("all", help="SFT, reward model, rejection sampling, PPO and DPO, stage by stage",
                           description="Run the whole alignment pipeline into DIR; a killed run resumes.")
    every.add_argument("--base", required=True, metavar="CKPT", help="the base checkpoint (as for `align sft`)")
    every.add_argument("--tokenizer", metavar="FILE", help="as for `align sft`")
    every.add_argument("--out", required=True, metavar="DIR", help="the pipeline's folder (new, empty, or resumed)")
    every.add_argument("--seed", type=int, default=1, metavar="S", help="every stage's --seed (default 1)")
    every.add_argument("--overwrite", action="store_true", help="replace an existing `align all` folder")


def stage_args(stage: str, out: Path, args: argparse.Namespace) -> list[str]:
    folder, sft = out / stage, out / "sft"
    inputs = {"sft": ["--base", str(args.base)] + (["--tokenizer", str(args.tokenizer)] if args.tokenizer else []),
              "reward": ["--policy", str(sft)],
              "rejection": ["--policy", str(sft), "--reward", str(out / "reward")],
              "ppo": ["--policy", str(sft), "--reward", str(out / "reward")],
              "dpo": ["--policy", str(sft), "--pairs", str(out / "reward" / "pairs.jsonl")]}[stage]
    measure = ["--heldout-per-topic", str(HELDOUT_PER_TOPIC)] if stage not in ("sft", "reward") else []
    return [stage, *inputs, "--out", str(folder), "--seed", str(args.seed), "--overwrite", *measure, *STAGES[stage]]


def check_all_out(out: Path, identity: dict, overwrite: bool) -> None:
    """Prepare DIR (module docstring); CLIError when it holds anything else."""
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} is a file, not a folder; give a folder for the pipeline")
    if out.is_dir() and any(out.iterdir()):
        if not (out / ALL_FILE).is_file():
            raise CLIError(f"--out {out} exists, is not empty and is not an `align all` folder (no {ALL_FILE}); "
                           "give another folder")
        if overwrite:
            shutil.rmtree(out)
        else:
            try:
                found = json.loads((out / ALL_FILE).read_text())
            except (OSError, ValueError) as err:
                raise CLIError(f"--out {out}: {ALL_FILE} is unreadable ({err}); pass --overwrite to start "
                               "again") from None
            if found != identity:
                changed = ", ".join(f"{k}: {found.get(k)!r} -> {v!r}" for k, v in identity.items() if found.get(k) != v)
                raise CLIError(f"--out {out} holds a pipeline run with other settings ({changed}); resume it with "
                               "the same options, pass --overwrite to start again, or give another folder")
    out.mkdir(parents=True, exist_ok=True)
    for stale in list(out.glob(".*.tmp")) + list(out.glob(".*.old")):  # left by a killed stage
        shutil.rmtree(stale, ignore_errors=True)
    if not (out / ALL_FILE).is_file():
        from llama_from_scratch.alignment.policy_dir import json_bytes
        from llama_from_scratch.training.checkpoint import atomic_write

        atomic_write(out / ALL_FILE, lambda f: f.write(json_bytes(identity)))


def run_stage(stage: str, out: Path, args: argparse.Namespace) -> dict:
    """Run one stage's `align` action in this process; its JSON line, parsed."""
    from llama_from_scratch.cli.align import ACTIONS, add_arguments

    parser = argparse.ArgumentParser(prog="align")
    add_arguments(parser)
    argv = stage_args(stage, out, args)
    print(f"== stage {stage}: align {' '.join(argv)}", file=sys.stderr)
    stage_ns = parser.parse_args(argv)
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        ACTIONS[stage](stage_ns)
    return json.loads(captured.getvalue().strip().splitlines()[-1])


def stage_result(stage: str, line: dict, out: Path) -> tuple[dict, list[dict]]:
    """What the final JSON line reports for a stage, and the first held-out answers (for policies)."""
    keys = ("true_score", "true_score_sd", "true_score_se", "kl", "kl_se", "topic", "sentiment", "repetition",
            "brevity", "answers")
    if stage == "reward":
        return {k: line[k] for k in ("accuracy", "accuracy_by_strength", "correlation", "train_accuracy")}, []
    if stage == "sft":
        import torch

        from llama_from_scratch.alignment.policy_eval import measure_policy
        from llama_from_scratch.alignment.sampler import load_tokenizer_for
        from llama_from_scratch.checkpoints.load import load_model

        model = load_model(out / "sft", dtype=torch.float32)
        tokenizer = load_tokenizer_for(out / "sft", model.args.vocab_size)
        print("measuring the SFT model on the held-out topics", file=sys.stderr)
        heldout = measure_policy(model, model, tokenizer, HELDOUT_PER_TOPIC)
        return {k: heldout[k] for k in keys}, heldout["samples"]
    samples = json.loads((out / stage / f"{stage}.json").read_text())["heldout"]["samples"]
    return {k: line["heldout"][k] for k in keys}, samples


def run_all(args: argparse.Namespace) -> int:
    from llama_from_scratch.alignment.policy_dir import json_bytes
    from llama_from_scratch.training.checkpoint import atomic_write

    start = time.perf_counter()
    if args.seed < 0:
        raise CLIError(f"--seed must be >= 0, got {args.seed}")
    if not Path(args.base).exists():
        raise CLIError(f"--base {args.base} does not exist; give a checkpoint (e.g. stories260K/stories260K.bin)")
    out = Path(args.out).absolute()
    identity = {"base": str(Path(args.base).absolute()), "tokenizer": str(Path(args.tokenizer).absolute())
                if args.tokenizer else None, "seed": args.seed, "stages": STAGES,
                "heldout_per_topic": HELDOUT_PER_TOPIC}
    check_all_out(out, identity, args.overwrite)
    stages, resumed = {}, []
    for stage in STAGES:
        done = out / stage / STAGE_FILE
        if done.is_file():
            stages[stage] = json.loads(done.read_text())["result"]
            resumed.append(stage)
            print(f"== stage {stage}: finished earlier, not redone", file=sys.stderr)
            continue
        line = run_stage(stage, out, args)
        stages[stage], samples = stage_result(stage, line, out)
        record = {"stage": stage, "line": line, "result": stages[stage], "samples": samples}
        atomic_write(done, lambda f, r=record: f.write(json_bytes(r)))
    print(json.dumps({"out": str(out), "base": str(args.base), "seed": args.seed, "stages": stages,
                      "resumed": resumed, "seconds": round(time.perf_counter() - start, 1)}))
    return 0
