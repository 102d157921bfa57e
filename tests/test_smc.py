"""``decode.method: smc`` on the real vLLM engine and the world's reward models.

Exactness is tested on a target that can be enumerated: the world's LLM (top-k, k = 3) over a
two-token horizon, with a reward written by hand (a fixed value per response text). Every response
y and its π̃_ref(y) come from the engine's own top-k, so p*(y) ∝ π̃_ref(y) exp(β r(y)) and
Z = Σ_y π̃_ref(y) exp(β r(y)) are exact; the runner's returned responses must pass a chi-square
test against p* and fail it against π̃_ref, and exp(log_z) must average to Z.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from helpers import base_config, generate_rows

from pargs_batch import decoding
from pargs_batch.config import GenerateConfig
from pargs_batch.configlib import ConfigError, build
from pargs_batch.io.batch import PromptRow
from pargs_batch.runners import make_runner

pytestmark = pytest.mark.slow

K, HORIZON, BETA = 3, 2, 1.0


class TextReward:
    """A reward written by hand: each response text's value, uniform in [-1, 1] by a hash of the text
    (the empty response 0). It reads whole texts, as the ``hf`` backend does."""

    def __init__(self):
        self.calls = 0

    @staticmethod
    def value(text: str) -> float:
        if not text:
            return 0.0
        h = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
        return 2.0 * (h / 2**64) - 1.0

    def score_costed(self, contexts, responses):
        self.calls += len(responses)
        r = np.array([self.value(t) for t in responses], dtype=np.float32)
        ones = np.ones(len(responses), dtype=np.int64)
        return r, ones, ones


def smc_config(world, tmp_path, **decode) -> GenerateConfig:
    d = dict(method="smc", beta=BETA, top_k=K, max_new_tokens=HORIZON, ignore_eos=True, n_particles=32,
             block_tokens=1, ess_threshold=0.5, micro_batch_size=4096)
    d.update(decode)
    return build(GenerateConfig, base_config(world, tmp_path, decode=d))


def enumerate_target(engine, tokenizer, prompt_ids: list[int]) -> dict[tuple, tuple[float, str]]:
    """Every two-token response under top-k sampling: its π̃_ref and its text."""
    ids0, lp0 = engine.topk([prompt_ids], K)
    p0 = decoding.softmax(lp0)[0]
    second = engine.topk([prompt_ids + [int(t)] for t in ids0[0]], K)
    out = {}
    for a, (t0, q0) in enumerate(zip(ids0[0], p0)):
        p1 = decoding.softmax(second[1][a:a + 1])[0]
        for t1, q1 in zip(second[0][a], p1):
            seq = (int(t0), int(t1))
            out[seq] = (float(q0 * q1), tokenizer.decode(list(seq), skip_special_tokens=True))
    return out


def chi_square_p(counts: np.ndarray, probs: np.ndarray) -> float:
    from scipy.stats import chisquare

    return float(chisquare(counts, probs / probs.sum() * counts.sum()).pvalue)


@pytest.fixture(scope="module")
def target(world, engine, tokenizer):
    prompt = "review of the cafe :"
    prompt_ids = tokenizer(prompt)["input_ids"]
    table = enumerate_target(engine, tokenizer, prompt_ids)
    seqs = sorted(table)
    ref = np.array([table[s][0] for s in seqs])
    rewards = np.array([TextReward.value(table[s][1]) for s in seqs])
    star = ref * np.exp(BETA * rewards)
    return dict(prompt=prompt, seqs=seqs, ref=ref, star=star / star.sum(), z=float(star.sum()))


def run_rows(world, tmp_path, engine, tokenizer, prompt: str, rows: int, **decode):
    config = smc_config(world, tmp_path, **decode)
    runner = make_runner(config, engine, tokenizer, TextReward())
    result = runner.run([PromptRow(id=f"r{i}", prompt=prompt) for i in range(rows)])
    return result, runner


@pytest.mark.parametrize("proposal,rule", [("ref", "multinomial"), ("guided", "systematic")])
def test_returned_responses_follow_the_tilted_target_not_the_reference(world, tmp_path, engine, tokenizer, target,
                                                                       proposal, rule):
    result, _ = run_rows(world, tmp_path, engine, tokenizer, target["prompt"], 1500, smc_proposal=proposal,
                         resampling=rule)
    index = {s: i for i, s in enumerate(target["seqs"])}
    counts = np.bincount([index[tuple(r.response_token_ids)] for r in result.rows], minlength=len(index))
    assert chi_square_p(counts, target["star"]) > 1e-3
    assert chi_square_p(counts, target["ref"]) < 1e-6
    assert all(r.error is None and r.num_tokens == HORIZON for r in result.rows)


@pytest.mark.parametrize("n,proposal", [(4, "ref"), (4, "guided"), (16, "ref")])
def test_exp_log_z_is_unbiased_for_z(world, tmp_path, engine, tokenizer, target, n, proposal):
    result, _ = run_rows(world, tmp_path, engine, tokenizer, target["prompt"], 1200, n_particles=n,
                         smc_proposal=proposal, resampling="multinomial")
    z = np.exp([r.log_z for r in result.rows])
    mean, se = z.mean(), z.std(ddof=1) / np.sqrt(len(z))
    assert abs(mean - target["z"]) < 4 * se + 1e-9, (mean, se, target["z"])
    assert z.std() > 0  # an estimate, not a constant


@pytest.mark.parametrize("proposal,method", [("ref", "topk"), ("guided", "pargs")])
def test_one_particle_is_its_proposals_method_row_for_row(world, tmp_path, models, proposal, method):
    """N = 1: the ref proposal is top-k sampling, the guided one PARGS - the same tokens, row for row."""
    smc_rows, _ = generate_rows(world, tmp_path, models, "smc", data={"limit": 12},
                                decode={"method": "smc", "n_particles": 1, "smc_proposal": proposal})
    plain, _ = generate_rows(world, tmp_path, models, method, data={"limit": 12}, decode={"method": method})
    assert [r["response_token_ids"] for r in smc_rows] == [r["response_token_ids"] for r in plain]
    assert all(r["resamples"] == 0 and r["ess"] == 1.0 for r in smc_rows)
    if method == "pargs":  # the same rewards along the way
        np.testing.assert_allclose([x for r in smc_rows for x in r["rewards"]],
                                   [x for r in plain for x in r["rewards"]], rtol=1e-5)


def test_no_resampling_with_best_is_best_of_n_on_the_same_samples(world, tmp_path, engine, tokenizer, scorer):
    config = build(GenerateConfig, base_config(world, tmp_path, decode=dict(
        method="smc", n_particles=4, smc_proposal="ref", ess_threshold=0.0, smc_return="best", max_new_tokens=12)))
    runner = make_runner(config, engine, tokenizer, scorer)
    prompts = [PromptRow(id=f"p{i}", prompt=p) for i, p in enumerate(["review of the cafe :", "the food was"] * 3)]
    result = runner.run(prompts)
    one = make_runner(build(GenerateConfig, base_config(world, tmp_path, decode=dict(
        method="topk", max_new_tokens=12))), engine, tokenizer, scorer).run(prompts)
    by_row: dict = {}
    for c in result.candidates:
        by_row.setdefault((c.id, c.sample_index), []).append(c)
    for row, plain in zip(result.rows, one.rows):
        cands = by_row[(row.id, row.sample_index)]
        assert row.resamples == 0 and len(cands) == 4
        rewards = np.array([c.reward for c in cands])
        best = int(decoding.greedy(rewards[None])[0])  # best-of-n's choice on these samples
        assert cands[best].selected and row.response_token_ids == cands[best].response_token_ids
        assert cands[0].response_token_ids == plain.response_token_ids  # slot 0: top-k sampling's row
        # each reward is the reward model's reading of the whole response
        np.testing.assert_allclose(rewards, scorer.score([row.prompt] * 4, [c.response for c in cands]), atol=1e-5)


def test_rows_do_not_depend_on_the_batch_and_count_every_particle(world, tmp_path, models):
    decode = {"method": "smc", "n_particles": 6, "block_tokens": 3, "ess_threshold": 1.0, "ignore_eos": True,
              "max_new_tokens": 9}
    whole, _ = generate_rows(world, tmp_path, models, "whole", data={"limit": 10}, decode=decode)
    split, _ = generate_rows(world, tmp_path, models, "split", data={"limit": 10},
                             decode={**decode, "micro_batch_size": 3})
    key = lambda r: (r["response_token_ids"], r["resamples"])  # noqa: E731
    assert [key(r) for r in whole] == [key(r) for r in split]
    # the reward model's float32 batches differ in the last bits with the batch
    np.testing.assert_allclose([r["log_z"] for r in whole], [r["log_z"] for r in split], rtol=1e-5)
    for r in whole:
        assert r["resamples"] == 3 - 1  # every boundary but the last, where all have finished
        assert r["llm_decode_tokens"] == 6 * 9  # every particle's every token
        assert 1.0 <= r["ess"] <= 6.0 and np.isfinite(r["log_z"]) and len(r["rewards"]) == 9


def random_causal_head(world, out) -> str:
    """A random GPT-2 reward head over the world LLM's tokenizer (what ``reward.backend: causal`` reads)."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(world["llm"])
    GPT2ForSequenceClassification(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=256,
                                             num_labels=1, pad_token_id=tok.pad_token_id or 0)).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


