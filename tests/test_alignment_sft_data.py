"""Issue 11's instruction format (alignment/instructions.py), the response-only loss, and `align
sample` (alignment/sampler.py), on llama2.c's stories260K: the prompt is chapter 1's chat encoding,
prompt positions get exactly zero gradient, the loss is PyTorch's with ignore_index, and sampling
is one seeded, reproducible draw per line that stops at EOS or BOS."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from llama_from_scratch import datafiles
from llama_from_scratch.alignment.errors import AlignmentError
from llama_from_scratch.alignment.instructions import (IGNORE_INDEX, Example, collate, encode_example, prompt_ids,
                                                       prompt_text, response_only_loss)
from llama_from_scratch.alignment.sampler import (find_tokenizer, line_seed, load_tokenizer_for, sample_ids,
                                                  sample_rows)
from llama_from_scratch.checkpoints.load import load_model
from llama_from_scratch.cli.main import main
from llama_from_scratch.inference.generation import generate
from llama_from_scratch.tokenizer.chat import encode_dialog
from llama_from_scratch.tokenizer.load import load_tokenizer
from stories_fixtures import bin_path, model, tok  # noqa: F401 - fixtures

STORY = "Once upon a time, there was a happy dog. The dog liked to play."


# --- the instruction format --------------------------------------------------------------------

def test_the_prompt_is_chapter_1s_chat_encoding_with_bos_first(tok):
    ids = prompt_ids(tok, "dog")
    assert ids == encode_dialog([{"role": "user", "content": "Write a story about a dog."}], tok)
    assert ids[0] == tok.bos_id and ids.count(tok.bos_id) == 1 and tok.eos_id not in ids
    assert tok.decode(ids[1:]) == prompt_text("dog") == "[INST] Write a story about a dog. [/INST]"


def test_the_prompt_with_llama_2s_own_tokenizer():
    sp = load_tokenizer(datafiles.path("llama2_tokenizer.model"))
    ids = prompt_ids(sp, "bird")
    assert ids[0] == sp.bos_id == 1 and ids[1:] == sp.encode("[INST] Write a story about a bird. [/INST]")


def test_an_example_is_the_prompt_then_the_answer_learned_up_to_eos(tok):
    prompt, answer = prompt_ids(tok, "dog"), tok.encode(STORY)
    ex = encode_example(tok, "dog", STORY, max_len=512)
    assert ex.tokens == prompt + answer  # EOS is a target, never an input
    assert ex.targets == [IGNORE_INDEX] * (len(prompt) - 1) + answer + [tok.eos_id]
    assert ex.targets[-1] == tok.eos_id and ex.targets[len(prompt) - 2] == IGNORE_INDEX
    assert ex.targets[len(prompt) - 1] == answer[0]  # the last prompt position predicts the answer
    assert tok.decode(ex.tokens[1:]) == f"{prompt_text('dog')} {STORY}"  # Meta's "[/INST] answer"


def test_a_long_answer_is_cut_to_the_context_without_eos(tok):
    prompt, answer = prompt_ids(tok, "dog"), tok.encode(STORY)
    ex = encode_example(tok, "dog", STORY, max_len=len(prompt) + 3)
    assert len(ex.tokens) == len(ex.targets) == len(prompt) + 3
    assert ex.targets[len(prompt) - 1:] == answer[:4] and tok.eos_id not in ex.targets
    just = encode_example(tok, "dog", STORY, max_len=len(prompt))  # room for the first answer token only
    assert just.tokens == prompt and just.targets[-1] == answer[0]
    short = encode_example(tok, "dog", "Hi.", max_len=len(prompt) + len(tok.encode("Hi.")))  # fits exactly
    assert short.targets[-1] == tok.eos_id


@pytest.mark.parametrize(("topic", "response", "max_len", "says"), [
    ("dog", STORY, 31, "more than the context of 31"),  # the prompt is 32 tokens
    ("dog", "  \n", 512, "empty"), ("Dog", STORY, 512, "lowercase"), ("", STORY, 512, "non-empty")])
def test_bad_examples_are_refused(tok, topic, response, max_len, says):
    with pytest.raises(AlignmentError, match=says):
        encode_example(tok, topic, response, max_len)


def test_collate_right_pads_with_ignored_targets(tok):
    a, b = encode_example(tok, "dog", STORY, 512), encode_example(tok, "cat", "Hi.", 512)
    tokens, targets = collate([a, b], pad_id=0)
    assert tokens.dtype == targets.dtype == torch.long and tokens.shape == targets.shape == (2, len(a.tokens))
    assert tokens[1].tolist() == b.tokens + [0] * (len(a.tokens) - len(b.tokens))
    assert targets[1].tolist() == b.targets + [IGNORE_INDEX] * (len(a.tokens) - len(b.tokens))
    with pytest.raises(ValueError, match="targets"):
        collate([Example([1, 2], [3])], pad_id=0)


# --- the response-only loss --------------------------------------------------------------------

def test_the_loss_is_pytorchs_cross_entropy_on_the_answer_positions_and_prompts_get_zero_gradient():
    torch.manual_seed(0)
    logits = (3 * torch.randn(2, 9, 17, dtype=torch.float64)).requires_grad_()
    targets = torch.randint(0, 17, (2, 9))
    targets[0, :4] = IGNORE_INDEX  # a prompt
    targets[1, :2] = IGNORE_INDEX
    targets[1, 7:] = IGNORE_INDEX  # padding
    loss = response_only_loss(logits, targets)
    keep = targets != IGNORE_INDEX
    ref = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=IGNORE_INDEX)
    alone = F.cross_entropy(logits.float()[keep], targets[keep])  # only the answer positions exist
    assert torch.allclose(loss, ref, atol=1e-6, rtol=0) and torch.allclose(loss, alone, atol=1e-6, rtol=0)
    (grad,) = torch.autograd.grad(loss, logits)
    assert torch.equal(grad[~keep], torch.zeros_like(grad[~keep]))  # exactly zero, not merely small
    assert (grad[keep].abs().sum(-1) > 0).all()
    (ref_grad,) = torch.autograd.grad(F.cross_entropy(logits[keep], targets[keep]), logits)
    assert torch.allclose(grad, ref_grad, atol=1e-7, rtol=0)


def test_on_stories260k_prompt_and_padding_positions_get_exactly_zero_gradient(tok, model):
    a, b = encode_example(tok, "dog", STORY, 512), encode_example(tok, "cat", "The cat sat.", 512)
    tokens, targets = collate([a, b], pad_id=tok.eos_id)
    embedded = []
    hook = model.tok_embeddings.register_forward_hook(lambda mod, inp, out: embedded.append(out) or out.retain_grad())
    try:
        hidden = model.hidden_states(tokens)  # (2, seq, dim): the last hidden states, per position
        hidden.retain_grad()
        logits = model.output(hidden).float()  # (2, seq, vocab)
        loss = response_only_loss(logits, targets)
        model.zero_grad()
        loss.backward()
    finally:
        hook.remove()
    keep = targets != IGNORE_INDEX
    # A prompt position's prediction adds nothing: its last hidden state gets exactly zero gradient.
    assert torch.equal(hidden.grad[~keep], torch.zeros_like(hidden.grad[~keep]))
    assert (hidden.grad[keep].abs().sum(-1) > 0).all()
    # The prompt's input embeddings do get gradient (the answer attends to them: that is intended);
    # padding's get exactly zero (nothing real attends to it), so the pad id cannot matter.
    emb_grad = embedded[0].grad  # (2, seq, dim)
    n_prompt, pad = len(prompt_ids(tok, "dog")), len(b.tokens)
    assert (emb_grad[0, :n_prompt].abs().sum(-1) > 0).all()
    assert torch.equal(emb_grad[1, pad:], torch.zeros_like(emb_grad[1, pad:]))
    # Padding changes no real logit, so the batch's loss is the answers' loss, example by example.
    with torch.no_grad():
        alone = [model(torch.tensor([e.tokens]))[0] for e in (a, b)]
        assert torch.allclose(logits[1, :pad], alone[1], atol=1e-5)
        flat_logits = torch.cat(alone)
        flat_targets = torch.tensor(a.targets + b.targets)
        ref = F.cross_entropy(flat_logits, flat_targets, ignore_index=IGNORE_INDEX)
    assert torch.allclose(loss.detach(), ref, atol=1e-5)


# --- sampling ------------------------------------------------------------------------------------

def test_line_seeds_are_mixed_not_added():
    assert line_seed(0, 1) == line_seed(0, 1) != line_seed(1, 0)
    assert len({line_seed(s, i) for s in range(5) for i in range(5)}) == 25
    assert 0 <= line_seed(7, 3) < 2 ** 63
    with pytest.raises(AlignmentError, match=">= 0"):
        line_seed(-1, 0)


def test_sampling_is_one_draw_per_line_the_same_on_every_run(tok, model):
    topics = ["dog", "dog", "dog", "bird"]
    rows = list(sample_rows(model, tok, topics, seed=5, max_new_tokens=12))
    assert rows == list(sample_rows(model, tok, topics, seed=5, max_new_tokens=12))
    assert [r["topic"] for r in rows] == topics and all(r["prompt"] == prompt_text(r["topic"]) for r in rows)
    assert len({r["response"] for r in rows[:3]}) == 3  # the same topic, three independent answers
    # A line's answer is its own draw, whatever the other lines hold.
    ids = sample_ids(model, tok, "dog", line_seed(5, 2), max_new_tokens=12)
    assert rows[2]["response"] == tok.decode(ids) and len(ids) == 12
    assert rows != list(sample_rows(model, tok, topics, seed=6, max_new_tokens=12))


def test_sampling_stops_at_bos_and_at_eos(tok, model):
    prompt, seed = prompt_ids(tok, "dog"), line_seed(0, 3)  # this draw ends its story after 126 tokens
    free = generate(model, [prompt], 130, temperature=1.0, top_p=1.0, stop_ids=(), seed=seed)[0]
    assert free[126] == tok.bos_id and tok.eos_id not in free and tok.bos_id not in free[:126]
    assert sample_ids(model, tok, "dog", seed, max_new_tokens=130) == free[:126]
    # stories260K never writes EOS, so give EOS the id of a token it does write: it stops there.
    other = copy.copy(tok)
    other.eos_id = free[5]
    assert sample_ids(model, other, "dog", seed, max_new_tokens=130) == free[:free.index(free[5])]


def test_the_tokenizer_is_found_by_the_issues_rule(tmp_path, bin_path):
    assert find_tokenizer(bin_path, 512) == bin_path.parent / "tok512.bin"
    assert find_tokenizer(bin_path, 512, given="x.model") == Path("x.model")  # --tokenizer wins, unchecked here
    ckpt = tmp_path / "model.bin"
    os.symlink(bin_path, ckpt)
    with pytest.raises(AlignmentError, match="tok512.bin"):
        find_tokenizer(ckpt, 512)  # nothing beside it: every place looked at is named
    (tmp_path / "tok512.bin").symlink_to(bin_path.parent / "tok512.bin")
    assert find_tokenizer(ckpt, 512) == tmp_path / "tok512.bin"
    (tmp_path / "tokenizer.model").write_bytes(b"")
    assert find_tokenizer(ckpt, 512) == tmp_path / "tokenizer.model"  # tokenizer.model beside comes first
    run = tmp_path / "run"
    run.mkdir()
    (run / "tokenizer.bin").write_bytes(b"")
    assert find_tokenizer(run, 512) == run / "tokenizer.bin"  # a directory's own comes first
    with pytest.raises(AlignmentError, match="32000 tokens but the model's vocabulary is 512"):
        load_tokenizer_for(bin_path, 512, given=datafiles.path("llama2_tokenizer.model"))


# --- the command ---------------------------------------------------------------------------------

def run_sample(capsys, tmp_path, lines: list[str], *flags: str) -> tuple[int, str, str]:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    code = main(["align", "sample", "--checkpoint", str(datafiles.path("stories260K/stories260K.bin")),
                 "--prompts", str(prompts), *flags])
    out, err = capsys.readouterr()
    return code, out, err


def test_align_sample_writes_one_line_per_prompt_the_same_each_run(capsys, tmp_path):
    lines = ['{"topic": "dog"}', '{"topic": "owl", "id": 3}', '{"topic": "dog"}']
    code, out, err = run_sample(capsys, tmp_path, lines, "--max-new-tokens", "8", "--seed", "3")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [list(r) for r in rows] == [["topic", "prompt", "response"]] * 3
    assert [r["topic"] for r in rows] == ["dog", "owl", "dog"] and rows[0]["response"] != rows[2]["response"]
    assert rows[1]["prompt"] == "[INST] Write a story about a owl. [/INST]" and "sampling 3 answers" in err
    model = load_model(datafiles.path("stories260K/stories260K.bin"))
    expected = list(sample_rows(model, load_tokenizer(datafiles.path("stories260K/tok512.bin")), ["dog", "owl", "dog"],
                                seed=3, max_new_tokens=8))
    assert rows == expected
    assert run_sample(capsys, tmp_path, lines, "--max-new-tokens", "8", "--seed", "3")[1] == out


@pytest.mark.parametrize(("bad", "says"), [
    ("not json", "not JSON"), ("", "not JSON"), ("[1]", '"topic"'), ('{"subject": "dog"}', '"topic"'),
    ('{"topic": ""}', "non-empty"), ('{"topic": "Dog"}', "lowercase")])
def test_align_sample_bad_prompts_exit_2_naming_the_line(capsys, tmp_path, bad, says):
    code, out, err = run_sample(capsys, tmp_path, ['{"topic": "dog"}', bad], "--max-new-tokens", "2")
    assert (code, out) == (2, "") and "line 2" in err and says in err


@pytest.mark.parametrize(("flags", "says"), [
    (("--top-p", "0"), "top_p"), (("--temperature", "-1"), "temperature"), (("--seed", "-1"), ">= 0"),
    (("--tokenizer", "missing.model"), "missing.model")])
def test_align_sample_bad_options_exit_2(capsys, tmp_path, flags, says):
    code, out, err = run_sample(capsys, tmp_path, ['{"topic": "dog"}'], *flags)
    assert (code, out) == (2, "") and says in err
