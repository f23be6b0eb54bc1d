"""The alignment task (issue 11): the true score and the simulated labeler, checked against the
examples and rules of `alignment/README.md` in the book's data folder, and the `align score` command."""

from __future__ import annotations

import io
import json
import math
import string
import subprocess
import sys

import numpy as np
import pytest

from llama_from_scratch import datafiles
from llama_from_scratch.alignment import task
from llama_from_scratch.alignment.errors import AlignmentError
from llama_from_scratch.alignment.labeler import SKIPPED, STRENGTHS, label, strength, tally
from llama_from_scratch.alignment.task import check_topic, check_training_topic, load_lexicon, load_topics, request
from llama_from_scratch.alignment.true_score import (repetition_term, score_terms, sentiment_counts, topic_count,
                                                     trigram_counts, true_score, words)
from llama_from_scratch.cli.main import main

NEUTRAL = [f"q{c}" for c in string.ascii_lowercase]  # letters-only words in no list and naming no topic


def filler(n: int) -> str:
    """n distinct neutral words (no topic, no sentiment, no repeated trigram)."""
    return " ".join(f"q{a}{b}" for a in string.ascii_lowercase for b in string.ascii_lowercase)[: 4 * n - 1] \
        if n else ""


# --- the data files and the task's fixed parts ---------------------------------------------------

def test_the_task_files_are_read_from_the_data_folder_and_match_their_sha256():
    for entry in datafiles.BOOK_FILES.values():
        local = datafiles.path(entry.name)
        assert local == datafiles.data_dir() / entry.name
        assert (local.stat().st_size, datafiles.sha256_of(local)) == (entry.size, entry.sha256), entry.name


def test_a_missing_task_file_names_the_variable_and_is_never_downloaded(monkeypatch, tmp_path):
    monkeypatch.setenv(datafiles.ENV_VAR, str(tmp_path))
    with pytest.raises(datafiles.DataError, match=f"has no download.*{datafiles.ENV_VAR}"):
        datafiles.path("alignment/topics.json")
    assert not any(tmp_path.iterdir())


def test_topics_and_lexicon_are_the_files_lists():
    raw = json.loads(datafiles.path("alignment/topics.json").read_text())
    assert load_topics().train == tuple(raw["train"]) and load_topics().heldout == tuple(raw["heldout"])
    assert "dog" in load_topics().heldout and "ball" in load_topics().train
    lexicon = json.loads(datafiles.path("alignment/lexicon.json").read_text())
    assert load_lexicon().positive == set(lexicon["positive"]) and load_lexicon().negative == set(lexicon["negative"])
    assert request("dog") == "Write a story about a dog."


@pytest.mark.parametrize("topic", ["dog", "bird", "dogs", "doge", "birdes"])
def test_held_out_topics_and_their_forms_are_refused_for_training(topic):
    with pytest.raises(AlignmentError, match="held.out topic|is held out"):
        check_training_topic(topic)


def test_training_topics_and_other_words_are_allowed():
    assert [check_training_topic(t) for t in ("ball", "teddy", "owl", "doggy")] == ["ball", "teddy", "owl", "doggy"]


@pytest.mark.parametrize("topic", ["", "Dog", "teddy bear", "café", None, 3])
def test_a_topic_that_could_never_match_is_refused(topic):
    with pytest.raises(AlignmentError, match="topic"):
        check_topic(topic)


# --- the true score: the README's three worked examples, every term ------------------------------

def test_worked_example_happy_dog():
    text = "The dog was happy. The dog played with his friend, the other dog."
    found = words(text)
    assert len(found) == 13 and topic_count(found, "dog") == 3
    assert sentiment_counts(found) == (2, 0) and trigram_counts(found) == (11, 11)
    assert score_terms(text, "dog") == pytest.approx(
        {"topic": 1, "sentiment": 0.5, "repetition": 0, "brevity": 0.35, "true_score": 1.15})


