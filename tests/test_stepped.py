"""runners/stepped.py: the stepping loop of Algorithm 1 on the real vLLM engine and reward model of the tiny world."""

import json

import numpy as np
import pytest


from helpers import generate_rows as generate

pytestmark = pytest.mark.slow




def test_batching_never_changes_an_output(world, tmp_path, models):
    data = {"limit": 64}
    one, _ = generate(world, tmp_path, models, "b64", data=data, decode={"micro_batch_size": 64})
    sevens, summary = generate(world, tmp_path, models, "b7", data=data, decode={"micro_batch_size": 7})
    assert summary.micro_batches == 10 and len(one) == len(sevens) == 64
    for a, b in zip(one, sevens):
        assert a["response_token_ids"] == b["response_token_ids"] and a["response"] == b["response"]
        assert np.allclose(a["rewards"], b["rewards"], atol=1e-4)
    assert len({tuple(r["response_token_ids"]) for r in one}) > 10  # really sampled


def test_beta_zero_greedy_is_vllm_greedy_decoding(world, tmp_path, models, engine, tokenizer):
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    rows, _ = generate(world, tmp_path, models, data={"limit": 8},
                       decode={"method": "pargs-greedy", "beta": 0.0, "max_new_tokens": 24})
    prompts = [TokensPrompt(prompt_token_ids=tokenizer(r["prompt"])["input_ids"]) for r in rows]
    outs = engine.llm.generate(prompts, SamplingParams(max_tokens=24, temperature=0.0), use_tqdm=False)
    for row, out in zip(rows, outs):
        assert row["response_token_ids"] == list(out.outputs[0].token_ids)
        assert row["response"] == out.outputs[0].text


def test_rewards_column_holds_the_reward_of_each_chosen_prefix(world, tmp_path, models, scorer, tokenizer):
    rows, _ = generate(world, tmp_path, models, data={"limit": 4}, decode={"beta": 3.0})
    for row in rows:
        ids = row["response_token_ids"]
        prefixes = [tokenizer.decode(ids[: i + 1], skip_special_tokens=True) for i in range(len(ids))]
        expected = scorer.score([row["prompt"]] * len(ids), prefixes)
        assert len(row["rewards"]) == row["num_tokens"]
        assert np.allclose(row["rewards"], expected, atol=1e-4)


def test_guidance_raises_the_reward(world, tmp_path, models, scorer):
    def mean_reward(method):
        rows, _ = generate(world, tmp_path, models, method, data={"limit": 32},
                           decode={"method": method, "beta": 3.0})
        return scorer.score([r["prompt"] for r in rows], [r["response"] for r in rows]).mean()

    assert mean_reward("pargs") > mean_reward("topk") + 0.3


def test_samples_stop_strings_and_length(world, tmp_path, models):
    rows, _ = generate(world, tmp_path, models, data={"limit": 6},
                       decode={"num_samples": 3, "stop": [" ,", " but"], "max_new_tokens": 6})
    assert [(r["id"], r["sample_index"]) for r in rows][:4] == [("p00000", 0), ("p00000", 1),
                                                                 ("p00000", 2), ("p00001", 0)]
    assert len(rows) == 18
    reasons = {r["finish_reason"] for r in rows}
    assert reasons <= {"stop", "length", "eos"} and "stop" in reasons and "length" in reasons
    for r in rows:
        assert " ," not in r["response"] and " but" not in r["response"]
        if r["finish_reason"] == "length":
            assert r["num_tokens"] == 6
    by_prompt = {}
    for r in rows:
        by_prompt.setdefault(r["id"], set()).add(tuple(r["response_token_ids"]))
    assert any(len(v) > 1 for v in by_prompt.values())  # samples of one prompt differ


def test_bad_rows_get_an_error_and_the_rest_complete(world, tmp_path, models):
    source = tmp_path / "prompts.jsonl"
    records = [{"id": "ok1", "prompt": "review of the cafe :"}, {"id": "empty", "prompt": "  "},
               {"id": "number", "prompt": 17}, {"id": "long", "prompt": "review of the cafe : " * 100},
               {"id": "ok2", "prompt": "review of this book :"}]
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    rows, summary = generate(world, tmp_path, models, data={"source": str(source), "limit": None},
                             decode={"num_samples": 2})
    by_id = {(r["id"], r["sample_index"]): r for r in rows}
    assert len(rows) == 10 and summary.error_rows == 6
    for sample in (0, 1):
        assert by_id[("ok1", sample)]["error"] is None and by_id[("ok2", sample)]["num_tokens"] > 0
        assert by_id[("empty", sample)]["error"] == "prompt is empty"
        assert by_id[("number", sample)]["error"] == "prompt must be a string, got int"
        assert by_id[("number", sample)]["prompt"] is None
        long = by_id[("long", sample)]
        assert long["finish_reason"] == "error" and "the LLM's context is 256 tokens" in long["error"]
        assert long["num_tokens"] == 0 and long["response"] == ""


def test_ignore_eos_runs_to_max_new_tokens(world, tmp_path, models):
    rows, summary = generate(world, tmp_path, models, data={"limit": 4},
                             decode={"ignore_eos": True, "max_new_tokens": 40})
    assert all(r["finish_reason"] == "length" and r["num_tokens"] == 40 for r in rows)
    assert summary.tokens == 160
