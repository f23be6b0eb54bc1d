"""The heart of SentencePiece's BPE encoder: merge the best-scoring adjacent pair, again and again.

Chapter: tokenizer.
"""

from __future__ import annotations

import heapq


def bpe_merge(symbols: list[str], scores: dict[str, float]) -> list[str]:
    """Merge adjacent symbols greedily, best-scoring piece first, leftmost first on ties.

    `symbols` is the text split into characters; `scores` maps every mergeable piece to its
    score. This is the priority queue of sentencepiece's bpe_model.cc: each candidate pair is
    pushed with (-score, left position); a popped pair is skipped when it is stale, i.e. when
    one of its symbols has changed since it was pushed.
    """
    if not symbols:
        return []
    sym = list(symbols)  # sym[i] == "" once symbol i was merged into its left neighbour
    nxt = list(range(1, len(sym) + 1))
    nxt[-1] = -1
    prv = list(range(-1, len(sym) - 1))
    heap: list[tuple[float, int, str]] = []

    def push(left: int, right: int) -> None:
        if left == -1 or right == -1:
            return
        piece = sym[left] + sym[right]
        if piece in scores:
            heapq.heappush(heap, (-scores[piece], left, piece))

    for i in range(len(sym) - 1):
        push(i, i + 1)
    while heap:
        _, left, piece = heapq.heappop(heap)
        right = nxt[left]
        if not sym[left] or right == -1 or sym[left] + sym[right] != piece:
            continue  # stale: a neighbour changed after this pair was pushed
        sym[left], sym[right] = piece, ""
        nxt[left] = nxt[right]
        if nxt[right] != -1:
            prv[nxt[right]] = left
        push(prv[left], left)
        push(left, nxt[left])
    return [s for s in sym if s]
