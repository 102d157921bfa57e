"""scorers.py decides once which scorer a run loads and where it runs: the placement table, the one
factory every caller loads through (a Ray actor's body included), and the per-row reshaping of
costed scores."""

import numpy as np
import pytest

from pargs_batch.config import GenerateConfig, RewardConfig
from pargs_batch.configlib import ConfigError, build
from pargs_batch.models.loading import ScorerActor
from pargs_batch.plan.placement import guides_in_engine, reward_placement
from pargs_batch.rewards.factory import make_scorer, score_rows

from helpers import base_config


@pytest.mark.parametrize("method, mode, backend, on_ray, where", [
    ("topk", "stepped", "hf", True, None),            # no reward model at all
    ("pargs", "fused", "hf", True, "engine"),         # beside the logits processor
    ("args", "fused", "causal", False, "engine"),
    ("best-of-n", "fused", "hf", True, "worker"),     # whole responses: scored after plain requests
    ("pargs", "stepped", "causal", True, "worker"),   # KV state kept between steps cannot cross processes
    ("pargs", "stepped", "hf", False, "worker"),      # without Ray everything is here
    ("pargs", "stepped", "hf", True, "actor"),        # a Ray reward actor shared round-robin
    ("blockwise", "stepped", "hf", True, "actor"),
])
def test_where_the_reward_model_runs(world, tmp_path, method, mode, backend, on_ray, where):
    cfg = build(GenerateConfig, base_config(world, tmp_path, decode={"method": method}, engine={"mode": mode},
                                            reward={"backend": backend}))
    assert reward_placement(cfg, on_ray) == where
    assert guides_in_engine(cfg) == (where == "engine")


def test_the_factory_picks_the_scorer_the_config_names(world):
    from pargs_batch.rewards.hf import HFRewardScorer, WeightedScorer

    one = make_scorer(RewardConfig(path=world["reward_model"]))
    assert type(one) is HFRewardScorer
    two = make_scorer(RewardConfig(models=[{"path": world["reward_model"], "weight": 1.0},
                                           {"path": world["reward_model"], "weight": 0.5}]))
    assert type(two) is WeightedScorer
    prompts, responses = ["review of the cafe :"] * 2, [" food was great", " food was awful"]
    assert np.allclose(two.score(prompts, responses), 1.5 * one.score(prompts, responses), atol=1e-5)


def test_the_causal_backend_refuses_a_model_that_is_not_causal(world):
    with pytest.raises(ConfigError, match="reward.backend.*needs a causal reward model"):
        make_scorer(RewardConfig(path=world["reward_model"], backend="causal"))


def test_a_ray_actors_body_scores_as_the_scorer_here(world, scorer):
    actor = ScorerActor(RewardConfig(path=world["reward_model"], batch_size=16))
    prompts, responses = ["review of the train :"] * 3, [" it was late", " it was on time", ""]
    mine, tokens, calls = actor.score_costed(prompts, responses)
    theirs, their_tokens, their_calls = scorer.score_costed(prompts, responses)
    assert np.allclose(mine, theirs, atol=1e-5) and list(tokens) == list(their_tokens) and list(calls) == list(their_calls)
    assert np.allclose(actor.score(prompts, responses), theirs, atol=1e-5)


def test_score_rows_groups_each_rows_candidates(scorer):
    prompts = ["review of the cafe :"] * 4
    responses = [" good", " bad", " fine", " awful"]
    rewards, tokens, calls = score_rows(scorer, prompts, responses, None, per_row=2)
    flat, flat_tokens, flat_calls = scorer.score_costed(prompts, responses)
    assert rewards.shape == (2, 2) and np.allclose(rewards.ravel(), flat, atol=1e-6)
    assert list(tokens) == [flat_tokens[0] + flat_tokens[1], flat_tokens[2] + flat_tokens[3]]
    assert list(calls) == [flat_calls[0] + flat_calls[1], flat_calls[2] + flat_calls[3]]
