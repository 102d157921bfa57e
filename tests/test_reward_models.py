"""Several reward models at once (reward.models) with per-prompt weights (data.weights_column), in
every method that uses a reward, stepped and fused, on the tiny world's real engine and models."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from pargs_batch.config import GenerateConfig
from pargs_batch.configlib import ConfigError, build
from pargs_batch.generation import run_generate
from pargs_batch.io.output import read_output

from helpers import base_config

pytestmark = pytest.mark.slow


def two(world, w1, w2, **extra):
    """reward.models: the trained RM and the untrained DeBERTa one (its own tokenizer), weighted."""
    return {"path": "", "models": [{"path": world["reward_model"], "weight": w1},
                                   {"path": world["reward_model_init"], "weight": w2, **extra}]}


def generate(world, tmp_path, models, name, reward=None, data=None, **decode):
    cfg = base_config(world, tmp_path, decode=decode, data=data or {})
    if reward is not None:
        cfg["reward"] = {"batch_size": 16, **reward}
    cfg["output"]["path"] = str(tmp_path / name)
    run_generate(build(GenerateConfig, cfg), models=models, progress=False)
    return read_output(tmp_path / name).to_pylist()


@pytest.fixture(scope="module")
def two_scorer(world):
    from pargs_batch.models.loading import Models

    config = build(GenerateConfig, base_config(world, Path("/tmp"), reward={"path": "", **two(world, 1.0, 0.0)}))
    return Models().scorer(config.reward)


@pytest.fixture(scope="module")
def second_scorer(world):
    from pargs_batch.config import RewardConfig
    from pargs_batch.rewards.hf import HFRewardScorer

    return HFRewardScorer(RewardConfig(path=world["reward_model_init"], batch_size=16))


def same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x["response_token_ids"] == y["response_token_ids"] and x["response"] == y["response"]
        assert (x["rewards"] is None) == (y["rewards"] is None)
        if x["rewards"] is not None:
            assert np.allclose(x["rewards"], y["rewards"], atol=1e-4)


@pytest.mark.parametrize("method,extra", [("pargs", {}), ("best-of-n", {"n_candidates": 4}),
                                          ("early-rejection", {"n_candidates": 4, "block_tokens": 4}),
                                          ("blockwise-greedy", {"n_candidates": 3, "block_tokens": 4})])
def test_weights_one_and_zero_equal_the_first_model_alone(world, tmp_path, models, two_scorer, method, extra):
    engine, tokenizer, _ = models
    decode = {"method": method, "max_new_tokens": 12, **extra}
    alone = generate(world, tmp_path, models, "alone", data={"limit": 8}, **decode)
    both = generate(world, tmp_path, (engine, tokenizer, two_scorer), "both", reward=two(world, 1.0, 0.0),
                    data={"limit": 8}, **decode)
    same(alone, both)
    assert both[0]["reward_model"] == f"1*{world['reward_model']} + 0*{world['reward_model_init']}"
    # a model that weighs 0 is not run: the same calls and tokens as the first model alone
    assert [(r["reward_calls"], r["reward_tokens"]) for r in both] == [(r["reward_calls"], r["reward_tokens"])
                                                                       for r in alone]


def test_the_reward_is_the_weighted_sum(world, tmp_path, models, scorer):
    from pargs_batch.config import RewardConfig
    from pargs_batch.rewards.hf import HFRewardScorer, WeightedScorer

    engine, tokenizer, _ = models
    config = build(GenerateConfig, base_config(world, tmp_path, reward=two(world, 0.5, -2.0)))
    weighted = WeightedScorer(config.reward)
    rows = generate(world, tmp_path, (engine, tokenizer, weighted), "w", reward=two(world, 0.5, -2.0),
                    data={"limit": 4}, max_new_tokens=6)
    other = HFRewardScorer(RewardConfig(path=world["reward_model_init"]))
    for row in rows:
        ids = row["response_token_ids"]
        prefixes = [tokenizer.decode(ids[: i + 1], skip_special_tokens=True) for i in range(len(ids))]
        prompts = [row["prompt"]] * len(ids)
        want = 0.5 * scorer.score(prompts, prefixes) - 2.0 * other.score(prompts, prefixes)
        assert np.allclose(row["rewards"], want, atol=1e-4)
        assert row["reward_calls"] == 2 * 10 * row["num_tokens"]  # both models, k = 10 candidates a token


def weighted_prompts(world, tmp_path):
    """The tiny world's prompts with weights: [1, 0] on even rows, [0, 1] on odd ones, and bad rows."""
    rows = [json.loads(line) for line in open(world["prompts"])][:10]
    for i, row in enumerate(rows):
        row["w"] = [1, 0] if i % 2 == 0 else [0.0, 1.0]
    rows[3]["w"] = [1, 0, 0]   # one weight too many
    rows[5]["w"] = "heavy"     # not a list
    del rows[7]["w"]           # none: the configured weights
    path = tmp_path / "weighted.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_per_prompt_weights_pick_each_prompts_model(world, tmp_path, models, two_scorer, second_scorer):
    engine, tokenizer, _ = models
    source = weighted_prompts(world, tmp_path)
    data = {"source": source, "limit": 10}
    decode = {"method": "pargs-greedy", "max_new_tokens": 10}
    first = generate(world, tmp_path, models, "first", data=data, **decode)
    second = generate(world, tmp_path, (engine, tokenizer, second_scorer), "second",
                      reward={"path": world["reward_model_init"]}, data=data, **decode)
    mixed = generate(world, tmp_path, (engine, tokenizer, two_scorer), "mixed", reward=two(world, 1.0, 0.0),
                     data={**data, "weights_column": "w"}, **decode)
    assert "holds 3 weights; reward.models has 2 models" in mixed[3]["error"]
    assert "expected a list of numbers" in mixed[5]["error"]
    for i in (0, 2, 4, 6, 8, 7):  # [1, 0], and row 7 with the configured (1, 0)
        same([first[i]], [mixed[i]])
    for i in (1, 9):
        same([second[i]], [mixed[i]])
    assert any(first[i]["response_token_ids"] != second[i]["response_token_ids"] for i in (1, 9))


