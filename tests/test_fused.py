"""engine.mode: fused - guidance inside vLLM as a logits processor, against the stepped loop."""

import numpy as np
import pytest
from helpers import base_config
from scipy import stats

from pargs_batch.config import GenerateConfig

from pargs_batch.configlib import ConfigError, build
from pargs_batch.generation import run_generate
from pargs_batch.io.output import read_output

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fused_models(world, tmp_path_factory):
    from pargs_batch.models.loading import load_models

    cfg = build(GenerateConfig, base_config(world, tmp_path_factory.mktemp("f"), engine={"mode": "fused"}))
    models = load_models(cfg)
    yield models
    models[0].close()


def _run(world, path, models, mode, method, **decode):
    cfg = base_config(world, path, engine={"mode": mode}, decode={"method": method, **decode})
    config = build(GenerateConfig, cfg)
    summary = run_generate(config, models=models, progress=False)
    return summary, read_output(config.output.path).to_pylist()


@pytest.mark.parametrize("method", ["args", "pargs-greedy"])
def test_greedy_outputs_and_rewards_are_the_same_in_both_modes(world, tmp_path, models, fused_models, method):
    _, stepped = _run(world, tmp_path / "stepped", models, "stepped", method, max_new_tokens=24)
    summary, fused = _run(world, tmp_path / "fused", fused_models, "fused", method, max_new_tokens=24)
    assert summary.rows == 32 and all(r["error"] is None for r in fused)
    for a, b in zip(stepped, fused):
        assert (a["id"], a["sample_index"]) == (b["id"], b["sample_index"])
        assert a["response_token_ids"] == b["response_token_ids"] and a["response"] == b["response"]
        assert a["finish_reason"] == b["finish_reason"]
        assert np.allclose(a["rewards"], b["rewards"], atol=1e-4)
    assert summary.phase_s.reward > 0 and summary.phase_s.engine > 0
    (guidance,) = summary.guidance  # the engine's reward model: its load time; on CPU nothing reserved
    assert guidance.reward_load_s > 0 and guidance.reserved_bytes == 0
    assert guidance.largest_step["k"] == 20 and guidance.largest_step["tokens"] == 256


def test_fused_sampling_is_batch_independent_and_seeded(world, tmp_path, fused_models):
    _, whole = _run(world, tmp_path / "a", fused_models, "fused", "pargs", micro_batch_size=32)
    _, split = _run(world, tmp_path / "b", fused_models, "fused", "pargs", micro_batch_size=5)
    assert [r["response_token_ids"] for r in whole] == [r["response_token_ids"] for r in split]
    _, other = _run(world, tmp_path / "c", fused_models, "fused", "pargs", seed=1)
    assert [r["response_token_ids"] for r in whole] != [r["response_token_ids"] for r in other]


def test_fused_first_token_draws_follow_softmax_of_logp_plus_beta_r(world, engine, scorer, tokenizer, fused_models):
    """20,000 first tokens from vLLM's seeded sampler under the processor fit softmax(logp + beta r)."""
    from pargs_batch import decoding
    from pargs_batch.guidance import GuideArgs

    prompt, beta, k, n = "review of the cafe : food was", 2.0, 10, 20000  # next: a pleasant or unpleasant word
    ids = tokenizer(prompt)["input_ids"]
    cand, logp = engine.topk([ids], k)
    texts = [tokenizer.decode([t]) for t in cand[0]]
    rewards = scorer.score([prompt] * k, texts)
    expected = decoding.softmax(decoding.scores(logp, rewards[None, :], beta))[0]

    extra = [GuideArgs(key=f"chi/{i}", k=k, beta=beta, guided=True, greedy=False, prompt=prompt).to_wire()
             for i in range(n)]
    out = fused_models[0].guided([ids] * n, list(range(n)), extra, max_tokens=1, temperature=1.0, stop=[])
    fused_models[0].fused_records([f"chi/{i}" for i in range(n)])  # the processor's records, dropped
    first = np.array([o[0][0] for o in out])
    assert set(first) <= set(cand[0])  # nothing outside the top-k is ever drawn
    observed = np.array([(first == t).sum() for t in cand[0]])
    keep = expected * n >= 5  # chi-square needs expected counts of at least 5
    obs = np.append(observed[keep], observed[~keep].sum())
    exp = np.append(expected[keep], expected[~keep].sum()) * n
    _, p = stats.chisquare(obs[exp > 0], exp[exp > 0] * obs.sum() / exp.sum())
    assert p > 1e-3, (observed, expected * n)
    # and the draws are far from plain softmax(logp): the reward moved them
    plain = decoding.softmax(logp)[0] * n
    assert stats.chisquare(observed, plain * observed.sum() / plain.sum())[1] < 1e-6


def test_fused_mode_is_checked_before_any_model_loads(world, tmp_path):
    with pytest.raises(ConfigError, match="engine.mode.*'turbo'"):
        build(GenerateConfig, base_config(world, tmp_path, engine={"mode": "turbo"}))


def test_fused_writes_a_repeated_id_as_an_error_row_and_the_first_once(world, tmp_path, fused_models):
    from helpers import check_duplicates, duplicate_prompts

    source = duplicate_prompts(tmp_path / "dup.jsonl", world)
    cfg = base_config(world, tmp_path, engine={"mode": "fused"},
                      data={"source": source, "limit": None}, decode={"num_samples": 2})
    run_generate(build(GenerateConfig, cfg), models=fused_models, progress=False)
    check_duplicates(read_output(cfg["output"]["path"]).to_pylist(), 2)


def test_fused_with_tensor_parallelism_is_a_config_error(world, tmp_path):
    cfg = base_config(world, tmp_path, engine={"mode": "fused"})
    cfg["model"]["tensor_parallel_size"] = 2
    with pytest.raises(ConfigError, match="engine.mode='fused'.*tensor_parallel_size > 1"):
        build(GenerateConfig, cfg)
    cfg["engine"]["mode"] = "stepped"
    assert build(GenerateConfig, cfg).model.tensor_parallel_size == 2  # stepped mode takes TP


def test_a_fused_engine_starts_in_a_process_that_imported_flask(world):
    """On CPU a fused engine is built in this process, and vLLM's worker then scans every module's
    namespace; flask's context proxies (imported by moto's S3 server, or any HTTP app) raise when
    touched outside an app context and used to kill the engine's start."""
    import sys

    import flask

    from pargs_batch.config import ModelConfig
    from pargs_batch.guidance import GuideArgs
    from pargs_batch.models.loading import fused_engine

    model = ModelConfig(path=world["llm"], dtype="float32", max_model_len=256, kv_cache_memory_bytes=32 << 20)
    engine = fused_engine(model, None, world["llm"])
    try:
        assert engine.in_process and sys.modules["flask"] is flask  # put back after the build
        extra = [GuideArgs(key="flask", k=3, beta=0.0, guided=False, greedy=True).to_wire()]
        (tokens, _, reason), = engine.guided([[5, 6, 7]], [0], extra, max_tokens=4, temperature=0.0, stop=[])
        assert len(tokens) == 4 and reason == "length"
    finally:
        engine.close()