@pytest.mark.parametrize("backend", ["causal", "autoregressive"])
def test_stateful_reward_models_carry_their_kv_state_through_resampling(world, tmp_path, engine, tokenizer, backend):
    """Resampling at every token copies KV rows; each row's last reward must equal the reward model's
    fresh reading of the whole response (the autoregressive one: the world's LLM itself). A wrong copy
    (a particle continuing another's KV rows) would read a different prefix."""
    from pargs_batch.config import RewardConfig
    from pargs_batch.rewards.factory import make_scorer

    path = random_causal_head(world, tmp_path / "rm") if backend == "causal" else world["llm"]
    scorer = make_scorer(RewardConfig(path=path, backend=backend, batch_size=64), len(tokenizer))
    cfg = base_config(world, tmp_path, reward={"path": path, "backend": backend},
                      decode=dict(method="smc", n_particles=5, block_tokens=1, ess_threshold=1.0, max_new_tokens=10,
                                  beta=0.5, smc_proposal="guided" if backend == "causal" else "ref",
                                  ignore_eos=True))  # a fresh reading of the text has no EOS to score
    runner = make_runner(build(GenerateConfig, cfg), engine, tokenizer, scorer)
    texts = ["review of the cafe :", "the food was", "our waiter", "the coffee", "we came back", "the staff"]
    prompts = [PromptRow(id=f"p{i}", prompt=p) for i, p in enumerate(texts)]
    result = runner.run(prompts)
    assert all(r.resamples == 9 for r in result.rows)
    assert len({tuple(c.response_token_ids) for c in result.candidates}) > len(prompts)  # the particles differ
    # rows whose text reads back as the same token ids (no EOS or special token inside, which a text drops)
    same = [r for r in result.rows
            if tokenizer(r.prompt + r.response)["input_ids"] == tokenizer(r.prompt)["input_ids"] + r.response_token_ids]
    assert len(same) >= 2
    fresh = scorer.score([r.prompt for r in same], [r.response for r in same])
    np.testing.assert_allclose([r.rewards[-1] for r in same], fresh, rtol=1e-3, atol=1e-3)