def test_fused_mode_weights_like_stepped(world, tmp_path, models, second_scorer):
    """A fused engine whose logits processor holds both models: greedy rows equal the stepped
    single-model rows, for the configured weights and for each prompt's own."""
    from pargs_batch.models.loading import load_models

    source = weighted_prompts(world, tmp_path)
    decode = {"method": "pargs-greedy", "max_new_tokens": 10}
    stepped_first = generate(world, tmp_path, models, "s1", data={"source": source, "limit": 10}, **decode)
    stepped_second = generate(world, tmp_path, (models[0], models[1], second_scorer), "s2",
                              reward={"path": world["reward_model_init"]},
                              data={"source": source, "limit": 10}, **decode)
    cfg = base_config(world, tmp_path, engine={"mode": "fused"}, decode=decode,
                      data={"source": source, "limit": 10, "weights_column": "w"})
    cfg["reward"] = {"batch_size": 16, **two(world, 1.0, 0.0)}
    cfg["output"]["path"] = str(tmp_path / "fused")
    config = build(GenerateConfig, cfg)
    fused_models = load_models(config)
    try:
        run_generate(config, models=fused_models, progress=False)
    finally:
        fused_models[0].close()
    fused = read_output(tmp_path / "fused").to_pylist()
    for i in (0, 2, 4, 6, 8, 7):
        same([stepped_first[i]], [fused[i]])
    for i in (1, 9):
        same([stepped_second[i]], [fused[i]])
    assert fused[3]["error"] and fused[5]["error"]
    assert fused[0]["reward_calls"] == stepped_first[0]["reward_calls"]  # [1, 0]: the second model never runs


@pytest.mark.parametrize("reward,key,allowed", [
    ({"models": [{"path": "RM", "weight": "a lot"}]}, "reward.models[0].weight", "expected a finite number"),
    ({"models": [{"weight": 1.0}]}, "reward.models[0].path", "is required"),
    ({"models": [{"path": "RM", "dtype": "int4"}]}, "reward.models[0].dtype", "expected one of"),
    ({"models": [{"path": "RM", "colour": "red"}]}, "reward.models[0].colour", "unknown key"),
    ({"models": [{"path": "RM", "backend": "causal"}]}, "reward.models[0].backend", "hf backend"),
    ({"path": "RM", "models": [{"path": "RM"}]}, "reward.models", "not both"),
])
def test_bad_reward_model_lists_name_the_entry(world, tmp_path, reward, key, allowed):
    cfg = base_config(world, tmp_path)
    cfg["reward"] = json.loads(json.dumps(reward).replace('"RM"', json.dumps(world["reward_model"])))
    with pytest.raises(ConfigError) as err:
        build(GenerateConfig, cfg)
    assert str(err.value).startswith(f"config error: {key}=") and allowed in str(err.value)


def test_weights_column_needs_a_list_of_models_and_exits_2(world, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    cfg = base_config(world, tmp_path, data={"weights_column": "w"})
    with pytest.raises(ConfigError, match="data.weights_column.*need reward.models"):
        build(GenerateConfig, cfg)
    cfg["reward"] = two(world, 1.0, 1.0)
    cfg["data"]["weights_column"] = "no_such_column"
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cli = str(Path(sys.executable).parent / "pargs-batch")
    result = subprocess.run([cli, "generate", "--config", str(path)], capture_output=True, text=True, timeout=1800)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("config error: data.weights_column='no_such_column'") and "available" in lines[0]
