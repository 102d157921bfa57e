"""Autoregressive reward models (GenARM's idea): a causal LM π_r whose reward is its summed token
log-probabilities. Trained with real TRL in `rm_training` mode ``autoregressive`` (held-out accuracy
well above chance, full weights and LoRA); scored by ``reward.backend: autoregressive``, whose kept KV
state gives each candidate's reward as the hand-summed log-probabilities (through steps, dropped rows
and merged sessions); the stepped loop and the fused processor agree token for token when greedy
and in distribution when sampled; a reward model with another tokenizer is refused before any model
loads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import base_config

from pargs_batch.config import GenerateConfig, RewardConfig
from pargs_batch.configlib import ConfigError, build

pytestmark = pytest.mark.slow


def train_config(world, out, **overrides) -> dict:
    training = {"output_dir": str(out), "learning_rate": 3e-3, "per_device_train_batch_size": 16,
                "gradient_accumulation_steps": 1, "num_train_epochs": 4, "logging_steps": 20, "max_length": 128}
    training.update(overrides.pop("training", {}))
    return {"mode": "autoregressive", "model": world["llm"], "autoregressive_scale": 0.1,
            "data": {"source": world["preferences"], "format": "generic", "eval_fraction": 0.2},
            "training": training, **overrides}


def hand_summed(model_dir: str, prompt: list[int], response: list[int]) -> float:
    """Σ_t log π_r(y_t | x, y<t) by one plain transformers forward."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([prompt + response])).logits[0].float(), -1)
    return float(sum(logp[len(prompt) - 1 + t, token] for t, token in enumerate(response)))


def test_training_on_the_reduced_world_raises_held_out_accuracy_clearly_above_chance(reduced_world, tmp_path):
    """156 updates from the world's LM on its 616 guidance pairs, judged on the 408 pairs of the
    evaluation split (other prompts)."""
    from rm_training.config import TrainConfig
    from rm_training.train import train

    out = tmp_path / "ar"
    pairs = reduced_world["preferences"]
    cfg = train_config({"llm": reduced_world["llm"], "preferences": pairs["guidance"]}, out)
    cfg["data"] = {"source": pairs["guidance"], "format": "generic", "eval_source": pairs["evaluation"]}
    summary = train(build(TrainConfig, cfg))
    assert summary["mode"] == "autoregressive" and summary["steps"] == 156 and summary["eval_pairs"] == 408
    assert summary["eval_loss_after"] < summary["eval_loss_before"] - 0.05
    low, high = summary["pairwise_interval"]  # 95 % over the held-out pairs
    assert low > 0.55, (summary["pairwise_accuracy"], low, high)
    config = json.loads((out / "config.json").read_text())
    assert config["pargs_batch_reward"] == {"kind": "autoregressive", "scale": 0.1}
    from pargs_batch.rewards.autoregressive import is_autoregressive

    assert is_autoregressive(str(out))


