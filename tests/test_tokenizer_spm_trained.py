"""Our encoder on BPE models trained by sentencepiece itself, with other normalizer settings.

LLaMA 2's model exercises one set of options; here sentencepiece's own trainer makes small models
(identity normalization) that remove extra whitespace, put the space at the end of words, drop the
dummy prefix, or have no byte fallback (unknown characters become <unk>, runs folded into one).
"""

import io

import pytest
import sentencepiece as spm
from hypothesis import given, settings, strategies as st

from llama_from_scratch import datafiles
from llama_from_scratch.tokenizer.sentencepiece_bpe import SentencePieceBPE
from llama_from_scratch.tokenizer.sentencepiece_model import parse_model

VARIANTS = {
    "llama-like": dict(remove_extra_whitespaces=False),
    "remove-extra-whitespaces": dict(remove_extra_whitespaces=True),
    "whitespace-as-suffix": dict(remove_extra_whitespaces=False, treat_whitespace_as_suffix=True),
    "no-dummy-prefix": dict(remove_extra_whitespaces=False, add_dummy_prefix=False),
    "no-byte-fallback": dict(byte_fallback=False, character_coverage=0.98),
}

TEXTS = st.text(alphabet=st.sampled_from(list("  \t\n\u2581ab.Th e\u00e9\u4f60\U0001f600\u0301")), max_size=25)


@pytest.fixture(scope="module")
def lines():
    return datafiles.path("tinyshakespeare.txt").read_text(encoding="utf-8").splitlines()[:6000]


@pytest.fixture(scope="module", params=list(VARIANTS))
def pair(request, lines):
    options = dict(model_type="bpe", vocab_size=600, byte_fallback=True, character_coverage=1.0,
                   normalization_rule_name="identity", minloglevel=2)
    options.update(VARIANTS[request.param])
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=out, **options)
    return spm.SentencePieceProcessor(model_proto=out.getvalue()), SentencePieceBPE(parse_model(out.getvalue()))


def test_lines_and_edge_cases(pair, lines):
    sp, ours = pair
    cases = lines[:300] + ["", " ", "   ", " a ", "a\u2581", "\u2581", "x  y  ", "\n\nz\t\t", "Zebra! 你好 😀😀"]
    for text in cases:
        ids = sp.encode(text)
        assert ours.encode(text) == ids, text
        assert ours.decode(ids) == sp.decode(ids), text


@settings(max_examples=300, deadline=None)
@given(text=TEXTS, ids=st.lists(st.integers(0, 599), max_size=8))
def test_fuzz(pair, text, ids):
    sp, ours = pair
    assert ours.encode(text) == sp.encode(text)
    assert ours.decode(ids) == sp.decode(ids)


@pytest.mark.parametrize("options, message", [
    (dict(model_type="unigram"), "not BPE"),
    (dict(model_type="bpe", normalization_rule_name="nmt_nfkc"), "nmt_nfkc"),
    (dict(model_type="bpe", normalization_rule_name="identity", user_defined_symbols=["<tag>"]), "user-defined"),
])
def test_models_we_do_not_handle_are_refused_by_name(lines, tmp_path, options, message):
    prefix = tmp_path / "other"
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines[:2000]), model_prefix=str(prefix),
                                   vocab_size=300, minloglevel=2, **options)
    with pytest.raises(ValueError, match=message) as err:
        SentencePieceBPE.from_file(f"{prefix}.model")
    assert "other.model" in str(err.value)
