"""The LLaMA 2 model itself: config, softmax and masks, RMSNorm, attention, RoPE, SwiGLU, the decoder."""
