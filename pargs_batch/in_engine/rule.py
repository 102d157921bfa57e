"""The decode rule on the engine's tensors: the top-k of a log-softmax in ``decoding``'s candidate
order, and what the candidates' logits become so that vLLM's own sampler draws what the stepped loop
would (``decoding.scores``, and for greedy rows ``decoding.greedy``'s one choice)."""

from __future__ import annotations

import numpy as np

from pargs_batch import decoding


def top_candidates(logp, kmax: int) -> tuple[np.ndarray, np.ndarray]:
    """The kmax most likely tokens of each row of a (B, vocab) torch log-softmax, as (ids, logprobs)
    numpy arrays in ``decoding.order_candidates``' order: ties, across the k-th place too, go to the
    lower token id (``torch.topk`` alone picks among tokens tied at the k-th place arbitrarily)."""
    import torch

    wide = min(kmax + 1, logp.shape[-1])  # one more: a tie across the k-th place shows as its equal
    top_lp, top_ids = logp.topk(wide, dim=-1)
    top = top_lp.cpu().numpy()
    ids, lps = top_ids[:, :kmax].cpu().numpy().astype(np.int64), top[:, :kmax].astype(np.float64)
    edge = top_lp[:, kmax - 1:kmax]
    for b in np.nonzero(top[:, kmax] == top[:, kmax - 1])[0] if wide > kmax else ():
        tied = torch.nonzero(logp[b] >= edge[b]).flatten()
        ids[b], lps[b] = (x[0] for x in decoding.order_candidates(
            tied.cpu().numpy()[None].astype(np.int64), logp[b, tied].cpu().numpy()[None].astype(np.float64), kmax))
    return decoding.order_candidates(ids, lps, kmax)


def guided_scores(logprobs: np.ndarray, rewards: np.ndarray, beta: np.ndarray, k: np.ndarray,
                  greedy: np.ndarray) -> np.ndarray:
    """What a row's candidates' logits become: ``decoding.scores`` on the first k of each row,
    -inf beyond k; a greedy row keeps only ``decoding.greedy``'s choice finite, so vLLM's argmax
    at temperature 0 takes the same token the stepped loop would."""
    score = decoding.scores(logprobs, rewards, beta)
    score[np.arange(score.shape[1])[None, :] >= np.asarray(k)[:, None]] = -np.inf
    rows = np.nonzero(greedy)[0]
    if len(rows):
        keep = decoding.greedy(score[rows])
        chosen = score[rows, keep]
        score[rows] = -np.inf
        score[rows, keep] = chosen
    return score

