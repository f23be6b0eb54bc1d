"""alignment.measure (chapter 10's base-against-SFT measurement) and notebook.results."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from llama_from_scratch.alignment.errors import AlignmentError
from llama_from_scratch.alignment.measure import answer_rows, requests, summarize
from llama_from_scratch.alignment.true_score import true_score
from llama_from_scratch.cli.main import main
from llama_from_scratch.notebook import results
from stories_fixtures import bin_path, model, tok  # noqa: F401 - fixtures


def test_requests_cycle_through_the_topics_and_refuse_nonsense():
    assert requests(["dog", "bird"], 3) == ["dog", "bird"] * 3
    for topics, per in ((["dog"], 0), ([], 2), (["dog"], 1.5)):
        with pytest.raises(AlignmentError):
            requests(topics, per)
    with pytest.raises(AlignmentError, match="lowercase"):
        requests(["Dog"], 1)


def test_answer_rows_are_what_align_sample_writes(capsys, tmp_path, model, tok, bin_path):
    asked = ["dog", "bird", "dog"]
    rows = answer_rows(model, tok, asked, seed=5, max_new_tokens=12)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"topic": t}) + "\n" for t in asked))
    assert main(["align", "sample", "--checkpoint", str(bin_path), "--prompts", str(prompts), "--seed", "5",
                 "--max-new-tokens", "12"]) == 0
    cli = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [{k: r[k] for k in ("topic", "prompt", "response")} for r in rows] == cli
    for row in rows:  # every term is the true score's own
        assert row["terms"]["true_score"] == true_score(row["response"], row["topic"])


def test_summarize_matches_a_hand_count():
    rows = [{"topic": "dog", "response": "The dog was happy. The dog played with his friend, the other dog."},
            {"topic": "dog", "response": ""},
            {"topic": "bird", "response": "happy happy happy happy happy happy"}]
    from llama_from_scratch.alignment.true_score import score_terms, topic_count, words
    rows = [{**r, "terms": score_terms(r["response"], r["topic"]), "mentions": topic_count(words(r["response"]),
                                                                                           r["topic"])} for r in rows]
    s = summarize(rows)
    assert s["answers"] == 3 and math.isclose(s["topic"], 1 / 3) and math.isclose(s["topic_rate"], 1 / 3)
    assert math.isclose(s["true_score"], (1.15 - 1.0 - 1.2) / 3)
    assert math.isclose(s["true_score_sd"], float(np.std([1.15, -1.0, -1.2], ddof=1)))
    assert math.isclose(s["true_score_se"], s["true_score_sd"] / math.sqrt(3))
    assert s["by_topic"]["dog"]["topic"] == 0.5 and s["by_topic"]["bird"]["true_score"] == pytest.approx(-1.2)
    assert list(s["by_topic"]) == ["dog", "bird"]
    with pytest.raises(AlignmentError):
        summarize([])


def test_committed_reads_the_checkout_and_falls_back_to_a_download(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "RESULTS", tmp_path / "results")
    (tmp_path / "results" / "x").mkdir(parents=True)
    (tmp_path / "results" / "x" / "a.json").write_text("{}")
    assert results.committed("x/a.json") == b"{}"
    assert results.committed_folder("x", ("a.json",), tmp_path / "copy") == tmp_path / "results" / "x"
    fetched = []

    class Response:
        def __init__(self, url):
            fetched.append(url)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self):
            return b"downloaded"

    monkeypatch.setattr(results.urllib.request, "urlopen", lambda url, timeout: Response(url))
    folder = results.committed_folder("y", ("b.bin", "c.json"), tmp_path / "copy")
    assert folder == tmp_path / "copy" and (folder / "b.bin").read_bytes() == b"downloaded"
    assert fetched == [results.RAW + "y/b.bin", results.RAW + "y/c.json"]
    assert not list(folder.glob(".*.part"))  # no half-written file is left behind
