"""The decode rules of the paper, as pure functions on arrays.

For B rows and k candidates each: ``score = log pi_ref + beta * r`` (Algorithm 1, line 6), then
either the argmax (ARGS, PARGS-G) or a draw from ``softmax(score / temperature)`` (PARGS; top-k
sampling is the same draw with beta = 0). Draws use one uniform number per row from a counter-based
hash of (seed, prompt id, sample index, step), so a row's choice never depends on its batch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Method:
    name: str
    uses_reward: bool
    greedy: bool
    guidance: str  # which reward model the paper pairs with it
    help: str


METHODS: dict[str, Method] = {m.name: m for m in [
    Method("topk", False, False, "none", "sample from the top-k of pi_ref (beta = 0)"),
    Method("args", True, True, "full-sequence RM", "argmax of log pi_ref + beta * r (ARGS)"),
    Method("pargs-greedy", True, True, "partial-sequence RM", "argmax of log pi_ref + beta * r"),
    Method("pargs", True, False, "partial-sequence RM", "sample from softmax(log pi_ref + beta * r)"),
    Method("best-of-n", True, False, "full-sequence RM", "N whole top-k samples of pi_ref, the best kept"),
]}

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _splitmix(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def id_hashes(ids: list[str]) -> np.ndarray:
    """A stable 64-bit hash of each prompt id (the same in every process and run)."""
    return np.array([int.from_bytes(hashlib.blake2b(str(i).encode(), digest_size=8).digest(), "little")
                     for i in ids], dtype=np.uint64)


def keyed_uniforms(seed: int, id_hash: np.ndarray, sample_index: np.ndarray, step: np.ndarray) -> np.ndarray:
    """One uniform in [0, 1) per row, a pure function of (seed, id, sample index, step)."""
    h = _splitmix(np.full(len(id_hash), seed % 2**64, dtype=np.uint64))
    for part in (id_hash, sample_index, step):
        h = _splitmix(h ^ np.asarray(part).astype(np.uint64))
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


def scores(logprobs: np.ndarray, rewards: np.ndarray | None, beta: float) -> np.ndarray:
    """log pi_ref(v) + beta * r(y.v) for every candidate; -inf logprobs stay -inf."""
    if rewards is None or beta == 0:
        return logprobs.astype(np.float64)
    return logprobs.astype(np.float64) + beta * rewards.astype(np.float64)


def softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise softmax that tolerates -inf entries (at least one finite per row)."""
    z = x - np.max(x, axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def sample(score: np.ndarray, uniforms: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Inverse-CDF draw from softmax(score / temperature), one per row."""
    probs = softmax(score / temperature)
    cdf = np.cumsum(probs, axis=1)
    idx = (cdf <= uniforms[:, None] * cdf[:, -1:]).sum(axis=1)
    return np.minimum(idx, score.shape[1] - 1)


def choose(method: str, logprobs: np.ndarray, rewards: np.ndarray | None, beta: float,
           temperature: float, uniforms: np.ndarray) -> np.ndarray:
    """Index of the chosen candidate in each row, by the rule of ``method``.

    ``logprobs`` and ``rewards`` are (B, k), candidates sorted by logprob, missing ones -inf.
    Greedy rules break ties toward the more likely token (the lower index).
    """
    spec = METHODS[method]
    s = scores(logprobs, rewards if spec.uses_reward else None, beta)
    if spec.greedy:
        return np.argmax(s, axis=1)
    return sample(s, uniforms, temperature)
