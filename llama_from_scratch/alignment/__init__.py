"""Alignment: the simulated human, instruction tuning, the reward model and RLHF."""
