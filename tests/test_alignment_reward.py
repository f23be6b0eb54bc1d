"""Issue 11, the reward model: preference pairs from a policy (alignment/preferences.py), the reward
model and its ranking loss (reward_model.py), its training (reward_train.py), its measurement
(reward_eval.py), its folder (reward_dir.py) and `align reward`. The margin loss against PyTorch's
logsigmoid and a hand computation; last-token pooling unchanged by padding; held-out topics never in
training pairs; bad pairs skipped and counted; accuracy by strength on a hand-made example; the
model learns a tiny set; the CLI's contract and its exit-2 refusals."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llama_from_scratch import datafiles
from llama_from_scratch.alignment.errors import AlignmentError
from llama_from_scratch.alignment.labeler import STRENGTHS, label
from llama_from_scratch.alignment.preferences import LABELER_STREAM, PreferencePair, label_pairs, preference_pairs
from llama_from_scratch.alignment.reward_dir import check_reward_out, check_policy, load_reward_model
from llama_from_scratch.alignment.reward_eval import calibration, correlation, pairwise_accuracy, ranks
from llama_from_scratch.alignment.reward_model import MARGINS, RewardModel, margins, pad, ranking_loss, reward_ids
from llama_from_scratch.alignment.reward_train import RewardSettings, score, score_pairs, train_reward
from llama_from_scratch.alignment.sampler import line_seed
from llama_from_scratch.alignment.sft import SFTSettings
from llama_from_scratch.alignment.sft_dir import save_sft
from llama_from_scratch.alignment.task import load_topics
from llama_from_scratch.checkpoints.errors import CheckpointError
from llama_from_scratch.checkpoints.load import load_model
from llama_from_scratch.cli.main import main
from llama_from_scratch.model.config import ModelArgs
from llama_from_scratch.model.transformer import Transformer
from stories_fixtures import bin_path, model, tok  # noqa: F401 - fixtures

SIG, BETTER, SLIGHT, NEGL = STRENGTHS


@pytest.fixture(scope="module")
def policy(model):  # the reward model starts from the policy: stories260K here
    return model


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory, policy):
    """A policy folder as `align sft` writes it (stories260K's weights, not fine-tuned: the format is
    what matters here)."""
    out = tmp_path_factory.mktemp("policy") / "sft"
    save_sft(out, policy, datafiles.path("stories260K/tok512.bin"), SFTSettings(steps=1),
             [{"step": 1, "lr": 1e-3, "loss": 1.0, "grad_norm": 1.0}], {"base": "stories260K"})
    return out


# --- the loss -----------------------------------------------------------------------------------

def test_margins_are_llama_2s_table_27():
    assert margins(list(STRENGTHS), "small").tolist() == pytest.approx([1, 2 / 3, 1 / 3, 0])
    assert margins(list(STRENGTHS), "large").tolist() == [3, 2, 1, 0]
    assert margins([BETTER, SIG], "none").tolist() == [0, 0]
    with pytest.raises(AlignmentError, match="unknown preference strength"):
        margins(["much better"], "small")
    with pytest.raises(AlignmentError, match="unknown margin"):
        margins([SIG], "huge")


def test_the_margin_loss_is_minus_log_sigmoid_of_the_difference_less_the_margin():
    chosen, rejected = torch.tensor([2.0, 0.5, -1.0, 30.0]), torch.tensor([1.0, 0.5, 1.0, -30.0])
    m = margins([SIG, BETTER, SLIGHT, SIG], "large")  # 3, 2, 1, 3
    hand = [math.log1p(math.exp(-(c - r - mm))) for c, r, mm in zip([2, 0.5, -1, 30], [1, 0.5, 1, -30], [3, 2, 1, 3])]
    assert ranking_loss(chosen, rejected, m).item() == pytest.approx(sum(hand) / 4, rel=1e-6)
    assert torch.allclose(ranking_loss(chosen, rejected, m), -F.logsigmoid(chosen - rejected - m).mean())
    assert ranking_loss(torch.zeros(3), torch.zeros(3)).item() == pytest.approx(math.log(2))  # Bradley-Terry
    far = ranking_loss(torch.tensor([-200.0]), torch.tensor([200.0]))
    assert far.item() == pytest.approx(400.0)  # finite where log(sigmoid(-400)) would be -inf
    with pytest.raises(ValueError, match="one shape"):
        ranking_loss(torch.zeros(2), torch.zeros(3))


# --- the model ----------------------------------------------------------------------------------

def test_the_reward_reads_the_last_real_token_and_ignores_padding(policy, tok):
    model = RewardModel(policy, torch.Generator().manual_seed(0))
    short = reward_ids(tok, "ball", "The ball was red.", 512)
    long = reward_ids(tok, "ball", "The ball was red and the girl was happy all day long.", 512)
    with torch.inference_mode():
        alone = model(*pad([short], 0))
        tokens, lengths = pad([short, long], 0)
        batched = model(tokens, lengths)
        other_pad, _ = pad([short, long], 7)
        assert torch.allclose(alone, batched[:1], atol=1e-6) and torch.equal(batched, model(other_pad, lengths))
        last = model.body.hidden_states(torch.tensor([short]))[0, -1]  # (dim,)
        assert torch.allclose(alone[0], model.head(last)[0], atol=1e-6)
        moved = model(tokens, lengths - torch.tensor([1, 0]))  # reading an earlier token changes it
        assert not torch.isclose(moved[0], batched[0]) and moved[1] == batched[1]
    assert reward_ids(tok, "ball", "x " * 600, 512)[:3] == [tok.bos_id] + tok.encode("[INST]")[:2]
    assert len(reward_ids(tok, "ball", "x " * 600, 512)) == 512
    with pytest.raises(ValueError, match="between 1 and"):
        model(tokens, torch.tensor([0, 3]))


def test_the_reward_model_learns_a_tiny_set(bin_path, tok):
    pairs = [PreferencePair(t, f"The {t} was {g} and the girl was {g2}.", f"The {t} was {b} and the girl was {b2}.",
                  SIG, 1.0, 0.0, True, "train")
             for t in ("ball", "cat", "tree", "car") for g, g2, b, b2 in
             [("happy", "glad", "sad", "angry"), ("kind", "happy", "mean", "sad"), ("good", "happy", "bad", "scared")]]
    model = RewardModel(load_model(bin_path), torch.Generator().manual_seed(0))
    if np.mean(np.subtract(*score_pairs(model, tok, pairs)) > 0) > 0.5:  # start from a head that ranks them wrong
        with torch.no_grad():
            model.head.weight.neg_()
    before = np.mean(np.subtract(*score_pairs(model, tok, pairs)) > 0)
    records = train_reward(model, tok, pairs, RewardSettings(margin="small", epochs=12, batch_size=6, lr=2e-3))
    after = np.mean(np.subtract(*score_pairs(model, tok, pairs)) > 0)
    assert after == 1.0 and before < 0.5, (before, after)
    assert np.mean([r["loss"] for r in records[-4:]]) < np.mean([r["loss"] for r in records[:4]]) - 0.3
    assert records[0]["lr"] < records[5]["lr"]  # warmup of at least 5 steps, then cosine
    assert not model.training


def test_held_out_pairs_are_never_trained_on(policy, tok):
    held = PreferencePair("dog", "A happy dog.", "A sad dog.", SIG, 1.0, 0.0, True, "heldout")
    with pytest.raises(AlignmentError, match="measurement only"):
        train_reward(RewardModel(policy), tok, [held], RewardSettings())


# --- preference data ----------------------------------------------------------------------------

def test_training_pairs_use_training_topics_only(policy, tok):
    with pytest.raises(AlignmentError, match="held out"):
        preference_pairs(policy, tok, ["ball", "dog"], 4, 0, "train")
    data = preference_pairs(policy, tok, ["ball", "cat"], 6, 0, "train", batch_size=4, max_new_tokens=12)
    assert {p.topic for p in data.pairs} <= set(load_topics().train) and all(p.split == "train" for p in data.pairs)
    assert data.counts["requested"] == 6 and data.counts["labelled"] == len(data.pairs)
    assert sum(data.counts[s] for s in STRENGTHS) == len(data.pairs)
    again = preference_pairs(policy, tok, ["ball", "cat"], 6, 0, "train", batch_size=4, max_new_tokens=12)
    assert again.pairs == data.pairs  # seeded
    held = preference_pairs(policy, tok, ["dog"], 2, 0, "heldout", max_new_tokens=12)
    assert all(p.topic == "dog" and p.split == "heldout" for p in held.pairs)


def test_bad_pairs_are_skipped_counted_and_draw_no_noise():
    topics = ["ball"] * 6
    answers = [("A ball.", "A ball."), ("", "The ball."), ("A red ball.", "   "), None,
               ("The happy ball.", "The sad ball."), ("A ball! A ball!", "The ball was kind.")]
    n_prompts = [20, 20, 20, 20, 20, 20]
    data = label_pairs(topics, answers, n_prompts, 64, seed=5, split="train")
    assert data.counts["identical"] == 1 and data.counts["empty"] == 2 and data.counts["past_context"] == 1
    assert data.counts["labelled"] == len(data.pairs) == 2
    generator = np.random.default_rng(line_seed(5, LABELER_STREAM))  # skips drew nothing
    expected = [label("ball", a, b, generator) for a, b in answers[4:]]
    assert [(p.chosen, p.strength) for p in data.pairs] == [(e.chosen, e.strength) for e in expected]
    past = label_pairs(["ball"], [("A ball.", "The ball.")], [64], 64, 0, "train")
    assert past.counts["past_context"] == 1 and not past.pairs  # no room for an answer


def test_a_prompt_that_fills_the_context_is_counted_not_sampled(tok):
    tiny = Transformer(ModelArgs(dim=16, n_layers=1, n_heads=2, vocab_size=512, max_seq_len=8, hidden_dim=32))
    data = preference_pairs(tiny, tok, ["ball"], 3, 0, "train")
    assert data.counts["past_context"] == 3 and not data.pairs


# --- measurement --------------------------------------------------------------------------------

def test_accuracy_by_strength_on_a_hand_made_example():
    chosen = [1.0, 2.0, 0.0, 3.0, 1.0, 0.5]
    rejected = [0.0, 3.0, 1.0, 1.0, 1.0, 0.0]  # right, wrong, wrong, right, tie (wrong), right
    strengths = [SIG, SIG, BETTER, BETTER, NEGL, NEGL]
    result = pairwise_accuracy(chosen, rejected, strengths)
    assert result["accuracy"] == pytest.approx(3 / 6)
    assert result["accuracy_by_strength"] == {SIG: 0.5, BETTER: 0.5, SLIGHT: None, NEGL: 0.5}
    assert result["pairs_by_strength"] == {SIG: 2, BETTER: 2, SLIGHT: 0, NEGL: 2}
    with pytest.raises(AlignmentError, match="unknown preference strength"):
        pairwise_accuracy([1.0], [0.0], ["better!"])


def test_correlations_and_ranks_by_hand():
    assert ranks([10, 30, 20, 20]).tolist() == [1, 4, 2.5, 2.5]
    result = correlation([1, 2, 3, 4], [1, 4, 9, 16])
    assert result["spearman"] == pytest.approx(1.0) and result["pearson"] == pytest.approx(0.98437, abs=1e-5)
    assert correlation([1, 2, 3], [3, 2, 1])["spearman"] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="constant"):
        correlation([1, 1, 1], [1, 2, 3])


def test_calibration_bins_reward_differences_against_the_choice_rate():
    diff = [-2.0, -1.0, 1.0, 2.0]
    curve = calibration(diff, [False, True, True, True], bins=2)
    assert curve["mean_diff"].tolist() == [-1.5, 1.5] and curve["chose_a"].tolist() == [0.5, 1.0]
    assert curve["count"].tolist() == [2, 2] and curve["predicted"][1] == pytest.approx(1 / (1 + math.exp(-1.5)))
    assert curve["edges"].tolist() == [-2.0, 0.0, 2.0]


# --- the folder and the CLI ---------------------------------------------------------------------

def run_reward(capsys, *flags: str) -> tuple[int, str, str]:
    try:
        code = main(["align", "reward", *flags])
    except SystemExit as exit:  # argparse refuses a bad choice itself
        code = exit.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


SMALL = ("--pairs", "8", "--heldout-pairs", "8", "--max-new-tokens", "16", "--batch-size", "4")


def test_align_reward_trains_measures_and_prints_one_json_line(capsys, tmp_path, sft_dir, tok):
    out = tmp_path / "reward"
    code, stdout, stderr = run_reward(capsys, "--policy", str(sft_dir), "--out", str(out), *SMALL, "--seed", "3",
                                      "--margin", "large")
    assert code == 0, stderr
    (line,) = stdout.splitlines()
    summary = json.loads(line)
    assert list(summary)[:2] == ["accuracy", "accuracy_by_strength"]
    assert set(summary["accuracy_by_strength"]) == set(STRENGTHS)
    assert summary["margin"] == "large" and summary["pairs"]["requested"] == summary["heldout_pairs"]["requested"] == 8
    assert "training pairs" in stderr and "measurement only" in stderr
    rows = [json.loads(x) for x in (out / "pairs.jsonl").read_text().splitlines()]
    held = [r for r in rows if r["split"] == "heldout"]
    assert {r["topic"] for r in rows if r["split"] == "train"} <= set(load_topics().train)
    assert {r["topic"] for r in held} <= set(load_topics().heldout)
    assert summary["accuracy"] == pytest.approx(np.mean([r["chosen_reward"] > r["rejected_reward"] for r in held]))
    loaded = load_reward_model(out)  # the saved model gives the rewards that were measured
    again = score(loaded, tok, [(held[0]["topic"], held[0]["chosen"])])[0]
    assert again == pytest.approx(held[0]["chosen_reward"], abs=1e-5)
    with pytest.raises(CheckpointError):
        load_model(out)  # a reward model is not a policy: generate/chat refuse it
    code, _, stderr = run_reward(capsys, "--policy", str(sft_dir), "--out", str(out), *SMALL)
    assert code == 2 and "not empty" in stderr and "--overwrite" in stderr
    code, stdout, _ = run_reward(capsys, "--policy", str(sft_dir), "--out", str(out), *SMALL, "--seed", "3",
                                 "--margin", "large", "--overwrite")
    assert code == 0 and json.loads(stdout)["accuracy"] == summary["accuracy"]  # the same seed, the same run


@pytest.mark.parametrize("flags, says", [
    (["--policy", "{reward}"], "is a reward-model directory"),
    (["--policy", "{bin}"], "is not an SFT or training directory"),
    (["--policy", "{tmp}"], "is not an SFT or training directory"),
    (["--out", "{full}"], "not empty"),
    (["--out", "{full}", "--overwrite"], "refusing to delete"),
    (["--pairs", "0"], "--pairs must be at least 1"),
    (["--heldout-pairs", "-1"], "--heldout-pairs must be at least 1"),
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--lr", "nan"], "--lr must be a positive number"),
    (["--margin", "huge"], "invalid choice"),
])
def test_align_reward_bad_input_exits_2_before_any_sampling(capsys, tmp_path, sft_dir, bin_path, flags, says):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    (tmp_path / "rdir").mkdir()
    (tmp_path / "rdir" / "reward.json").write_text("{}")
    values = {"reward": str(tmp_path / "rdir"), "bin": str(bin_path), "tmp": str(tmp_path),
              "full": str(tmp_path / "full")}
    given = [f.format(**values) for f in flags]
    policy = [] if "--policy" in given else ["--policy", str(sft_dir)]
    out = [] if "--out" in given else ["--out", str(tmp_path / "o")]
    code, stdout, stderr = run_reward(capsys, *policy, *out, *given)
    assert code == 2 and stdout == "" and says in stderr, stderr
    assert not (tmp_path / "o").exists()


def test_only_an_empty_folder_or_with_overwrite_a_reward_folder_is_replaced(tmp_path, sft_dir):
    assert check_reward_out(tmp_path / "new", False) == tmp_path / "new"
    with pytest.raises(AlignmentError, match="refusing to delete"):
        check_reward_out(sft_dir, True)  # a policy is never deleted to make room for a reward model
    assert check_policy(sft_dir) == sft_dir
    assert set(MARGINS) == {"none", "small", "large"}
