"""Training and serving beyond one process on torch.distributed: data parallel (DDP), sharded
(FSDP2) and Meta's tensor-parallel layout, with a cost model of what they send.

Chapter: scale_out.
"""