def test_bad_smc_settings_fail_before_any_model_loads(world, tmp_path):
    for key, value, allowed in [("n_particles", 0, "integer in [1"), ("smc_proposal", "twisted", "ref, guided"),
                                ("resampling", "stratified", "multinomial, systematic"),
                                ("ess_threshold", 1.5, "[0, 1]"), ("smc_return", "mean", "sample, best")]:
        with pytest.raises(ConfigError, match=rf"decode.{key}.*{value}") as err:
            build(GenerateConfig, base_config(world, tmp_path, decode={"method": "smc", key: value}))
        assert allowed in str(err.value)


def test_smc_on_the_ray_pool_writes_what_one_process_writes(ray_local, world, tmp_path, models):
    """The pool's worker runs the same runner (its reward calls on the reward actor): rows, population
    columns and costs equal an in-process run's."""
    from helpers import pool_config

    from pargs_batch.generation import run_generate
    from pargs_batch.io.output import read_output

    def config(name, on_ray):
        cfg = pool_config(world, tmp_path, name, batch=5, limit=10)
        cfg["ray"]["enabled"] = on_ray
        cfg["decode"].update(method="smc", n_particles=4, block_tokens=2, max_new_tokens=8, ess_threshold=1.0)
        return build(GenerateConfig, cfg)

    run_generate(config("here", False), models=models, progress=False)
    summary = run_generate(config("ray", True), progress=False)
    assert summary.rows == 10 and summary.placement is not None
    columns = ["response_token_ids", "resamples", "llm_decode_tokens", "reward_calls"]
    got = {r["id"]: [r[c] for c in columns] + [round(r["log_z"], 4)] for r in read_output(tmp_path / "ray").to_pylist()}
    want = {r["id"]: [r[c] for c in columns] + [round(r["log_z"], 4)] for r in read_output(tmp_path / "here").to_pylist()}
    assert got == want and all(v[1] > 0 for v in got.values())