def test_worked_example_empty_answer():
    assert score_terms("", "dog") == {"topic": 0, "sentiment": 0, "repetition": 0, "brevity": 1, "true_score": -1}


def test_worked_example_happy_happy():
    text = "happy happy happy happy happy happy"
    assert trigram_counts(words(text)) == (1, 4) and sentiment_counts(words(text)) == (6, 0)
    assert score_terms(text, "dog") == pytest.approx(
        {"topic": 0, "sentiment": 1, "repetition": 0.75, "brevity": 0.7, "true_score": -1.2})


# --- the true score: the rules one by one ---------------------------------------------------------

def test_words_are_runs_of_ascii_letters_lowercased():
    assert words("didn't") == ["didn", "t"]
    assert words("The DOG, a_dog2dog--Café! naïve") == ["the", "dog", "a", "dog", "dog", "caf", "na", "ve"]
    assert words("  \n\t 123 ... ") == []


def test_only_the_first_300_words_count():
    assert words(filler(301))[-1] == words(filler(300))[-1] and len(words(filler(301))) == 300
    assert score_terms(filler(297) + " dog dog dog", "dog")["topic"] == 1
    assert score_terms(filler(298) + " dog dog dog", "dog")["topic"] == pytest.approx(2 / 3)
    assert score_terms(filler(300) + " dog happy happy", "dog") == pytest.approx(
        {"topic": 0, "sentiment": 0, "repetition": 0, "brevity": 0, "true_score": 0})


def test_topic_counts_plurals_and_ies_but_not_other_words():
    assert topic_count(words("dog dogs doges Dog DOGS"), "dog") == 5
    assert topic_count(words("doggy hotdog dogged dogies dog's"), "dog") == 1  # "dog's" is "dog", "s"
    assert topic_count(words("teddy teddies teddys teddyes teddie"), "teddy") == 4
    assert topic_count(words("box boxes boxs"), "box") == 3
    assert [score_terms(" ".join(["cat"] * m) + " " + filler(20), "cat")["topic"] for m in range(5)] == \
        pytest.approx([0, 1 / 3, 2 / 3, 1, 1])


def test_sentiment_counts_every_occurrence_and_clips():
    assert sentiment_counts(words("happy sad happy Happy friend, lonely")) == (4, 2)
    assert score_terms("happy sad happy " + filler(20), "dog")["sentiment"] == 0.25
    assert score_terms("sad " * 3 + filler(20), "dog")["sentiment"] == -0.75
    assert score_terms("sad sad bad bad cried " + filler(20), "dog")["sentiment"] == -1  # -5/4 clipped
    assert score_terms("happy fun good nice " + filler(20), "dog")["sentiment"] == 1


def test_repetition_is_one_minus_distinct_trigrams_over_trigrams():
    assert repetition_term(words("a b c a b c a b c")) == pytest.approx(1 - 3 / 7)
    assert repetition_term(words("la la la la")) == 0  # 2 trigrams: fewer than 3
    assert repetition_term(words("la la la la la")) == pytest.approx(2 / 3)  # 3 trigrams, 1 distinct
    assert repetition_term(words(filler(50))) == 0


def test_brevity_is_lost_below_20_words():
    assert [score_terms(filler(n), "dog")["brevity"] for n in (0, 1, 10, 19, 20, 21, 100)] == \
        pytest.approx([1, 0.95, 0.5, 0.05, 0, 0, 0])


def test_true_score_combines_the_terms_with_their_weights():
    text = "The dog saw a dog. It was sad. the end the end the end."  # 14 words, 12 trigrams, 10 distinct
    t = score_terms(text, "dog")
    assert t == pytest.approx({"topic": 2 / 3, "sentiment": -0.25, "repetition": 1 / 6, "brevity": 0.3,
                               "true_score": 2 / 3 - 0.25 - 2 / 6 - 0.3})
    assert true_score(text, "dog") == t["topic"] + t["sentiment"] - 2 * t["repetition"] - t["brevity"]