def test_lora_adapters_are_merged_into_a_plain_causal_lm_checkpoint(world, tmp_path):
    from rm_training.config import TrainConfig
    from rm_training.train import train

    out = tmp_path / "lora"
    summary = train(build(TrainConfig, train_config(world, out, lora={"enabled": True, "r": 4, "alpha": 8},
                                                    training={"max_steps": 20})))
    assert summary["steps"] == 20 and not (out / "adapter_config.json").exists()
    from pargs_batch.rewards.autoregressive import AutoregressiveRewardScorer

    scorer = AutoregressiveRewardScorer(RewardConfig(path=str(out), backend="autoregressive"))
    assert np.isfinite(scorer.score(["review of the cafe :"], [" food was warm ."])).all()
    with pytest.raises(ConfigError, match="lora.enabled"):
        build(TrainConfig, {**train_config(world, out, lora={"enabled": True}), "mode": "partial"})
    # `pargs-batch init` reads what the checkpoint is and writes the backend that scores it
    import yaml

    from pargs_batch.starter import inspect, starter_yaml

    text = starter_yaml(world["llm"], str(out), world["prompts"], inspect(world["llm"], str(out), world["prompts"]))
    config = build(GenerateConfig, yaml.safe_load(text))
    assert config.reward.backend == "autoregressive" and config.reward.input == "template"
    # and `pargs-batch diagnose-rm` scores it as generation does, beside a classifier RM, bucket by bucket
    import subprocess
    import sys
    from pathlib import Path

    cli = str(Path(sys.executable).parent / "pargs-batch")
    done = subprocess.run([cli, "diagnose-rm", "--reward-model", str(out), "--reward-model", world["reward_model"],
                           "--pairs", world["preferences"], "--limit", "40", "--out", str(tmp_path / "diag")],
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads((tmp_path / "diag" / "diagnose.json").read_text())["reward_models"]
    assert set(found) == {str(out), world["reward_model"]}
    assert set(found[str(out)]["prefix_accuracy"]) == {"0-25%", "25-50%", "50-75%", "75-100%"}


def test_kept_kv_state_gives_the_hand_summed_reward_of_every_candidate(world, tokenizer):
    """Six steps of four prompts (one row dropped after step 2, two new prompts merged in at step 3):
    every candidate's reward is r(x, y) + log π_r(v | x, y) as a whole-sequence forward sums it."""
    from pargs_batch.rewards.autoregressive import AutoregressiveRewardScorer

    rm = world["llm"]  # any causal LM over the LLM's tokenizer is an autoregressive reward model
    scorer = AutoregressiveRewardScorer(RewardConfig(path=rm, backend="autoregressive"))
    prompts = [tokenizer(p)["input_ids"] for p in ("review of the cafe :", "review of the bar on the corner :",
                                                   "review of a show :", "review of the train :")]
    later = [tokenizer(p)["input_ids"] for p in ("review of the museum :", "review of the hotel :")]
    rows, responses = list(prompts), [[] for _ in prompts]
    session, rng = scorer.start(rows), np.random.default_rng(0)
    for step in range(6):
        if step == 2:
            scorer.keep(session, [0, 2, 3])
            rows, responses = [rows[i] for i in (0, 2, 3)], [responses[i] for i in (0, 2, 3)]
        if step == 3:
            session = scorer.merge(session, scorer.start(later))
            rows, responses = rows + later, responses + [[], []]
        cand = rng.integers(0, 300, size=(len(rows), 5))
        cand[0, -1] = -1  # an empty slot keeps the sequence's reward
        rewards = scorer.score_candidates(session, cand)
        for b in range(len(rows)):
            for j in (0, 3):
                expected = scorer.sequence_rewards([rows[b]], [responses[b] + [int(cand[b, j])]])[0]
                assert abs(rewards[b, j] - expected) < 1e-4, (step, b, j)
        assert rewards[0, -1] == pytest.approx(scorer.sequence_rewards([rows[0]], [responses[0]])[0], abs=1e-4)
        choice = rng.integers(0, 4, size=len(rows))
        scorer.commit(session, choice)
        for b in range(len(rows)):
            responses[b].append(int(cand[b, choice[b]]))
    assert scorer.sequence_rewards([rows[1]], [responses[1]])[0] == pytest.approx(
        hand_summed(rm, rows[1], responses[1]), abs=1e-4)


@pytest.fixture(scope="module")
def ar_models():
    from pargs_batch.models.loading import Models

    with Models() as models:
        yield models


def generate_both_modes(world, ar_models, tmp_path, rm, decode: dict, limit: int) -> dict[str, list[dict]]:
    """The same config in stepped and in fused mode, with the autoregressive backend: each mode's rows."""
    from pargs_batch.generation import run_generate
    from pargs_batch.io.output import read_output

    runs = {}
    for mode in ("stepped", "fused"):
        cfg = build(GenerateConfig, base_config(world, tmp_path / mode, engine={"mode": mode},
                                                reward={"path": rm, "backend": "autoregressive"},
                                                decode=decode, data={"limit": limit}))
        run_generate(cfg, models=ar_models.for_config(cfg), progress=False)
        runs[mode] = read_output(cfg.output.path).to_pylist()
        assert all(r["error"] is None for r in runs[mode]), mode
    return runs


def test_greedy_stepped_and_fused_give_the_same_rows_and_rewards_are_the_summed_logprobs(world, ar_models, tokenizer,
                                                                                          tmp_path):
    rm = world["llm"]  # pi_r over the LLM's tokenizer (trained or not, the mechanics are the same)
    runs = generate_both_modes(world, ar_models, tmp_path, rm, {"method": "pargs-greedy", "max_new_tokens": 24}, 12)
    stepped, fused = runs["stepped"], runs["fused"]
    # greedy: the same tokens and rewards, row for row
    assert [r["response_token_ids"] for r in stepped] == [r["response_token_ids"] for r in fused]
    assert np.allclose([x for r in stepped for x in r["rewards"]], [x for r in fused for x in r["rewards"]], atol=1e-4)
    for r in stepped[:2] + fused[:2]:  # the rewards column: each chosen prefix's summed log-probability under pi_r
        ids = r["response_token_ids"]
        prompt = tokenizer(r["prompt"])["input_ids"]
        assert r["rewards"][-1] == pytest.approx(hand_summed(rm, prompt, ids), abs=1e-3)
        assert r["rewards"][0] == pytest.approx(hand_summed(rm, prompt, ids[:1]), abs=1e-4)


def test_sampled_stepped_and_fused_draw_from_the_same_tilted_distribution_and_rewards_are_the_summed_logprobs(
        world, small_ar, ar_models, tokenizer, tmp_path):
    """Sampled PARGS draws other streams in the two modes (stepped: the keyed counter RNG of (seed, id,
    sample, step); fused: vLLM's sampler seeded by (seed, id, sample); docs/modes.md), so rows are not
    equal token for token; what both promise is the rule's distribution. 400 first tokens of one prompt
    in each mode fit softmax(log π_ref + β log π_r) over π_ref's top 3 (chi-square), the two modes'
    counts agree with each other, and every row's reward is log π_r of its token; longer sampled rows'
    rewards are their summed log-probabilities in both modes."""
    from scipy import stats

    beta, k, n = 1.5, 3, 400
    runs = generate_both_modes(world, ar_models, tmp_path / "first", small_ar,
                               {"method": "pargs", "top_k": k, "beta": beta, "max_new_tokens": 1, "num_samples": n}, 1)
    prompt = runs["stepped"][0]["prompt"]
    ids = tokenizer(prompt)["input_ids"]
    ref, r = next_token_logp(world["llm"], ids), next_token_logp(small_ar, ids)
    top = np.argsort(-ref)[:k]
    expected = np.exp(ref[top] + beta * r[top] - np.logaddexp.reduce(ref[top] + beta * r[top]))
    counts = {}
    for mode, rows in runs.items():
        assert len(rows) == n and all(row["prompt"] == prompt for row in rows), mode
        first = [row["response_token_ids"][0] for row in rows]
        assert set(first) <= set(top.tolist()), mode  # only π_ref's top k are candidates
        counts[mode] = np.array([first.count(int(t)) for t in top])
        assert stats.chisquare(counts[mode], expected * n)[1] > 1e-3, (mode, counts[mode], expected * n)
        for row in rows[:: n // 8]:  # the reward of a one-token reply: log π_r of that token
            assert row["rewards"] == [pytest.approx(r[row["response_token_ids"][0]], abs=1e-4)], mode
    table = np.array([counts["stepped"], counts["fused"]])
    assert stats.chi2_contingency(table[:, table.sum(axis=0) > 0])[1] > 1e-3, table  # the modes agree
    # and the tilt is visible: π_ref's own top-3 shares are not what either mode drew
    plain = np.exp(ref[top] - np.logaddexp.reduce(ref[top]))
    assert stats.chisquare(counts["stepped"] + counts["fused"], plain * 2 * n)[1] < 1e-6
    longer = generate_both_modes(world, ar_models, tmp_path / "longer", small_ar,
                                 {"method": "pargs", "beta": beta, "max_new_tokens": 16}, 4)
    for mode, rows in longer.items():
        for row in rows[:2]:
            prompt_ids = tokenizer(row["prompt"])["input_ids"]
            assert row["rewards"][-1] == pytest.approx(hand_summed(small_ar, prompt_ids, row["response_token_ids"]),
                                                       abs=1e-3), mode


def test_a_reward_model_with_another_tokenizer_is_refused_before_any_model_loads(world, tmp_path):
    from pargs_batch.generation import run_generate

    cfg = build(GenerateConfig, base_config(world, tmp_path, reward={"path": world["reward_model"],
                                                                     "backend": "autoregressive"}))
    with pytest.raises(ConfigError, match=r"reward.path=.*autoregressive needs the LLM's tokenizer"):
        run_generate(cfg, progress=False)
    with pytest.raises(ConfigError, match="reward.input"):
        build(RewardConfig, {"path": world["llm"], "backend": "autoregressive", "input": "pair"})


# ------------------------------------------------------------------ the whole vocabulary (top_k: 0)


@pytest.fixture(scope="module")
def small_ar(world, tmp_path_factory):
    """A π_r unlike π_ref: the world's LM after 30 autoregressive updates at a high learning rate."""
    from rm_training.config import TrainConfig
    from rm_training.train import train

    out = tmp_path_factory.mktemp("ar-small")
    train(build(TrainConfig, train_config(world, out, training={"max_steps": 30, "learning_rate": 1e-2})))
    return str(out)


def whole_config(world, path, rm, method, **decode) -> GenerateConfig:
    return build(GenerateConfig, base_config(world, path, engine={"mode": "fused"},
                                             reward={"path": rm, "backend": "autoregressive"},
                                             decode={"method": method, "top_k": 0, "beta": 1.5, **decode},
                                             data={"limit": 6}))


def test_whole_vocabulary_draws_follow_pi_ref_times_pi_r_to_the_beta(world, small_ar, ar_models, tokenizer, tmp_path):
    """10,000 first tokens drawn by vLLM's sampler under the processor (top_k 0) fit
    softmax(log π_ref + β log π_r) over every token of the vocabulary (chi-square)."""
    from scipy import stats

    from pargs_batch.guidance import GuideArgs

    engine, _, _ = ar_models.for_config(whole_config(world, tmp_path, small_ar, "pargs"))
    prompt, beta, n = "review of the cafe : food was", 1.5, 10000
    ids = tokenizer(prompt)["input_ids"]
    ref, r = next_token_logp(world["llm"], ids), next_token_logp(small_ar, ids)
    expected = np.exp(ref + beta * r - np.logaddexp.reduce(ref + beta * r))
    extra = [GuideArgs(key=f"whole/{i}", k=0, beta=beta, guided=True, greedy=False, prompt=prompt).to_wire()
             for i in range(n)]
    out = engine.guided([ids] * n, list(range(n)), extra, max_tokens=1, temperature=1.0, stop=[])
    first = np.array([o[0][0] for o in out])
    records = engine.fused_records([f"whole/{i}" for i in range(n)], list(first))
    # each draw's recorded reward is log π_r of the token drawn (the prompt's reward is 0)
    for i in range(0, n, 997):
        assert records[f"whole/{i}"].rewards_for([int(first[i])])[0] == pytest.approx(r[first[i]], abs=1e-4)
    observed = np.bincount(first, minlength=len(expected))[: len(expected)]
    keep = expected * n >= 5
    obs = np.append(observed[keep], observed[~keep].sum())
    exp = np.append(expected[keep], expected[~keep].sum()) * n
    assert stats.chisquare(obs, exp * obs.sum() / exp.sum())[1] > 1e-3, (obs, exp)
    plain = np.exp(ref) * n  # and far from π_ref alone: the reward moved them
    assert stats.chisquare(observed, plain * observed.sum() / plain.sum())[1] < 1e-6


def test_whole_vocabulary_greedy_is_the_argmax_of_the_product_and_rewards_are_summed(world, small_ar, ar_models,
                                                                                      tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    from pargs_batch.generation import run_generate
    from pargs_batch.io.output import read_output

    cfg = whole_config(world, tmp_path, small_ar, "pargs-greedy", max_new_tokens=10)
    run_generate(cfg, models=ar_models.for_config(cfg), progress=False)
    rows = read_output(cfg.output.path).to_pylist()
    llm = AutoModelForCausalLM.from_pretrained(world["llm"], dtype=torch.float32).eval()
    rm = AutoModelForCausalLM.from_pretrained(small_ar, dtype=torch.float32).eval()
    for row in rows[:3]:
        seq, chosen, summed = tokenizer(row["prompt"])["input_ids"], [], []
        with torch.no_grad():
            for _ in range(len(row["response_token_ids"])):
                ref = torch.log_softmax(llm(input_ids=torch.tensor([seq])).logits[0, -1].float(), -1)
                r = torch.log_softmax(rm(input_ids=torch.tensor([seq])).logits[0, -1].float(), -1)
                token = int(torch.argmax(ref + 1.5 * r))
                summed.append((summed[-1] if summed else 0.0) + float(r[token]))
                chosen.append(token)
                seq = seq + [token]
        assert row["response_token_ids"] == chosen and row["k"] == 0
        assert np.allclose(row["rewards"], summed, atol=1e-3)
    sampled = whole_config(world, tmp_path / "s", small_ar, "pargs", max_new_tokens=10)
    run_generate(sampled, models=ar_models.for_config(sampled), progress=False)
    for row in read_output(sampled.output.path).to_pylist()[:2]:
        prompt = tokenizer(row["prompt"])["input_ids"]
        assert row["rewards"][-1] == pytest.approx(hand_summed(small_ar, prompt, row["response_token_ids"]), abs=1e-3)


def test_the_whole_vocabulary_is_refused_where_it_cannot_run(world, tmp_path):
    cfg = base_config(world, tmp_path, decode={"top_k": 0}, reward={"path": world["llm"], "backend": "autoregressive"})
    with pytest.raises(ConfigError, match="decode.top_k=0.*engine.mode: fused"):
        build(GenerateConfig, cfg)
    cfg["engine"] = {"mode": "fused"}
    cfg["reward"] = {"path": world["reward_model"]}
    with pytest.raises(ConfigError, match="decode.top_k=0.*reward.backend: autoregressive"):
        build(GenerateConfig, cfg)


def next_token_logp(path: str, ids: list[int]):
    """log p(next token | ids) over the vocabulary, from a plain forward of the checkpoint at ``path``."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.no_grad():
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        return torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, -1].double(), -1).numpy()
