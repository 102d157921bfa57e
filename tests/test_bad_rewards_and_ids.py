"""A reward model that gives no finite reward, and input with repeated ids: no silent fallback,
no lost rows, in every mode that runs here (fused: tests/test_fused.py)."""

import json

import numpy as np
import pytest
from helpers import base_config, check_duplicates, duplicate_prompts

from pargs_batch import decoding
from pargs_batch.config import GenerateConfig
from pargs_batch.configlib import build
from pargs_batch.generation import run_generate
from pargs_batch.io.output import read_output


def test_a_non_finite_reward_never_wins():
    rng = np.random.default_rng(0)
    logprobs = np.log(np.array([[0.6, 0.3, 0.1]] * 2000))
    rewards = np.array([[np.nan, 0.0, np.inf]] * 2000, dtype=np.float32)  # the likeliest is NaN
    greedy = decoding.choose("pargs-greedy", logprobs, rewards, 1.0, 1.0, rng.random(2000))
    sampled = decoding.choose("pargs", logprobs, rewards, 1.0, 1.0, rng.random(2000))
    assert (greedy == 1).all() and (sampled == 1).all()
    assert not decoding.unscorable(rewards).any()
    assert decoding.unscorable(np.array([[np.nan, -np.inf], [np.nan, 0.0]])).tolist() == [True, False]


@pytest.fixture(scope="module")
def nan_reward_model(world, tmp_path_factory):
    """The tiny world's reward model with a NaN bias: every reward it gives is NaN."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path_factory.mktemp("nan-rm")
    model = AutoModelForSequenceClassification.from_pretrained(world["reward_model"])
    with torch.no_grad():
        model.classifier.bias.fill_(float("nan"))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(world["reward_model"]).save_pretrained(out)
    return str(out)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["pargs", "best-of-n", "blockwise", "blockwise-greedy", "early-rejection"])
def test_rows_without_a_finite_reward_end_as_errors_naming_the_model(world, tmp_path, engine, tokenizer,
                                                                     nan_reward_model, method):
    from pargs_batch.config import RewardConfig
    from pargs_batch.rewards.hf import HFRewardScorer

    cfg = build(GenerateConfig, base_config(world, tmp_path, reward={"path": nan_reward_model},
                                            decode={"method": method}, data={"limit": 6}))
    scorer = HFRewardScorer(RewardConfig(path=nan_reward_model, batch_size=16))
    summary = run_generate(cfg, models=(engine, tokenizer, scorer), progress=False)
    rows = read_output(cfg.output.path).to_pylist()
    assert len(rows) == 6 and summary.error_rows == summary.nonfinite_reward_rows == 6
    for r in rows:
        assert r["finish_reason"] == "error" and r["error"].startswith("non-finite reward")
        assert nan_reward_model in r["error"]
        assert r["llm_decode_tokens"] > 0 and r["reward_calls"] > 0  # what the row spent is still counted


@pytest.mark.slow
@pytest.mark.parametrize("beta", [0.0, 2.0])
def test_a_block_candidate_without_a_finite_reward_is_never_kept(world, tmp_path, engine, tokenizer,
                                                                  nan_reward_model, beta):
    """Two models, one giving NaN: where it weighs 0 it is not even run; where it weighs, every
    candidate's reward is NaN, so the row is an error - at beta 0 too, where the rule ignores rewards."""
    from pargs_batch.rewards.hf import WeightedScorer

    rows = [json.loads(line) for line in open(world["prompts"])][:6]
    for i, row in enumerate(rows):
        row["w"] = [1.0, 0.0] if i % 2 == 0 else [1.0, 1.0]
    source = tmp_path / "w.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = base_config(world, tmp_path, decode={"method": "blockwise", "beta": beta, "n_candidates": 3},
                      data={"source": str(source), "weights_column": "w"})
    cfg["reward"] = {"batch_size": 16, "models": [{"path": world["reward_model"]}, {"path": nan_reward_model}]}
    config = build(GenerateConfig, cfg)
    run_generate(config, models=(engine, tokenizer, WeightedScorer(config.reward)), progress=False)
    out = read_output(config.output.path).to_pylist()
    for i, r in enumerate(out):
        if i % 2 == 0:
            assert r["error"] is None and np.isfinite(r["rewards"]).all()
            assert r["reward_calls"] == 3 * len(r["rewards"])  # the NaN model, weighing 0, never ran
        else:
            assert r["finish_reason"] == "error" and r["error"].startswith("non-finite reward")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["pargs", "best-of-n"])
def test_a_repeated_id_is_an_error_row_and_the_first_row_is_written_once(world, tmp_path, models, method):
    source = duplicate_prompts(tmp_path / "dup.jsonl", world)
    cfg = build(GenerateConfig, base_config(world, tmp_path, data={"source": source, "limit": None},
                                            decode={"method": method, "num_samples": 2}))
    run_generate(cfg, models=models, progress=False)
    check_duplicates(read_output(cfg.output.path).to_pylist(), 2)
