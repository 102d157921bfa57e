"""Which reward scorer a run uses, and where it runs: decided here, once, for generation and
evaluation alike. ``make_scorer`` is the one place a scorer class is chosen; ``reward_actors``
loads it on Ray actors and ``RemoteScorer`` calls them like a local one.

Placements:

- ``engine``: fused mode (tokenwise methods) - the scorer lives inside vLLM's process, beside the
  logits processor that calls it every step;
- ``worker``: beside the engine in the decode worker - the causal and autoregressive backends (they
  keep per-sequence KV state between steps, which cannot cross a process boundary every token), best-of-n and the
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
    if config.reward.backend != "hf" or config.engine.mode == "fused" or not on_ray:
        return "worker"
    return "actor"


def make_scorer(reward: RewardConfig, llm_vocab_size: int | None = None):
    """The scorer ``reward.backend`` names, loaded in this process: ``hf`` (any sequence-classification
    RM, text re-tokenised), several ``hf`` models weighted (``reward.models``), ``causal`` (a causal
    RM sharing the LLM's tokenizer, KV state kept) or ``autoregressive`` (a causal LM's summed token
    log-probabilities, KV state kept)."""
    if reward.backend == "autoregressive":
        from pargs_batch.rewards.autoregressive import AutoregressiveRewardScorer

        return AutoregressiveRewardScorer(reward, llm_vocab_size)
    if reward.backend == "causal":
        from pargs_batch.rewards.causal import CausalRewardScorer

        return CausalRewardScorer(reward, llm_vocab_size)
    from pargs_batch.rewards.hf import HFRewardScorer, WeightedScorer

    return WeightedScorer(reward) if reward.models else HFRewardScorer(reward)


def trained_backend(path: str) -> str:
    """The backend a checkpoint asks to be scored with: ``autoregressive`` for one `rm_training` made
    in autoregressive mode (its config says so), else ``hf``."""
    from pargs_batch.rewards.autoregressive import is_autoregressive

    return "autoregressive" if is_autoregressive(path) else "hf"


class ScorerActor:
    """The body of a Ray reward actor: the scorer ``make_scorer`` picks, loaded in the actor."""

    def __init__(self, reward: RewardConfig):
        self.scorer = make_scorer(reward)

    def score(self, prompts: list, responses: list[str], weights: list | None = None):
        return self.score_costed(prompts, responses, weights)[0]

    def score_costed(self, prompts: list, responses: list[str], weights: list | None = None):
        if weights is None:
            return self.scorer.score_costed(prompts, responses)
        return self.scorer.score_costed(prompts, responses, weights=weights)


class RemoteScorer:
    """A reward scorer on one or more Ray actors, called like a local one: a call is split evenly
    across the actors and the scores come back in input order."""

    def __init__(self, actors: list):
        self.actors = list(actors)

    def score(self, prompts: list[str], responses: list[str], weights: list | None = None):
        return self.score_costed(prompts, responses, weights)[0]

    def score_costed(self, prompts: list[str], responses: list[str], weights: list | None = None):
        """Scores, tokens read and model calls per input, as ``HFRewardScorer.score_costed``
        (``weights``: per input, for a ``WeightedScorer``)."""
        import numpy as np
        import ray

        n = len(self.actors)
        extra = (lambda i: {}) if weights is None else (lambda i: {"weights": weights[i::n]})
        if n == 1:
            return ray.get(self.actors[0].score_costed.remote(prompts, responses, **extra(0)))
        parts = [a.score_costed.remote(prompts[i::n], responses[i::n], **extra(i)) for i, a in enumerate(self.actors)]
        out = np.zeros(len(prompts), dtype=np.float32)
        tokens, calls = np.zeros(len(prompts), dtype=np.int64), np.zeros(len(prompts), dtype=np.int64)
        for i, (part, part_tokens, part_calls) in enumerate(ray.get(parts)):
            out[i::n], tokens[i::n], calls[i::n] = part, part_tokens, part_calls
        return out, tokens, calls


def reward_actors(reward: RewardConfig, options: list[dict], max_retries: int = 0) -> list:
    """One Ray actor per entry of ``options`` (its resources and scheduling), each loading the scorer of
    ``reward`` through ``make_scorer`` (a first call waits for it)."""
    import ray

    cls = ray.remote(ScorerActor)
    return [cls.options(**o, max_restarts=max_retries, max_task_retries=max_retries).remote(reward) for o in options]



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
