"""Issue 12, the RLHF actions end to end on stories260K with tiny settings: `align rejection`, `align
ppo`, `align dpo` and `align all` (their JSON lines, their folders loading as policies, held-out
topics never trained on, a run resumed stage by stage) and their exit-2 refusals (a policy given as
the reward model and the reverse, a reward model of another tokenizer, non-finite rewards keeping
the last good policy)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from llama_from_scratch import datafiles
from llama_from_scratch.alignment.reward_dir import load_reward_model, save_reward
from llama_from_scratch.alignment.sft import SFTSettings
from llama_from_scratch.alignment.sft_dir import save_sft
from llama_from_scratch.alignment.task import load_topics
from llama_from_scratch.checkpoints.load import load_model
from llama_from_scratch.cli import align_all
from llama_from_scratch.cli.main import main
from stories_fixtures import bin_path, model, tok  # noqa: F401 - fixtures

MEASURE = ("--heldout-per-topic", "1")


def run(capsys, *argv):
    code = main(["align", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory, model):
    out = tmp_path_factory.mktemp("rlhf") / "sft"
    save_sft(out, model, datafiles.path("stories260K/tok512.bin"), SFTSettings(steps=1),
             [{"step": 1, "lr": 1e-3, "loss": 1.0, "grad_norm": 1.0}], {"base": "stories260K"})
    return out


@pytest.fixture(scope="module")
def reward_dir(sft_dir):
    out = sft_dir.parent / "reward"
    code = main(["align", "reward", "--policy", str(sft_dir), "--out", str(out), "--pairs", "16", "--heldout-pairs",
                 "8", "--max-new-tokens", "24", "--batch-size", "4"])
    assert code == 0
    return out


def same_weights(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_align_dpo_trains_on_training_pairs_only_and_saves_a_policy(capsys, tmp_path, sft_dir, reward_dir, tok):
    out = tmp_path / "dpo"
    code, stdout, stderr = run(capsys, "dpo", "--policy", str(sft_dir), "--pairs", str(reward_dir / "pairs.jsonl"),
                               "--out", str(out), "--steps", "3", *MEASURE)
    assert code == 0, stderr
    line = json.loads(stdout)
    assert line["method"] == "dpo" and line["pair_counts"]["heldout"] == 8 and line["steps_run"] == 3
    assert line["heldout"]["answers"] == len(load_topics().heldout) and line["heldout"]["kl"] >= 0
    trained = load_model(out)  # what `generate` and `chat --checkpoint DIR` load
    assert not same_weights(trained, load_model(sft_dir))
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3
    code, stdout, _ = run(capsys, "sample", "--checkpoint", str(out), "--prompts", str(write_prompts(tmp_path)),
                          "--max-new-tokens", "8")
    assert code == 0 and json.loads(stdout.splitlines()[0])["topic"] == "ball"
    assert main(["generate", "--checkpoint", str(out), "--prompt", "Once", "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out.strip()  # `generate` finds the folder's own tokenizer.bin


def write_prompts(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"topic": "ball"}\n')
    return path


def test_align_dpo_refuses_held_out_pairs(capsys, tmp_path, sft_dir, reward_dir):
    rows = [json.loads(x) for x in (reward_dir / "pairs.jsonl").read_text().splitlines()]
    only_heldout = tmp_path / "heldout.jsonl"
    only_heldout.write_text("".join(json.dumps(r) + "\n" for r in rows if r["split"] == "heldout"))
    code, stdout, stderr = run(capsys, "dpo", "--policy", str(sft_dir), "--pairs", str(only_heldout),
                               "--out", str(tmp_path / "o"))
    assert code == 2 and stdout == "" and "no training pair" in stderr
    disguised = dict(next(r for r in rows if r["split"] == "heldout"), split="train")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rows[0]) + "\n" + json.dumps(disguised) + "\n")
    code, _, stderr = run(capsys, "dpo", "--policy", str(sft_dir), "--pairs", str(bad), "--out", str(tmp_path / "o"))
    assert code == 2 and "line 2" in stderr and "held out" in stderr, stderr
    assert not (tmp_path / "o").exists()


def test_align_ppo_runs_iterations_and_records_reward_kl_and_true_score(capsys, tmp_path, sft_dir, reward_dir):
    out = tmp_path / "ppo"
    argv = ["ppo", "--policy", str(sft_dir), "--reward", str(reward_dir), "--out", str(out), "--steps", "2",
            "--rollouts", "4", "--lr", "1e-3", *MEASURE]
    code, stdout, stderr = run(capsys, *argv, "--max-kl", "inf")
    assert code == 0, stderr
    line = json.loads(stdout)
    assert line["iterations"] == line["updates_kept"] == 2 and set(line["final"]) == {"reward", "kl", "true_score"}
    assert line["settings"]["max_kl"] == "inf"  # strict JSON: no Infinity
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2] and records[0]["kl"] == pytest.approx(0, abs=1e-5)
    assert records[1]["kl"] > 0.5  # the first update moved the policy away from the SFT model
    assert not same_weights(load_model(out), load_model(sft_dir))
    # the same run with a KL budget of 0.5 nats: iteration 2's batch passes it, so the weights it was
    # sampled from (one update) are dropped and the last ones within the budget (SFT's) are kept
    code, stdout, stderr = run(capsys, *argv, "--max-kl", "0.5", "--overwrite")
    assert code == 0 and json.loads(stdout)["updates_kept"] == 0, stderr
    assert same_weights(load_model(out), load_model(sft_dir))


def test_align_ppo_stops_on_a_non_finite_reward_and_keeps_the_last_good_policy(capsys, tmp_path, sft_dir,
                                                                               reward_dir):
    broken = load_reward_model(reward_dir)
    with torch.no_grad():
        broken.head.bias.fill_(float("nan"))
    nan_dir = save_reward(tmp_path / "nan_reward", broken, sft_dir, {}, [], [])
    out = tmp_path / "ppo"
    code, stdout, stderr = run(capsys, "ppo", "--policy", str(sft_dir), "--reward", str(nan_dir), "--out", str(out),
                               "--steps", "2", "--rollouts", "4", *MEASURE)
    assert code == 2 and "iteration 1" in stderr and "non-finite" in stderr, stderr
    assert json.loads(stdout)["stopped"].startswith("PPO stopped at iteration 1")
    assert same_weights(load_model(out), load_model(sft_dir))  # the last good policy: the SFT model


def test_align_rejection_picks_by_reward_and_fine_tunes(capsys, tmp_path, sft_dir, reward_dir):
    out = tmp_path / "rej"
    code, stdout, stderr = run(capsys, "rejection", "--policy", str(sft_dir), "--reward", str(reward_dir),
                               "--out", str(out), "--prompts", "4", "--k", "3", "--steps", "2", *MEASURE)
    assert code == 0, stderr
    line = json.loads(stdout)
    curve = line["best_of_k_train"]
    assert curve["k"] == [1, 2, 3] and line["examples"] == 4
    assert curve["oracle_pick"][0] == pytest.approx(curve["reward_pick"][0])  # K = 1: no choice to make
    assert curve["oracle_pick"] == sorted(curve["oracle_pick"])  # the oracle's best-of-K never falls
    assert curve["oracle_pick"][-1] >= curve["reward_pick"][-1]
    assert load_model(out).args == load_model(sft_dir).args


@pytest.mark.parametrize("action, flags, says", [
    ("ppo", ["--reward", "{sft}"], "is a policy"),
    ("rejection", ["--reward", "{sft}"], "is a policy"),
    ("ppo", ["--policy", "{reward}"], "is a reward-model directory"),
    ("ppo", ["--reward", "{other_tok}"], "another tokenizer"),
    ("ppo", ["--out", "{full}"], "not empty"),
    ("ppo", ["--out", "{reward}", "--overwrite"], "refusing to delete"),
    ("ppo", ["--beta", "-1"], "bad option"),
    ("dpo", ["--steps", "0"], "bad option"),
    ("rejection", ["--k", "0"], "bad option"),
    ("ppo", ["--heldout-per-topic", "0"], "--heldout-per-topic"),
])
def test_rlhf_bad_input_exits_2(capsys, tmp_path, sft_dir, reward_dir, action, flags, says):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    other = tmp_path / "other_tok"
    shutil.copytree(reward_dir, other)
    (other / "tokenizer.bin").write_bytes((other / "tokenizer.bin").read_bytes()[:-8] + b"\0" * 8)
    values = {"sft": str(sft_dir), "reward": str(reward_dir), "other_tok": str(other), "full": str(tmp_path / "full")}
    given = [f.format(**values) for f in flags]
    base = {"--policy": str(sft_dir), "--out": str(tmp_path / "o")}
    base.update({"dpo": {"--pairs": str(reward_dir / "pairs.jsonl")}}.get(action, {"--reward": str(reward_dir)}))
    argv = [x for k, v in base.items() if k not in given for x in (k, v)]
    code, stdout, stderr = run(capsys, action, *argv, *given)
    assert code == 2 and stdout == "" and says in stderr, stderr
    assert not (tmp_path / "o").exists()


TINY = {"sft": ["--stories", "24", "--steps", "2", "--min-mentions", "1", "--early-words", "0", "--min-score", "-5"],
        "reward": ["--pairs", "8", "--heldout-pairs", "8", "--max-new-tokens", "16", "--batch-size", "4"],
        "rejection": ["--prompts", "2", "--k", "2", "--steps", "1"],
        "ppo": ["--steps", "1", "--rollouts", "2"],
        "dpo": ["--steps", "1"]}


def test_align_all_runs_every_stage_and_resumes_only_what_is_unfinished(capsys, tmp_path, bin_path, monkeypatch):
    monkeypatch.setattr(align_all, "STAGES", TINY)
    monkeypatch.setattr(align_all, "HELDOUT_PER_TOPIC", 1)
    out = tmp_path / "all"
    code, stdout, stderr = run(capsys, "all", "--base", str(bin_path), "--out", str(out), "--seed", "2")
    assert code == 0, stderr
    line = json.loads(stdout)
    assert list(line["stages"]) == list(TINY) and line["resumed"] == []
    assert line["stages"]["sft"]["kl"] == 0 and 0 <= line["stages"]["reward"]["accuracy"] <= 1
    for stage in ("rejection", "ppo", "dpo"):
        assert line["stages"][stage]["kl"] >= 0 and "true_score" in line["stages"][stage]
        assert load_model(out / stage).args.vocab_size == 512
    ppo_before = (out / "ppo" / "checkpoint.pt").read_bytes()
    (out / "dpo" / "stage.json").unlink()  # as if killed after writing the folder, before finishing it
    (out / ".ppo.999.tmp").mkdir()  # a half-made folder of a killed stage
    code, stdout, stderr = run(capsys, "all", "--base", str(bin_path), "--out", str(out), "--seed", "2")
    assert code == 0, stderr
    again = json.loads(stdout)
    assert again["resumed"] == ["sft", "reward", "rejection", "ppo"] and "stage dpo: align dpo" in stderr
    assert again["stages"]["ppo"] == line["stages"]["ppo"]
    assert (out / "ppo" / "checkpoint.pt").read_bytes() == ppo_before  # not redone
    assert again["stages"]["dpo"] == line["stages"]["dpo"]  # the same seed: the same stage again
    assert not (out / ".ppo.999.tmp").exists()
    code, stdout, stderr = run(capsys, "all", "--base", str(bin_path), "--out", str(out), "--seed", "3")
    assert code == 2 and stdout == "" and "other settings" in stderr and "seed" in stderr
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    code, _, stderr = run(capsys, "all", "--base", str(bin_path), "--out", str(tmp_path / "full"))
    assert code == 2 and "not an `align all` folder" in stderr


def test_align_dpo_stops_on_a_non_finite_loss_and_keeps_the_last_good_policy(capsys, tmp_path, sft_dir,
                                                                              reward_dir):
    out = tmp_path / "dpo"
    code, stdout, stderr = run(capsys, "dpo", "--policy", str(sft_dir), "--pairs", str(reward_dir / "pairs.jsonl"),
                               "--out", str(out), "--steps", "4", "--lr", "1e30", *MEASURE)
    assert code == 2 and "DPO stopped at step 2" in stderr and "lower --lr" in stderr, stderr
    assert json.loads(stdout)["stopped"].startswith("DPO stopped at step 2")
    # step 1's update (lr 1e30) made the loss non-finite: the weights before it are kept
    assert same_weights(load_model(out), load_model(sft_dir))
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
