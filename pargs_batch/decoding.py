"""The decode rules of the paper, as pure functions on arrays.

For B rows and k candidates each: ``score = log pi_ref + beta * r`` (Algorithm 1, line 6), then
either the argmax (ARGS, PARGS-G) or a draw from ``softmax(score / temperature)`` (PARGS; top-k
sampling is the same draw with beta = 0). Draws use one uniform number per row from a counter-based
hash of (seed, prompt id, sample index, step), so a row's choice never depends on its batch.

This module is the one statement of the rule: the stepped loop calls ``choose`` on the engine's
top-k, and the fused logits processors call ``order_candidates``, ``scores`` and ``greedy`` on the
top-k they read from vLLM's logits, so both modes rank and break ties identically.
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
    help: str
    runner: str = "token"  # token (stepped or fused), best-of-n, blockwise, early-rejection, smc

    @property
    def tokenwise(self) -> bool:
        """Chosen one token at a time (the stepped loop or the fused logits processor)."""
        return self.runner == "token"


METHODS: dict[str, Method] = {m.name: m for m in [
    Method("topk", False, False, "sample from the top-k of pi_ref (beta = 0)"),
    Method("args", True, True, "argmax of log pi_ref + beta * r, with a full-sequence RM (ARGS)"),
    Method("pargs-greedy", True, True, "argmax of log pi_ref + beta * r, with a partial-sequence RM"),
    Method("pargs", True, False, "sample from softmax(log pi_ref + beta * r), with a partial-sequence RM"),
    Method("best-of-n", True, False, "N whole top-k samples of pi_ref, the one the RM likes best kept",
           "best-of-n"),
    Method("blockwise", True, False, "per block of block_tokens tokens, K = n_candidates samples of pi_ref, one "
           "drawn with probability softmax(beta * r / temperature)", "blockwise"),
    Method("blockwise-greedy", True, True, "per block of block_tokens tokens, K = n_candidates samples of pi_ref, "
           "the one with the highest log pi_ref(block) + beta * r kept", "blockwise"),
    Method("early-rejection", True, True, "N = n_candidates samples of pi_ref grown together; every block_tokens "
           "tokens the worst reject_fraction is dropped by the RM; the best survivor kept", "early-rejection"),
    Method("smc", True, False, "sequential Monte Carlo: n_particles partial responses grown by smc_proposal, "
           "weighted by the RM's increments every block_tokens tokens and resampled when their ESS < "
           "ess_threshold * N; one returned (smc_return); targets pi_ref * exp(beta * r)", "smc"),
]}

# smc's choices (pargs_batch.smc does the maths; the config validates against these)
SMC_PROPOSALS = ("ref", "guided")
SMC_RESAMPLING = ("multinomial", "systematic")
SMC_RETURNS = ("sample", "best")

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def splitmix(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def id_hash(row_id: str) -> int:
    """A stable 64-bit hash of a prompt id (the same in every process and run)."""
    return int.from_bytes(hashlib.blake2b(str(row_id).encode(), digest_size=8).digest(), "little")


def id_hashes(ids: list[str]) -> np.ndarray:
    """``id_hash`` of each prompt id."""
    return np.array([id_hash(i) for i in ids], dtype=np.uint64)


def keyed_uniforms(seed: int, id_hash: np.ndarray, sample_index: np.ndarray, step: np.ndarray) -> np.ndarray:
    """One uniform in [0, 1) per row, a pure function of (seed, id, sample index, step)."""
    h = splitmix(np.full(len(id_hash), seed % 2**64, dtype=np.uint64))
    for part in (id_hash, sample_index, step):
        h = splitmix(h ^ np.asarray(part).astype(np.uint64))
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


def request_seed(seed: int, id_hash: np.ndarray, sample_index: np.ndarray) -> np.ndarray:
    """A 63-bit seed per (prompt, sample) for requests vLLM samples whole (best-of-n, fused): the
    keyed hash at step 2**64 - 1, which no decode step reaches."""
    u = keyed_uniforms(seed, id_hash, sample_index, np.full(len(id_hash), 2**64 - 1, dtype=np.uint64))
    return (u * 2**63).astype(np.int64)


def block_seeds(seed: int, id_hash: np.ndarray, sample_index: np.ndarray, block: np.ndarray,
                candidate: np.ndarray) -> np.ndarray:
    """A 63-bit vLLM seed per (prompt, sample, block, candidate) for the block methods' requests:
    the keyed hash at a step of 2**62 + block * 2**20 + candidate, which no decode step reaches."""
    step = np.uint64(2**62) + np.asarray(block).astype(np.uint64) * np.uint64(2**20) + \
        np.asarray(candidate).astype(np.uint64)
    return (keyed_uniforms(seed, id_hash, sample_index, step) * 2**63).astype(np.int64)


def order_candidates(ids: np.ndarray, logprobs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k most likely of each row's candidates, sorted by logprob (ties: lower token id first).

    ``ids`` and ``logprobs`` are (B, m) with m >= k, distinct ids per row; rows with fewer than k
    real candidates (id -1, logprob -inf) keep them last. This order is what ``greedy`` breaks ties by.
    """
    order = np.lexsort((ids, -logprobs), axis=-1)[:, :k]
    return np.take_along_axis(ids, order, 1), np.take_along_axis(logprobs, order, 1)


def scores(logprobs: np.ndarray, rewards: np.ndarray | None, beta) -> np.ndarray:
    """log pi_ref(v) + beta * r(y.v) for every candidate; -inf logprobs stay -inf, and a candidate
    whose reward is not finite (an fp16 RM overflowing, a NaN) scores -inf: it never wins.

    ``beta`` is one number or one per row (shape (B,) or (B, 1))."""
    logprobs = logprobs.astype(np.float64)
    beta = np.asarray(beta, dtype=np.float64)
    if rewards is None or not beta.any():
        return logprobs
    r = rewards.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        s = logprobs + (beta.reshape(-1, 1) if beta.ndim else float(beta)) * r
    return np.where(np.isfinite(r), s, -np.inf)


def unscorable(rewards: np.ndarray) -> np.ndarray:
    """Rows none of whose candidates got a finite reward: no rule can choose among them."""
    return ~np.isfinite(rewards).any(axis=1)


def greedy(score: np.ndarray) -> np.ndarray:
    """Index of the best candidate per row; ties go to the lower index (the more likely token)."""
    return np.argmax(score, axis=1)


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
        return greedy(s)
    return sample(s, uniforms, temperature)
