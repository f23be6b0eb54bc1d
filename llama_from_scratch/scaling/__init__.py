"""Scaling laws: FLOPs and training cost, an IsoFLOP sweep of tiny LLaMAs, Chinchilla's three fits,
the published laws and LLaMA 2 on the loss/compute map."""
