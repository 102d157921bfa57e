"""Which reward scorer a run uses, and where it runs: decided here, once.

Placements:

- ``engine``: fused mode (tokenwise methods) - the scorer lives inside vLLM's process, beside the
  logits processor that calls it every step;
- ``worker``: beside the engine in the decode worker - the causal backend (it keeps per-sequence
  KV state between steps, which cannot cross a process boundary every token), best-of-n and the
  block methods in fused mode, and every run without Ray;
- ``actor``: a separate Ray reward actor shared round-robin by the decode workers - the ``hf``
  backend in stepped mode on Ray, so one worker's engine steps while the actor scores.

Methods without a reward (``topk``) have no placement (``None``).
"""

from __future__ import annotations

from pargs_batch.config import GenerateConfig, RewardConfig
from pargs_batch.decoding import METHODS

def guides_in_engine(config: GenerateConfig) -> bool:
    """Whether the run's engine carries the fused logits processor: fused mode, the tokenwise methods
    (best-of-n and the block methods sample pi_ref through plain requests and score afterwards)."""
    return config.engine.mode == "fused" and METHODS[config.decode.method].tokenwise


def reward_placement(config: GenerateConfig, on_ray: bool) -> str | None:
    """Where the reward model of ``config`` runs: engine, worker, actor, or None (no reward)."""
    if not METHODS[config.decode.method].uses_reward:
        return None
    if guides_in_engine(config):
        return "engine"
    if config.reward.backend == "causal" or config.engine.mode == "fused" or not on_ray:
        return "worker"
    return "actor"


def make_scorer(reward: RewardConfig, llm_vocab_size: int | None = None):
    """The scorer ``reward.backend`` names, loaded in this process: ``hf`` (any sequence-classification
    RM, text re-tokenised), several ``hf`` models weighted (``reward.models``), or ``causal`` (a causal
    RM sharing the LLM's tokenizer, KV state kept)."""
    if reward.backend == "causal":
        from pargs_batch.causal_reward import CausalRewardScorer

        return CausalRewardScorer(reward, llm_vocab_size)
    from pargs_batch.reward import HFRewardScorer, WeightedScorer

    return WeightedScorer(reward) if reward.models else HFRewardScorer(reward)


def score_rows(scorer, contexts: list, responses: list[str], weights: list | None, per_row: int):
    """Score inputs that come ``per_row`` to a row (a row's candidates): rewards (rows, per_row), and
    per row the tokens the reward model(s) read and the model calls made. ``weights`` - one list of
    per-model weights (or None) per input - reaches only a scorer of several models, and only when
    some input has its own."""
    if weights is not None and any(w is not None for w in weights):
        rewards, tokens, calls = scorer.score_costed(contexts, responses, weights=weights)
    else:
        rewards, tokens, calls = scorer.score_costed(contexts, responses)
    return (rewards.reshape(-1, per_row), tokens.reshape(-1, per_row).sum(1), calls.reshape(-1, per_row).sum(1))