# --- the simulated labeler ------------------------------------------------------------------------

def test_strengths_are_llama2s_in_order_with_exact_thresholds():
    assert STRENGTHS == ("significantly better", "better", "slightly better", "negligibly better / unsure")
    below = lambda x: float(np.nextafter(x, 0))  # noqa: E731 - the largest float under x
    assert [strength(d) for d in (5.0, 0.75, below(0.75), 0.40, below(0.40), 0.15, below(0.15), 0.0)] == \
        [STRENGTHS[0], STRENGTHS[0], STRENGTHS[1], STRENGTHS[1], STRENGTHS[2], STRENGTHS[2], STRENGTHS[3], STRENGTHS[3]]
    with pytest.raises(AlignmentError):
        strength(float("nan"))


def test_a_label_is_the_noisy_comparison_of_true_scores_with_noise_drawn_a_then_b():
    a, b = filler(20), "The " + filler(11)  # true scores 0 and -0.4: a gap the noise often overturns
    rng, reference = np.random.default_rng(7), np.random.default_rng(7)
    seen, a_chosen = set(), set()
    for _ in range(400):
        got = label("dog", a, b, rng)
        e_a, e_b = reference.normal(0.0, 0.25, size=2)
        noisy_a, noisy_b = true_score(a, "dog") + e_a, true_score(b, "dog") + e_b
        assert got.chosen_is_a == (noisy_a > noisy_b)
        assert (got.chosen, got.rejected) == ((a, b) if got.chosen_is_a else (b, a))
        assert (got.chosen_noisy, got.rejected_noisy) == ((noisy_a, noisy_b) if got.chosen_is_a else (noisy_b, noisy_a))
        assert (got.chosen_score, got.rejected_score) == (true_score(got.chosen, "dog"), true_score(got.rejected, "dog"))
        assert got.d == abs(noisy_a - noisy_b) and got.strength == strength(got.d)
        seen.add(got.strength)
        a_chosen.add(got.chosen_is_a)
    assert seen == set(STRENGTHS) and a_chosen == {True, False}


def test_noise_is_normal_with_sd_025():
    n = 20_000
    rng = np.random.default_rng(1)  # "" and " " differ as texts but both score -1
    labels = [label("dog", "", " ", rng) for _ in range(n)]
    e_a = np.array([(x.chosen_noisy if x.chosen_is_a else x.rejected_noisy) + 1 for x in labels])
    e_b = np.array([(x.rejected_noisy if x.chosen_is_a else x.chosen_noisy) + 1 for x in labels])
    noise = np.concatenate([e_a, e_b])
    assert abs(noise.mean()) < 4 * 0.25 / math.sqrt(2 * n)
    assert abs(noise.std() - 0.25) < 4 * 0.25 / math.sqrt(4 * n)
    assert abs(np.corrcoef(e_a, e_b)[0, 1]) < 4 / math.sqrt(n)
    assert abs(np.mean([x.chosen_is_a for x in labels]) - 0.5) < 4 * 0.5 / math.sqrt(n)


def test_the_same_seed_gives_the_same_labels_and_another_seed_others():
    pairs = [(topic, filler(k), filler(k + 3) + " happy") for topic in ("dog", "ball") for k in range(5, 25)]
    run = lambda seed: [label(t, a, b, np.random.default_rng(seed)) for t, a, b in pairs]  # noqa: E731
    assert run(3) == run(3) and run(3) != run(4)


def test_identical_answers_are_skipped_and_counted_without_drawing_noise():
    rng, reference = np.random.default_rng(5), np.random.default_rng(5)
    results = [label("dog", "a dog", "a dog", rng), label("dog", "", "", rng), label("dog", "dog", "cat", rng)]
    assert results[:2] == [None, None]
    assert results[2].chosen_noisy == true_score("dog", "dog") + reference.normal(0.0, 0.25, size=2)[0]
    counts = tally(results)
    assert list(counts) == [*STRENGTHS, SKIPPED] and counts[SKIPPED] == 2 and sum(counts.values()) == 3


