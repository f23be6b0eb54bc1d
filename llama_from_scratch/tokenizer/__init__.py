"""Tokenizers, from byte-level BPE to LLaMA 2's SentencePiece model, bit for bit.

- base: the `Tokenizer` protocol both file formats share (encode, decode, decode_continuation,
  bos_id/eos_id/vocab_size, stop_ids, stream_text)
- bpe_basic: readable byte-level BPE (train by recounting, encode/decode with a merge list)
- bpe_fast: the same merges, fast (distinct words counted once, incremental pair counts)
- protobuf_wire: the protobuf wire format (varints, records), by hand
- sentencepiece_model: read/write SentencePiece `.model` files (ModelProto) with it
- sentencepiece_merge: the BPE merge loop of sentencepiece's encoder (a priority queue)
- sentencepiece_bpe: encode/decode exactly like sentencepiece's BPE model (LLaMA 2's tokenizer)
- sentencepiece_trainer: a SentencePiece-style BPE trainer writing `.model` files
- llama2c: llama2.c's tokenizer.bin
- chat: the LLaMA 2 chat prompt format
- checks: input checks and TokenizerInputError
- load: `load_tokenizer(path)`, whichever of the two formats the file holds
"""
