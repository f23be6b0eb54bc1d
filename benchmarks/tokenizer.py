"""Tokenizer speed against sentencepiece, measured in one run: medians of `--runs` (>= 5) timings.

    LLAMA_DATA_DIR=../shared/data python benchmarks/tokenizer.py

1. Encoding all of tinyshakespeare (1.1 MB, one string) with LLaMA 2's tokenizer: our
   SentencePieceBPE (a fresh instance each run, so its per-chunk cache starts empty) against
   sentencepiece encoding the same whole text as one string. Target: within 3x.
2. Training a BPE vocabulary of 4,096 on tinyshakespeare: our SentencePiece-style trainer against
   sentencepiece's trainer with comparable settings: model_type=bpe, vocab_size=4096,
   byte_fallback=True, character_coverage=1.0, normalization_rule_name=identity (no NFKC, like
   ours), add_dummy_prefix=True, remove_extra_whitespaces=False, split_digits=True, num_threads=1
   (one thread: ours is single-threaded), one sentence per line, model written to memory.
   Target: within 10x. Our byte-level fast trainer (bpe_fast, 3,840 merges) is timed too, for reference.
"""

from __future__ import annotations

import argparse
import io

import sentencepiece as spm
from timing import median_time

from llama_from_scratch import datafiles
from llama_from_scratch.tokenizer import bpe_fast, sentencepiece_trainer
from llama_from_scratch.tokenizer.sentencepiece_bpe import SentencePieceBPE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timings per measurement (median taken)")
    args = parser.parse_args()
    runs = max(5, args.runs)
    text = datafiles.path("tinyshakespeare.txt").read_text(encoding="utf-8")
    model = str(datafiles.path("llama2_tokenizer.model"))

    sp = spm.SentencePieceProcessor(model_file=model)
    ours = SentencePieceBPE.from_file(model)
    assert ours.encode(text) == sp.encode(text), "ids differ: the benchmark would compare different work"
    t_sp = median_time(lambda: sp.encode(text), runs)
    t_ours = median_time(lambda: SentencePieceBPE.from_file(model).encode(text), runs)
    t_load = median_time(lambda: SentencePieceBPE.from_file(model), runs)
    print(f"encode tinyshakespeare ({len(text):,} chars, {len(sp.encode(text)):,} ids), median of {runs}:")
    print(f"  sentencepiece          {t_sp:7.3f} s")
    print(f"  ours (load + encode)   {t_ours:7.3f} s   (of which loading the model: {t_load:.3f} s)")
    print(f"  ratio ours/sentencepiece: {t_ours / t_sp:.2f}x  (target <= 3x)")

    lines = text.splitlines()

    def spm_train() -> None:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_writer=io.BytesIO(), model_type="bpe", vocab_size=4096,
            byte_fallback=True, character_coverage=1.0, normalization_rule_name="identity",
            add_dummy_prefix=True, remove_extra_whitespaces=False, split_digits=True, num_threads=1,
            minloglevel=2)

    t_spm_train = median_time(spm_train, runs)
    t_our_train = median_time(lambda: sentencepiece_trainer.train(text, 4096), runs)
    t_bytes = median_time(lambda: bpe_fast.train(text, 4096), runs)
    print(f"train BPE, vocab 4,096 on tinyshakespeare, median of {runs}:")
    print(f"  sentencepiece trainer  {t_spm_train:7.3f} s")
    print(f"  ours, SentencePiece-style (sentencepiece_trainer) {t_our_train:7.3f} s")
    print(f"  ours, byte-level (bpe_fast)                       {t_bytes:7.3f} s")
    print(f"  ratio ours/sentencepiece: {t_our_train / t_spm_train:.2f}x  (target <= 10x); "
          f"byte-level: {t_bytes / t_spm_train:.2f}x")


if __name__ == "__main__":
    main()