def test_the_choice_rate_rises_with_the_true_score_gap():
    """P(prefer A) = Phi(gap / (0.25 sqrt 2)); A has 20 words (score 0), B 20 - k (score -k/20)."""
    rng, n, rates = np.random.default_rng(11), 3000, []
    for k in (0, 2, 6, 12):
        a, b = filler(20), filler(20 - k).replace("q", "x") or " "
        gap = true_score(a, "dog") - true_score(b, "dog")
        assert gap == pytest.approx(k / 20)
        rate = np.mean([label("dog", a, b, rng).chosen_is_a for _ in range(n)])
        expected = 0.5 * (1 + math.erf(gap / (0.25 * math.sqrt(2)) / math.sqrt(2)))
        assert abs(rate - expected) < 4 * math.sqrt(expected * (1 - expected) / n) + 1e-9
        rates.append(rate)
    assert rates == sorted(rates) and rates[-1] > 0.9


def test_the_labeler_wants_a_numpy_generator():
    with pytest.raises(AlignmentError, match="default_rng"):
        label("dog", "a", "b", 0)


# --- python -m llama_from_scratch align score ------------------------------------------------------

ROWS = [{"topic": "dog", "response": "The dog was happy. The dog played with his friend, the other dog."},
        {"topic": "ball", "response": "", "id": 7},
        {"id": "x", "response": "Un café? happy happy happy happy happy happy", "topic": "bird", "true_score": 0}]


def test_score_round_trip_in_order_with_full_precision():
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS).encode("utf-8")
    done = subprocess.run([sys.executable, "-m", "llama_from_scratch", "align", "score"], input=data,
                          capture_output=True, check=True)
    out = [json.loads(line) for line in done.stdout.decode("utf-8").splitlines()]
    assert len(out) == len(ROWS) and done.stderr == b""
    for row, got in zip(ROWS, out):
        assert {k: v for k, v in got.items() if k != "true_score"} == {k: v for k, v in row.items() if k != "true_score"}
        assert got["true_score"] == true_score(row["response"], row["topic"])  # exact: repr round-trips
        assert list(got)[: len(row)] == list(row)
    # the third: words un, caf, happy x 6: sentiment 1, repetition 1 - 3/6, brevity 12/20
    assert [round(o["true_score"], 12) for o in out] == [1.15, -1, -0.6]


def run_score(monkeypatch, capsys, text: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode("utf-8")), encoding="utf-8"))
    code = main(["align", "score"])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("bad", "says"), [
    ("not json", "not JSON"), ("", "not JSON"), ("[1, 2]", "JSON object"), ('{"response": "hi"}', "'topic'"),
    ('{"topic": "dog"}', "'response'"), ('{"topic": "", "response": "hi"}', "non-empty"),
    ('{"topic": "Dog", "response": "hi"}', "lowercase"), ('{"topic": "dog", "response": 3}', "string")])
def test_a_bad_line_exits_2_naming_it_and_writes_nothing(monkeypatch, capsys, bad, says):
    good = json.dumps(ROWS[0])
    code, out, err = run_score(monkeypatch, capsys, f"{good}\n{good}\n{bad}\n{good}\n")
    assert (code, out) == (2, "") and "line 3" in err and says in err


def test_score_without_the_data_folder_exits_2(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv(datafiles.ENV_VAR, str(tmp_path))
    load_lexicon.cache_clear()
    try:
        code, out, err = run_score(monkeypatch, capsys, json.dumps(ROWS[0]) + "\n")
    finally:
        load_lexicon.cache_clear()
    assert (code, out) == (2, "") and datafiles.ENV_VAR in err


def test_align_needs_an_action(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["align"])
    assert exit_.value.code == 2 and "required: ACTION" in capsys.readouterr().err
