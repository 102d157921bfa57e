"""What a busy GPU does, on CPU: a KV cache too small for the micro-batch makes vLLM preempt
requests and add them back with their output so far. Fused mode must come out exactly as if
nothing happened (greedy equals stepped token for token; every recorded reward is a re-score of
its prefix), for the hf and the causal backend; sampled rows stay batch-independent."""

import numpy as np
import pytest
import torch

from pargs_batch.config import GenerateConfig
from pargs_batch.configlib import build
from pargs_batch.generation import run_generate
from pargs_batch.io.output import read_output

pytestmark = pytest.mark.slow

MAX_LEN = 128


def kv_bytes(llm: str, tokens: int) -> int:
    """KV-cache bytes holding ``tokens`` tokens of the float32 GPT-2 ``llm``."""
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(llm)
    return 2 * c.n_layer * c.n_embd * 4 * tokens


def config(world, path, backend, mode, method, tight, **decode):
    reward = world["rm_partial_causal"] if backend == "causal" else world["rm_partial"]
    return build(GenerateConfig, {
        "model": {"path": world["llm"], "dtype": "float32", "max_model_len": MAX_LEN, "log_stats": True,
                  # tight: room for about 1.5 full-length sequences; the 32 requests need ~10x that
                  "kv_cache_memory_bytes": kv_bytes(world["llm"], 192 if tight else 8192)},
        "engine": {"mode": mode},
        "reward": {"path": reward, "backend": backend, "template": world["template"]},
        "decode": {"method": method, "beta": 2.0, "top_k": 10, "max_new_tokens": 32, "seed": 0,
                   "micro_batch_size": 32, "ignore_eos": True, **decode},
        "data": {"source": world["prompts"], "id_column": "id", "limit": 32},
        "output": {"path": str(path)},
        "ray": {"enabled": False},
    })


@pytest.fixture(scope="module")
def stepped_models(reduced_world, tmp_path_factory):
    from pargs_batch.models.loading import Models

    with Models() as models:
        yield models


@pytest.mark.parametrize("backend", ["hf", "causal"])
def test_fused_under_preemption_equals_stepped_and_records_exact_rewards(reduced_world, tmp_path, backend,
                                                                         stepped_models):
    from pargs_batch.models.loading import Models

    w = reduced_world
    ref_cfg = config(w, tmp_path / "stepped", backend, "stepped", "pargs-greedy", tight=False)
    run_generate(ref_cfg, models=stepped_models.for_config(ref_cfg), progress=False)
    stepped = read_output(tmp_path / "stepped").to_pylist()

    with Models() as models:
        fused = {}
        for name, method, b in (("greedy", "pargs-greedy", 32), ("sampled", "pargs", 32), ("sampled-b8", "pargs", 8)):
            cfg = config(w, tmp_path / name, backend, "fused", method, tight=True, micro_batch_size=b)
            summary = run_generate(cfg, models=models.for_config(cfg), progress=False)
            assert summary.error_rows == 0
            if b == 32:
                assert summary.preemptions > 0, summary  # the KV cache really was too small
            fused[name] = read_output(tmp_path / name).to_pylist()
        engine, tokenizer, _ = models.for_config(cfg)

    for a, b in zip(stepped, fused["greedy"]):
        assert a["id"] == b["id"] and a["response_token_ids"] == b["response_token_ids"]
        assert np.allclose(a["rewards"], b["rewards"], atol=1e-4)
    # every recorded reward is the reward model's score of that prefix, preempted rows included
    scorer = stepped_models.scorer(ref_cfg.reward, len(tokenizer))
    for row in fused["sampled"][:8]:
        ids = row["response_token_ids"]
        assert len(row["rewards"]) == len(ids) == 32
        if backend == "causal":  # the model's own forward and pooling over each whole prefix
            prompt_ids = tokenizer(row["prompt"])["input_ids"]
            with torch.inference_mode():
                want = [float(scorer.model(input_ids=torch.tensor([prompt_ids + ids[: i + 1]])).logits[0, 0])
                        for i in range(len(ids))]
        else:
            prefixes = [tokenizer.decode(ids[: i + 1], skip_special_tokens=True) for i in range(len(ids))]
            want = scorer.score([row["prompt"]] * len(ids), prefixes)
        assert np.allclose(row["rewards"], want, atol=1e-4)
    # preempted at different moments, the sampled rows do not change
    assert [r["response_token_ids"] for r in fused["sampled"]] == [r["response_token_ids"] for r in fused["sampled-b8"]]
