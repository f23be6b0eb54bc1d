"""Issue 11, SFT: self-instructed data (alignment/self_instruct.py), fine-tuning on it with the
response-only loss (alignment/sft.py) and `align sft`, on llama2.c's stories260K. The data never
holds a held-out topic and every example names its topic often enough; it is the same for a seed;
SFT lowers the loss on its data; the output folder loads with load_model, `generate` and `chat`;
the CLI's contract and its exit-2 refusals. (Zero gradient on prompt tokens: test_alignment_sft_data.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llama_from_scratch import datafiles
from llama_from_scratch.alignment.errors import AlignmentError
from llama_from_scratch.alignment.instructions import IGNORE_INDEX, collate, response_only_loss
from llama_from_scratch.alignment.sampler import line_seed
from llama_from_scratch.alignment.self_instruct import (DROPS, STORY_NOUNS, SelfInstructSettings, relabel,
                                                        sample_stories, self_instruct, training_topics)
from llama_from_scratch.alignment.sft import SFTSettings, batch_indices, encode_examples, finetune
from llama_from_scratch.alignment.sft_dir import check_out, save_sft
from llama_from_scratch.alignment.task import check_training_topic, load_topics
from llama_from_scratch.alignment.true_score import topic_count, true_score, words
from llama_from_scratch.checkpoints.load import detect_format, load_model
from llama_from_scratch.cli.main import main
from llama_from_scratch.inference.generation import generate
from stories_fixtures import bin_path, model, tok  # noqa: F401 - fixtures

SMALL = SelfInstructSettings(stories=96, min_mentions=2, max_new_tokens=160, batch_size=48, seed=3)


@pytest.fixture(scope="module")
def data(model, tok):
    return self_instruct(model, tok, SMALL)


# --- self-instruct ------------------------------------------------------------------------------

def test_relabel_takes_the_training_topic_named_most_ties_to_the_first_listed():
    story = "The cat saw a ball. The ball was red. A cat and a dog and a dog and a dog played."
    assert relabel(story, ["ball", "cat"], 2) == ("ball", 2)
    assert relabel(story, ["cat", "ball"], 2) == ("cat", 2)  # a tie: the first listed
    assert relabel(story, ["cat", "ball"], 3) is None
    assert relabel("The trees and the bears.", ["tree", "bear"], 1) == ("tree", 1)  # plural forms count


def test_held_out_topics_are_refused_before_anything_is_sampled():
    with pytest.raises(AlignmentError, match="held out"):
        training_topics(["ball", "dog"])
    with pytest.raises(AlignmentError, match="dog"):
        training_topics(["dogs"])  # counts a word the held-out "dog" counts
    with pytest.raises(AlignmentError, match="at least one"):
        training_topics([])
    assert training_topics()[:len(load_topics().train)] == load_topics().train


def test_self_instructed_examples_name_a_training_topic_often_enough_and_score_well(data):
    heldout = set(load_topics().heldout)
    assert data.examples, data.counts
    for e in data.examples:
        assert e["topic"] in training_topics() and e["topic"] not in heldout
        assert topic_count(words(e["response"]), e["topic"]) == e["mentions"] >= SMALL.min_mentions
        assert topic_count(words(e["response"])[:SMALL.early_words], e["topic"]) >= 1  # named early
        assert true_score(e["response"], e["topic"]) == e["true_score"] >= SMALL.min_score
    assert data.counts["sampled"] == SMALL.stories == sum(data.counts[k] for k in DROPS) + data.counts["kept"]
    assert data.counts["kept"] == len(data.examples) == sum(data.by_topic.values())
    assert data.counts["no_topic"] > 0  # most stories name no topic twice: the filter does work
    assert any(not e["ended"] for e in data.examples)  # stories cut at the budget are kept


def test_self_instruct_is_the_same_for_a_seed_and_differs_for_another(model, tok, data):
    again = self_instruct(model, tok, SMALL)
    assert again.examples == data.examples and again.counts == data.counts
    other = self_instruct(model, tok, SelfInstructSettings(stories=48, min_mentions=2, max_new_tokens=160,
                                                           batch_size=48, seed=4))
    assert [e["response"] for e in other.examples] != [e["response"] for e in data.examples[:len(other.examples)]]


def test_stories_come_from_bos_alone_one_seeded_generator_per_batch(model, tok):
    stories = sample_stories(model, tok, 6, seed=5, max_new_tokens=40, batch_size=4)
    direct = generate(model, [[tok.bos_id]] * 4, 41, temperature=1.0, top_p=1.0, stop_ids=tok.stop_ids,
                      seed=line_seed(5, 0)) + generate(model, [[tok.bos_id]] * 2, 41, temperature=1.0,
                                                        top_p=1.0, stop_ids=tok.stop_ids, seed=line_seed(5, 1))
    assert stories == [(tok.decode(ids[:40]), len(ids) <= 40) for ids in direct]


# --- SFT ----------------------------------------------------------------------------------------

def test_an_answer_that_did_not_end_is_learned_without_eos(tok):
    ended, cut = encode_examples(tok, [{"topic": "ball", "response": "The ball was red."},
                                       {"topic": "ball", "response": "The ball was red.", "ended": False}], 512)
    assert ended.targets[-1] == tok.eos_id and tok.eos_id not in cut.targets
    assert cut.targets == ended.targets[:-1] and cut.tokens == ended.tokens[:-1]
    assert [t for t in ended.targets if t != IGNORE_INDEX][:-1] == tok.encode("The ball was red.")


def test_a_held_out_topic_in_the_examples_is_refused_naming_the_example(tok):
    with pytest.raises(AlignmentError, match="example 2: the topic 'bird' is held out"):
        encode_examples(tok, [{"topic": "ball", "response": "A ball."}, {"topic": "bird", "response": "A bird."}], 512)
    with pytest.raises(AlignmentError, match="no SFT examples"):
        encode_examples(tok, [], 512)


def test_batches_are_full_and_cover_every_example_once_per_epoch():
    batches = batch_indices(10, 4, seed=0)
    first = [next(batches) for _ in range(5)]  # 20 indices: two epochs
    assert all(len(b) == 4 for b in first)
    flat = sum(first, [])
    assert sorted(flat[:10]) == sorted(flat[10:]) == list(range(10)) and flat[:10] != flat[10:]
    assert first == [next(b) for b in [batch_indices(10, 4, seed=0)] for _ in range(5)]


def _loss_on(model, tok, examples) -> float:
    with torch.inference_mode():
        return response_only_loss(model(*collate(encode_examples(tok, examples, 512), 0)[:1]),
                                  collate(encode_examples(tok, examples, 512), 0)[1]).item()


def test_sft_lowers_the_response_only_loss_on_its_data(bin_path, tok, data):
    model = load_model(bin_path)
    examples = data.examples[:16]
    before = _loss_on(model, tok, examples)
    records = finetune(model, tok, examples, SFTSettings(steps=8, batch_size=8, lr=1e-3))
    after = _loss_on(model, tok, examples)
    assert [r["step"] for r in records] == list(range(1, 9)) and records[0]["lr"] == 1e-3
    assert records[-1]["lr"] < records[0]["lr"]  # cosine decay
    assert after < before - 0.05, (before, after)
    assert not model.training


def test_the_sft_folder_loads_and_generates_like_the_model_it_saved(bin_path, tok, data, tmp_path, capsys):
    model = load_model(bin_path)
    settings = SFTSettings(steps=2, batch_size=4)
    records = finetune(model, tok, data.examples[:8], settings)
    out = save_sft(tmp_path / "sft", model, datafiles.path("stories260K/tok512.bin"), settings, records,
                   {"base": str(bin_path), "self_instruct": data.summary()})
    assert detect_format(out) == "training" and (out / "tokenizer.bin").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "metrics.jsonl", "run.json", "sft.json",
                                                      "tokenizer.bin"]
    loaded = load_model(out)
    x = torch.tensor([[tok.bos_id, 300, 301, 302]])
    with torch.inference_mode():
        assert torch.equal(loaded(x), model(x))
    assert generate(loaded, [[tok.bos_id]], 20, seed=0) == generate(model, [[tok.bos_id]], 20, seed=0)
    saved = json.loads((out / "sft.json").read_text())
    assert saved["self_instruct"]["counts"] == data.counts and saved["settings"]["steps"] == 2
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert main(["generate", "--checkpoint", str(out), "--prompt", "Once", "--max-new-tokens", "8",
                 "--device", "cpu"]) == 0
    assert main(["chat", "--checkpoint", str(out), "--message", "Write a story about a cat.",
                 "--max-new-tokens", "8", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.strip()


def test_only_an_empty_folder_or_with_overwrite_a_training_folder_is_replaced(tmp_path):
    assert check_out(tmp_path / "new", False) == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    check_out(tmp_path / "empty", False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    with pytest.raises(AlignmentError, match="--overwrite"):
        check_out(tmp_path / "full", False)
    with pytest.raises(AlignmentError, match="refusing to delete"):
        check_out(tmp_path / "full", True)
    with pytest.raises(AlignmentError, match="is a file"):
        check_out(tmp_path / "full" / "notes.txt", True)


def test_a_failed_save_leaves_the_old_folder_as_it_was_and_no_half_folder(tmp_path, model):
    old = tmp_path / "old"
    old.mkdir()
    (old / "run.json").write_text("{}")  # a training directory that --overwrite may replace
    records = [{"step": 1, "lr": 1e-3, "loss": 1.0, "grad_norm": 1.0}]
    for out, overwrite in ((tmp_path / "new", False), (old, True)):
        with pytest.raises(OSError):  # the tokenizer to copy is missing
            save_sft(out, model, tmp_path / "missing.bin", SFTSettings(steps=1), records, {}, overwrite)
    assert not (tmp_path / "new").exists() and [p.name for p in old.iterdir()] == ["run.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]  # no hidden half-built folder


# --- the CLI ------------------------------------------------------------------------------------

def run_sft(capsys, *flags: str) -> tuple[int, str, str]:
    code = main(["align", "sft", *flags])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_align_sft_self_instructs_fine_tunes_and_prints_one_json_line(capsys, tmp_path, bin_path, tok):
    out = tmp_path / "sft"
    flags = ("--base", str(bin_path), "--out", str(out), "--steps", "3", "--seed", "2", "--stories", "64",
             "--batch-size", "4")
    code, stdout, stderr = run_sft(capsys, *flags)
    assert code == 0, stderr
    (line,) = stdout.splitlines()
    summary = json.loads(line)
    assert summary["steps"] == 3 and summary["out"] == str(out.absolute()) and summary["examples"] > 0
    assert summary["data"]["kept"] == summary["examples"] and summary["data"]["sampled"] == 64
    assert summary["final_loss"] > 0 and "self-instruct" in stderr and "SFT" in stderr
    assert load_model(out).args == load_model(bin_path).args
    code, _, stderr = run_sft(capsys, *flags)
    assert code == 2 and "not empty" in stderr and "--overwrite" in stderr
    code, stdout, stderr = run_sft(capsys, *flags, "--overwrite")
    assert code == 0 and json.loads(stdout)["first_loss"] == summary["first_loss"]  # the same seed


def test_align_sft_learns_a_data_file(capsys, tmp_path, bin_path):
    data = tmp_path / "data.jsonl"
    data.write_text('{"topic": "ball", "response": "The ball was happy."}\n'
                    '{"topic": "cat", "response": "The cat sat on the cat mat.", "ended": false}\n')
    code, stdout, stderr = run_sft(capsys, "--base", str(bin_path), "--out", str(tmp_path / "o"), "--data",
                                   str(data), "--steps", "2", "--batch-size", "2")
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["examples"] == 2 and summary["data"] == {"file": str(data)}


@pytest.mark.parametrize("flags, says", [
    (["--topics", "ball,dog"], "'dog' is held out"),
    (["--topics", "cats,fishes"], "as the held-out topic 'fish' does"),
    (["--data", "{data}"], "line 2: the topic 'bird' is held out"),
    (["--base", "{tmp}/missing.bin"], "does not exist"),
    (["--base", "{tmp}"], "is a directory without"),
    (["--tokenizer", "{tmp}/missing.model"], "missing.model"),
    (["--tokenizer", "{llama2}"], "32000 tokens but the model's vocabulary is 512"),
    (["--out", "{full}"], "not empty"),
    (["--steps", "0"], "steps and batch_size must be integers >= 1"),
    (["--data", "{tmp}/none.jsonl"], "cannot read --data"),
])
def test_align_sft_bad_input_exits_2_before_any_training(capsys, tmp_path, bin_path, flags, says):
    data = tmp_path / "data.jsonl"
    data.write_text('{"topic": "ball", "response": "A ball."}\n{"topic": "bird", "response": "A bird."}\n')
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    values = {"data": str(data), "tmp": str(tmp_path), "full": str(tmp_path / "full"),
              "llama2": str(datafiles.path("llama2_tokenizer.model"))}
    given = [f.format(**values) for f in flags]
    base = [] if "--base" in given else ["--base", str(bin_path)]
    out = [] if "--out" in given else ["--out", str(tmp_path / "o")]
    code, stdout, stderr = run_sft(capsys, *base, *out, *given, "--stories", "8")
    assert code == 2 and stdout == "" and says in stderr, stderr
    assert not (tmp_path / "o").exists()


def test_relabel_can_ask_for_an_early_mention():
    late = "one two three four five six " * 5 + "the ball, a ball and balls."  # first mention: word 32
    assert relabel(late, ("ball",), 3) == ("ball", 3)
    assert relabel(late, ("ball",), 3, early_words=25) is None
    assert relabel(late, ("ball",), 3, early_words=32) == ("ball", 3)
    with pytest.raises(AlignmentError, match="early_words"):
        SelfInstructSettings(early_words=-1)


def test_the_default_candidates_are_the_training_topics_then_story_nouns_never_a_held_out_one():
    candidates = training_topics()
    train = load_topics().train
    assert candidates[:len(train)] == train and len(set(candidates)) == len(candidates)
    assert set(candidates) == set(train) | set(STORY_NOUNS)
    assert all(check_training_topic(t) == t for t in candidates)  # raises for a held-out look-alike
