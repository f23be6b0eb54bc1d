"""Pretraining: the loss, AdamW, the learning-rate schedule, clipping, the data, the loop and its checkpoints."""
