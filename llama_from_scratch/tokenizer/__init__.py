"""Chapter 1: tokenizers, from byte-level BPE to LLaMA 2's SentencePiece model, bit for bit."""
