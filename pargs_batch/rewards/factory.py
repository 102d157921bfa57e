"""Which reward scorer class a run uses: ``make_scorer`` is the one place a scorer is chosen (for
generation, evaluation, the in-engine guide and rm_training alike); ``score_rows`` scores a row's
candidates through any of them. Where a scorer runs is the plan's decision
(``plan.placement.reward_placement``); loading it, in this process or on Ray actors, is
``models.loading``'s."""

from __future__ import annotations

from pargs_batch.config import RewardConfig


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
