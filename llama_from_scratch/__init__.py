"""LLaMA 2 from scratch: every part of Meta's model, small enough to read.

Each module holds one idea (the tokenizer, RMSNorm, RoPE, attention, ...); the book's
chapters render these modules' source, run them, and check them against a reference.
"""

__version__ = "0.1.0"
