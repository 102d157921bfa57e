"""Reward-guided sequential Monte Carlo as pure functions on arrays: the weights, the effective
sample size, resampling and the normalising constant's estimate (``runners.smc`` drives them).

The target is p*(y | x) ∝ π̃_ref(y | x) · exp(β · r(x, y)), π̃_ref the reference as top-k /
temperature sampling defines it (the top k tokens of π_ref, renormalised, at temperature T). N
particles grow a token at a time from a proposal q: ``ref`` draws from π̃_ref, ``guided`` by the
PARGS rule softmax((log π_ref + β·r)/T) over the top k. A particle's log-weight gains, per token,
log π̃_ref(v) − log q(v) (zero for ``ref``) and, at every block boundary, β · (r(y≤t+m) − r(y≤t)),
the reward model's increment since the last boundary (r before the first token taken as 0, so the
increments of a finished response sum to β · r(x, y) and ``log_z`` estimates
log Σ_y π̃_ref(y) exp(β r(x, y))). At a boundary the particles are resampled when the effective
sample size falls below τ·N. Every random draw is a keyed uniform of (seed, prompt id, sample,
particle, step), so a row never depends on its batch.
"""

from __future__ import annotations

import numpy as np

from pargs_batch.decoding import SMC_PROPOSALS, SMC_RESAMPLING, SMC_RETURNS, keyed_uniforms, scores, softmax, splitmix

RULES, PROPOSALS, RETURNS = SMC_RESAMPLING, SMC_PROPOSALS, SMC_RETURNS

# keyed-uniform steps no decode step reaches: resampling after t tokens, and the returned particle
RESAMPLE_STEP = 2**61
RETURN_STEP = 2**60


def particle_hashes(id_hash: np.uint64, n: int) -> np.ndarray:
    """The key of each of a (prompt, sample)'s n particle slots: slot 0 keeps the prompt's own id hash
    (one particle draws the tokens top-k sampling draws), the others a mix of it and the slot."""
    slots = np.arange(n, dtype=np.uint64)
    mixed = splitmix(np.full(n, id_hash, dtype=np.uint64) ^ splitmix(slots))
    return np.where(slots == 0, np.uint64(id_hash), mixed)


def proposal_correction(logprobs: np.ndarray, rewards: np.ndarray | None, beta: float, temperature: float,
                        choice: np.ndarray) -> np.ndarray:
    """log π̃_ref(v) − log q(v) of each row's chosen candidate v, for the guided proposal
    q = softmax((log π_ref + β·r)/T) over the row's top k (π̃_ref = softmax(log π_ref / T) over them).
    Zero where there is no reward (the ref proposal: q is π̃_ref)."""
    rows = np.arange(len(choice))
    if rewards is None:
        return np.zeros(len(choice))
    with np.errstate(divide="ignore"):
        ref = np.log(softmax(logprobs.astype(np.float64) / temperature))
        q = np.log(softmax(scores(logprobs, rewards, beta) / temperature))
    return ref[rows, choice] - q[rows, choice]


def log_mean_exp(logw: np.ndarray) -> float:
    """log of the mean of exp(logw); -inf when every weight is zero."""
    top = np.max(logw)
    if not np.isfinite(top):
        return float("-inf")
    return float(top + np.log(np.mean(np.exp(logw - top))))


def normalised(logw: np.ndarray) -> np.ndarray:
    """The weights exp(logw) summing to one (uniform when all are zero)."""
    top = np.max(logw)
    if not np.isfinite(top):
        return np.full(len(logw), 1.0 / len(logw))
    w = np.exp(logw - top)
    return w / w.sum()


def ess(logw: np.ndarray) -> float:
    """Effective sample size 1 / Σ W_i² of the normalised weights: N when all are equal, 1 when one
    particle holds all the weight (0 when none has any)."""
    if not np.isfinite(np.max(logw)):
        return 0.0
    w = normalised(logw)
    return float(1.0 / np.sum(w * w))


def should_resample(logw: np.ndarray, threshold: float) -> bool:
    """τ = ``threshold``: resample when the ESS falls below τ·N; τ ≥ 1 at every block, 0 never."""
    if threshold <= 0:
        return False
    return threshold >= 1 or ess(logw) < threshold * len(logw)


def resample_uniforms(seed: int, slot_hashes: np.ndarray, sample_index: int, tokens: int, rule: str) -> np.ndarray:
    """The uniforms one resampling uses (N for multinomial, one for systematic), keyed by the
    (prompt, sample)'s particle slots and the tokens generated so far."""
    hashes = slot_hashes if rule == "multinomial" else slot_hashes[:1]
    n = len(hashes)
    return keyed_uniforms(seed, hashes, np.full(n, sample_index), np.full(n, RESAMPLE_STEP + tokens, dtype=np.uint64))


def ancestors(logw: np.ndarray, uniforms: np.ndarray, rule: str) -> np.ndarray:
    """Each new slot's ancestor, in slot order: N draws from the normalised weights (``multinomial``,
    one uniform each) or N evenly spaced points (u + i)/N of one uniform (``systematic``). Either keeps
    each particle's expected number of copies at N·W_i."""
    w = normalised(logw)
    n = len(w)
    cdf = np.cumsum(w)
    cdf[-1] = 1.0
    points = uniforms if rule == "multinomial" else (uniforms[0] + np.arange(n)) / n
    return np.minimum(np.searchsorted(cdf, points, side="right"), n - 1)


def returned(logw: np.ndarray, final_rewards: np.ndarray, how: str, uniform: float) -> int:
    """The slot whose response is written: drawn by final weight (``sample``, the consistent choice)
    or the highest final reward (``best``; ties to the lower slot, a non-finite reward never wins)."""
    if how == "best":
        r = np.where(np.isfinite(final_rewards), final_rewards, -np.inf)
        return int(np.argmax(r))
    cdf = np.cumsum(normalised(logw))
    return int(min(np.searchsorted(cdf, uniform * cdf[-1], side="right"), len(logw) - 1))


def return_uniform(seed: int, id_hash: np.uint64, sample_index: int) -> float:
    """The uniform that draws the returned particle of a (prompt, sample)."""
    return float(keyed_uniforms(seed, np.array([id_hash], dtype=np.uint64), np.array([sample_index]),
                                np.array([RETURN_STEP], dtype=np.uint64))[0])
