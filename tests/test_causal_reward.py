"""The causal reward backend: incremental scores equal full recomputation; generation uses it."""

import numpy as np
import pytest
import torch

from pargs_batch.config import GenerateConfig, RewardConfig

from pargs_batch.configlib import ConfigError, build


@pytest.fixture(scope="module")
def causal(reduced_world):
    from pargs_batch.rewards.causal import CausalRewardScorer

    return CausalRewardScorer(RewardConfig(path=reduced_world["rm_partial_causal"], batch_size=64))


def full_scores(scorer, sequences):
    """The hf model's own forward over each whole sequence (no cache, no custom mask)."""
    with torch.inference_mode():
        return np.array([float(scorer.model(input_ids=torch.tensor([s])).logits[0, 0]) for s in sequences])


def test_incremental_scores_equal_full_recomputation_over_64_steps(causal):
    rng = np.random.default_rng(0)
    vocab = causal.model.config.vocab_size
    prompts = [list(rng.integers(0, vocab, n)) for n in (3, 11, 7, 20, 5, 9)]
    seqs = [list(map(int, p)) for p in prompts]
    alive = list(range(len(seqs)))
    ends = {0: 10, 3: 40}  # sequences leave mid-way: the session drops their rows
    session = causal.start(seqs)
    checked = 0
    for step in range(64):
        cand = rng.integers(0, vocab, (len(alive), 10))
        cand[0, -1] = -1  # a padded candidate slot (vocabulary smaller than k) must not break a row
        got = causal.score_candidates(session, cand)
        for row, i in enumerate(alive):
            valid = [c for c in cand[row] if c >= 0]
            want = full_scores(causal, [seqs[i] + [int(c)] for c in valid])
            assert np.allclose(got[row, : len(valid)], want, atol=1e-4), (step, i)
            checked += len(valid)
        choice = rng.integers(0, 9, len(alive))
        causal.commit(session, choice)
        for row, i in enumerate(alive):
            seqs[i].append(int(cand[row, choice[row]]))
        keep = [row for row, i in enumerate(alive) if ends.get(i, 99) > step]
        causal.keep(session, keep)
        alive = [alive[row] for row in keep]
    assert checked > 3000 and len(seqs[5]) == 9 + 64
    # the whole-text path agrees with the token path when the text re-tokenises to the same ids
    text = causal.tokenizer.decode(seqs[5])
    ids = causal.tokenizer(text)["input_ids"]
    assert np.isclose(causal.score_ids([ids])[0], full_scores(causal, [ids])[0], atol=1e-4)


def test_causal_backend_refuses_a_bidirectional_model_and_another_template(reduced_world):
    from pargs_batch.rewards.causal import CausalRewardScorer

    with pytest.raises(ConfigError, match="reward.backend.*causal reward model"):
        CausalRewardScorer(RewardConfig(path=reduced_world["rm_partial"], backend="causal"))
    with pytest.raises(ConfigError, match="reward.template"):
        CausalRewardScorer(RewardConfig(path=reduced_world["rm_partial_causal"], backend="causal",
                                        template="Q: {prompt} A: {response}"))
    with pytest.raises(ConfigError, match="reward.backend.*'vllm'"):
        RewardConfig(backend="vllm")


@pytest.mark.slow
def test_generation_with_the_causal_backend_records_exact_rewards(reduced_world, tmp_path):
    from pargs_batch.generation import run_generate
    from pargs_batch.io.output import read_output
    from pargs_batch.models.loading import load_models

    cfg = {
        "model": {"path": reduced_world["llm"], "dtype": "float32", "max_model_len": 256,
                  "kv_cache_memory_bytes": 64 << 20},
        "reward": {"path": reduced_world["rm_partial_causal"], "backend": "causal"},
        "decode": {"method": "pargs", "beta": 2.0, "top_k": 10, "max_new_tokens": 24, "seed": 0,
                   "micro_batch_size": 8},
        "data": {"source": reduced_world["prompts"], "id_column": "id", "limit": 16},
        "output": {"path": str(tmp_path / "causal")},
        "ray": {"enabled": False},
    }
    config = build(GenerateConfig, cfg)
    models = load_models(config)
    try:
        summary = run_generate(config, models=models, progress=False)
        rows = read_output(tmp_path / "causal").to_pylist()
        assert summary.rows == 16 and all(r["error"] is None for r in rows)
        scorer, tokenizer = models[2], models[1]
        for r in rows[:6]:  # each step's recorded reward is the RM's score of prompt + tokens so far
            prompt_ids = tokenizer(r["prompt"])["input_ids"]
            ids = r["response_token_ids"]
            want = full_scores(scorer, [prompt_ids + ids[: i + 1] for i in range(len(ids))])
            assert np.allclose(r["rewards"], want, atol=1e-4)
        # greedy decoding agrees with the hf backend wherever both see the same token ids
        cfg["decode"]["method"] = "pargs-greedy"
        greedy = {}
        for backend in ("causal", "hf"):
            cfg["reward"]["backend"] = backend
            cfg["output"]["path"] = str(tmp_path / f"greedy-{backend}")
            c = build(GenerateConfig, cfg)
            from pargs_batch.rewards.factory import make_scorer

            run_generate(c, models=(models[0], tokenizer, make_scorer(c.reward, len(tokenizer))), progress=False)
            greedy[backend] = {r["id"]: r["response_token_ids"] for r in read_output(c.output.path).to_pylist()}
        same = sum(greedy["causal"][i] == greedy["hf"][i] for i in greedy["hf"])
        assert same >= 12, same  # re-tokenising text can split a word differently; rarely
    finally:
        models[0].close()


@pytest.mark.slow
def test_fused_mode_with_the_causal_backend_matches_stepped(reduced_world, tmp_path):
    """The logits processor keeps the causal RM's KV state across vLLM's batch changes."""
    from pargs_batch.generation import run_generate
    from pargs_batch.io.output import read_output
    from pargs_batch.models.loading import load_models

    runs = {}
    for mode in ("stepped", "fused"):
        cfg = build(GenerateConfig, {
            "model": {"path": reduced_world["llm"], "dtype": "float32", "kv_cache_memory_bytes": 64 << 20},
            "engine": {"mode": mode},
            "reward": {"path": reduced_world["rm_partial_causal"], "backend": "causal"},
            "decode": {"method": "pargs-greedy", "beta": 2.0, "top_k": 10, "max_new_tokens": 24, "seed": 0,
                       "micro_batch_size": 12},  # micro-batches of 12: rows join and leave the session
            "data": {"source": reduced_world["prompts"], "id_column": "id", "limit": 24},
            "output": {"path": str(tmp_path / mode)},
            "ray": {"enabled": False},
        })
        models = load_models(cfg)
        try:
            run_generate(cfg, models=models, progress=False)
        finally:
            models[0].close()
        runs[mode] = read_output(tmp_path / mode).to_pylist()
    assert len(runs["fused"]) == 24 and all(r["error"] is None for r in runs["fused"])
    for a, b in zip(runs["stepped"], runs["fused"]):
        assert a["response_token_ids"] == b["response_token_ids"]
        assert np.allclose(a["rewards"], b["rewards"], atol=1e-4)