def test_compare_runs_smc_at_each_budget(world, tmp_path):
    from pargs_batch.comparison.config import CompareConfig, plan_runs, run_configs

    config = GenerateConfig.from_dict(base_config(world, tmp_path))
    spec = CompareConfig.from_dict({"methods": ["best-of-n", "smc"],
                                    "budgets": {"smc": {"n_particles": [4, 16], "smc_proposal": ["ref", "guided"]}},
                                    "evaluation": {"gold_reward": "experiments.world.tiny:gold_reward"}})
    runs = plan_runs(config, spec)
    assert [r.label for r in runs][1:] == [f"smc n_particles={n} smc_proposal={p}" for n in (4, 16)
                                           for p in ("ref", "guided")]
    configs = run_configs(config, runs, tmp_path / "cmp", overwrite=False)
    last = configs["smc n_particles=16 smc_proposal=guided"]
    assert (last.decode.method, last.decode.n_particles, last.decode.smc_proposal) == ("smc", 16, "guided")


def test_serve_refuses_smc_in_one_line(world, tmp_path):
    from pargs_batch.serving.server import check_servable

    config = build(GenerateConfig, base_config(world, tmp_path, decode={"method": "smc"}))
    with pytest.raises(ConfigError, match=r"decode.method.*smc.*token by token") as err:
        check_servable(config)
    assert "\n" not in str(err.value)


def test_several_reward_models_weighted_one_and_zero_are_the_first_alone(world, tmp_path, engine, tokenizer, scorer):
    from pargs_batch.rewards.hf import WeightedScorer

    decode = dict(method="smc", n_particles=4, block_tokens=2, max_new_tokens=8, ess_threshold=1.0)
    prompts = [PromptRow(id=f"p{i}", prompt=p) for i, p in enumerate(["review of the cafe :", "the food was"])]
    one = make_runner(build(GenerateConfig, base_config(world, tmp_path, decode=decode)), engine, tokenizer,
                      scorer).run(prompts)
    cfg = base_config(world, tmp_path, decode=decode)
    cfg["reward"] = {"batch_size": 16, "models": [{"path": world["reward_model"], "weight": 1.0},
                                                  {"path": world["reward_model_init"], "weight": 0.0}]}
    config = build(GenerateConfig, cfg)
    mixed = make_runner(config, engine, tokenizer, WeightedScorer(config.reward)).run(prompts)
    assert [r.response_token_ids for r in mixed.rows] == [r.response_token_ids for r in one.rows]
    assert [r.reward_calls for r in mixed.rows] == [r.reward_calls for r in one.rows]  # weight 0 never ran
    np.testing.assert_allclose([r.log_z for r in mixed.rows], [r.log_z for r in one.rows], rtol=1e-5)


class FailAfter:
    """The session's reward scorer, failing from its ``calls``-th call on: a run whose last micro-batch
    fails on every try (its rows are written as retryable errors) after the others are written."""

    def __init__(self, scorer, calls: int):
        self.scorer, self.left = scorer, calls

    def score_costed(self, contexts, responses):
        self.left -= 1
        if self.left <= 0:
            raise RuntimeError("stopped part-way")
        return self.scorer.score_costed(contexts, responses)


def test_a_run_stopped_part_way_resumes_exactly_once(world, tmp_path, models):
    """Micro-batches written before the failure are kept, not made again; the failed one is made again
    on the rerun; every row equals a run that never failed, and is written once."""
    decode = {"method": "smc", "n_particles": 4, "block_tokens": 2, "max_new_tokens": 8, "ignore_eos": True,
              "micro_batch_size": 3}
    whole, _ = generate_rows(world, tmp_path, models, "whole", data={"limit": 9}, decode=decode)
    engine, tokenizer, scorer = models
    # 8 steps (one reward call each) a micro-batch: the third micro-batch fails, on every retry too
    failed, first = generate_rows(world, tmp_path, (engine, tokenizer, FailAfter(scorer, 8 * 2 + 3)), "resumed",
                                  data={"limit": 9}, decode=decode)
    assert first.retryable_error_rows == 3 and sum(r["error"] is None for r in failed) == 6
    resumed, summary = generate_rows(world, tmp_path, models, "resumed", data={"limit": 9}, decode=decode)
    key = lambda r: (r["id"], r["response_token_ids"], r["resamples"], r["error"])  # noqa: E731
    assert sorted(map(key, resumed)) == sorted(map(key, whole)) and len(resumed) == 9
    assert summary.resumed_rows == 6 and summary.retried_rows == 3
