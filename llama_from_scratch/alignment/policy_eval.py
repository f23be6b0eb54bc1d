"""A policy measured on the held-out topics: the true score and the KL to the SFT model.

The answers are exactly `align sample`'s (measure.answer_rows: line i drawn alone with
line_seed(seed, i), temperature 1.0, top-p 1.0, 256 new tokens), so a number here can be
reproduced with the CLI. The KL of each answer is kl.exact_kl (the exact next-action KL summed
along the answer the policy sampled, STOP as one action); its mean over answers estimates
KL(pi || pi_sft) per answer, in nats. For the SFT model itself it is exactly 0.

Returned: measure.summarize's table plus "kl" (mean), "kl_se" (its standard error),
"sampled_kl" (the mean of the sampled log-ratios, the other unbiased estimate, noisier) and
"samples": the first `keep` rows {"topic", "response", "true_score"} to show side by side.

Chapter: rlhf.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from llama_from_scratch.alignment.instructions import prompt_ids
from llama_from_scratch.alignment.kl import exact_kl, sampled_kl
from llama_from_scratch.alignment.measure import requests, scored_row, summarize
from llama_from_scratch.alignment.rollouts import Rollout, action_logprobs, answer_batch, rollout_of
from llama_from_scratch.alignment.sampler import MAX_NEW_TOKENS, line_seed, sample_ids
from llama_from_scratch.alignment.task import load_topics
from llama_from_scratch.model.transformer import Transformer
from llama_from_scratch.tokenizer.base import Tokenizer

PER_TOPIC = 16  # 128 answers over the 8 held-out topics: a standard error of about 0.05


def heldout_rollouts(policy: Transformer, tokenizer: Tokenizer, per_topic: int, seed: int) -> list[Rollout]:
    """`align sample`'s answers to `per_topic` requests per held-out topic, as rollouts."""
    topics = requests(load_topics().heldout, per_topic)
    out = []
    for index, topic in enumerate(topics):
        ids = sample_ids(policy, tokenizer, topic, line_seed(seed, index))
        out.append(rollout_of(topic, prompt_ids(tokenizer, topic), ids, MAX_NEW_TOKENS, policy.args.max_seq_len))
    return out


@torch.no_grad()
def measure_policy(policy: Transformer, reference: Transformer, tokenizer: Tokenizer, per_topic: int = PER_TOPIC,
                   seed: int = 0, keep: int = 8, batch_size: int = 32) -> dict:
    """The table of the module docstring for `policy`, KL taken against `reference`."""
    rollouts = heldout_rollouts(policy, tokenizer, per_topic, seed)
    kls, sampled = [], []
    for start in range(0, len(rollouts), batch_size):
        chunk = [r for r in rollouts[start:start + batch_size] if r.ids or r.ended]
        if chunk:
            batch = answer_batch(chunk, tokenizer.eos_id)
            logits, ref_logits = policy(batch.tokens), reference(batch.tokens)
            kls += exact_kl(logits, ref_logits, batch, tokenizer.stop_ids).tolist()
            logp = action_logprobs(logits, batch, tokenizer.stop_ids)
            sampled += sampled_kl(logp, action_logprobs(ref_logits, batch, tokenizer.stop_ids), batch.mask).tolist()
    rows = [scored_row({"topic": r.topic, "response": tokenizer.decode(r.ids)}) for r in rollouts]
    summary = summarize(rows)
    kls_array = np.array(kls)
    summary.update({"kl": float(kls_array.mean()), "kl_se": float(kls_array.std(ddof=1) / math.sqrt(len(kls)))
                    if len(kls) > 1 else 0.0, "sampled_kl": float(np.mean(sampled)),
                    "samples": [{"topic": r["topic"], "response": r["response"],
                                 "true_score": r["terms"]["true_score"]} for r in rows[:keep]]})
    return summary
