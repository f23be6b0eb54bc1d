"""Running a model: sampling, the generation loop, the memory account, device and dtype choice."""
