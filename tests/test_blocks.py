"""The block methods (blockwise, blockwise-greedy, early-rejection) and the cost columns, on the real
vLLM engine and reward model of the tiny world."""

import numpy as np
import pytest

from pargs_batch.io.batch import PromptRow
from pargs_batch.config import GenerateConfig
from pargs_batch.configlib import build
from pargs_batch.runners import make_runner

from helpers import base_config, generate_rows as generate

pytestmark = pytest.mark.slow




def runner(world, tmp_path, models, **decode):
    config = build(GenerateConfig, base_config(world, tmp_path, decode=decode))
    return make_runner(config, *models)


def prompts(world, n):
    import json

    with open(world["prompts"]) as f:
        rows = [json.loads(line) for line in f][:n]
    return [PromptRow(str(r["id"]), r["prompt"]) for r in rows]


def test_early_rejection_drops_the_worst_share_at_every_check(world, tmp_path, models, scorer):
    run = runner(world, tmp_path, models, method="early-rejection", n_candidates=8, reject_fraction=0.5,
                 block_tokens=4, max_new_tokens=16, ignore_eos=True)
    result = run.run(prompts(world, 3))
    for row in result.rows:
        # 8 candidates, then 4, 2, 1 after the checks at tokens 4, 8 and 12; the last block ends them all
        assert run.checks[(row.id, 0)] == [4, 2, 1]
        assert row.num_tokens == 16 and row.finish_reason == "length"
        assert row.llm_decode_tokens == 8 * 4 + 4 * 4 + 2 * 4 + 1 * 4
        assert row.reward_calls == 8 + 4 + 2 + 1
        assert len(row.rewards) == 4  # one per block boundary of the survivor
        assert np.isclose(row.rewards[-1], scorer.score([row.prompt], [row.response])[0], atol=1e-4)
        assert row.reward_tokens > 0 and row.llm_prefill_tokens > 0


def test_early_rejection_without_rejection_keeps_the_best_of_all_n(world, tmp_path, models, scorer):
    run = runner(world, tmp_path, models, method="early-rejection", n_candidates=4, reject_fraction=0.0,
                 block_tokens=4, max_new_tokens=12)
    finals = {}  # what the runner held when it wrote each row: the kept track and all N candidates
    write_row = run._row

    def spy(job, track, rows, error=None):
        finals[(job.prompt.id, job.sample_index)] = track, list(job.tracks), list(job.live)
        return write_row(job, track, rows, error)

    run._row = spy
    (row,) = run.run(prompts(world, 1)).rows
    assert run.checks[(row.id, 0)] in ([], [4], [4, 4], [4, 4, 4])  # nobody dropped
    assert row.reward_calls >= 4
    kept, candidates, live = finals[(row.id, 0)]
    assert live == [0, 1, 2, 3] and len(candidates) == 4 and all(c.reason for c in candidates)
    texts = [c.text for c in candidates]
    assert len(set(texts)) > 1, texts  # the candidates differ: which one is kept means something
    # every finished candidate scored afresh: the written response is the one the reward model ranks first
    fresh = scorer.score([row.prompt] * 4, texts)
    assert row.response == kept.text == texts[int(np.argmax(fresh))], (texts, fresh)
    assert np.isclose(row.rewards[-1], fresh.max(), atol=1e-4)
    assert all(np.isclose(c.reward, f, atol=1e-4) for c, f in zip(candidates, fresh))


def test_blockwise_blocks_and_their_rewards(world, tmp_path, models, scorer):
    run = runner(world, tmp_path, models, method="blockwise-greedy", n_candidates=4, block_tokens=4,
                 max_new_tokens=10, ignore_eos=True)
    for row in run.run(prompts(world, 3)).rows:
        assert row.num_tokens == 10 and row.finish_reason == "length"
        assert len(row.rewards) == 3  # blocks of 4, 4 and 2 tokens
        assert row.llm_decode_tokens == 4 * 10 and row.reward_calls == 4 * 3
        assert np.isclose(row.rewards[-1], scorer.score([row.prompt], [row.response])[0], atol=1e-4)


def test_blockwise_greedy_with_one_token_blocks_is_pargs_greedy(world, tmp_path, models):
    data = {"limit": 16}
    pargs, _ = generate(world, tmp_path, models, "pg", data=data,
                        decode={"method": "pargs-greedy", "top_k": 3, "max_new_tokens": 12})
    block, _ = generate(world, tmp_path, models, "bg", data=data,
                        decode={"method": "blockwise-greedy", "top_k": 3, "n_candidates": 48, "block_tokens": 1,
                                "max_new_tokens": 12})
    same = sum(a["response_token_ids"] == b["response_token_ids"] for a, b in zip(pargs, block))
    # K = 48 samples of 1 token from the top 3 draw the argmax of log pi + beta r unless it is very unlikely
    assert same >= 14, same
    for a, b in zip(pargs, block):
        if a["response_token_ids"] == b["response_token_ids"]:
            assert np.allclose(a["rewards"], b["rewards"], atol=1e-4)


def test_blockwise_with_one_token_blocks_samples_what_pargs_samples(world, tmp_path, models, engine, tokenizer,
                                                                     scorer):
    from pargs_batch import decoding

    data, n = {"limit": 2}, 300
    common = {"top_k": 3, "max_new_tokens": 1, "num_samples": n, "beta": 2.0, "micro_batch_size": 2}
    pargs, _ = generate(world, tmp_path, models, "p", data=data, decode={"method": "pargs", **common})
    block, _ = generate(world, tmp_path, models, "b", data=data,
                        decode={"method": "blockwise", "n_candidates": 64, "block_tokens": 1, **common})
    for prompt_index in range(2):
        prompt = pargs[prompt_index * n]["prompt"]
        ids, lps = engine.topk([tokenizer(prompt)["input_ids"]], 3)
        texts = [tokenizer.decode([t], skip_special_tokens=True) for t in ids[0]]
        r = scorer.score([prompt] * 3, texts)
        exact = decoding.softmax(decoding.scores(lps, r[None], 2.0))[0]
        for rows in (pargs, block):
            first = [row["response_token_ids"][0] for row in rows[prompt_index * n:(prompt_index + 1) * n]]
            freq = np.array([first.count(int(t)) for t in ids[0]]) / n
            assert np.abs(freq - exact).sum() / 2 < 0.08, (freq, exact)  # total variation distance


@pytest.mark.parametrize("method,extra", [("blockwise", {"n_candidates": 3}), ("early-rejection", {"n_candidates": 4})])
def test_block_methods_end_at_the_token_that_completes_a_stop_string(world, tmp_path, models, tokenizer, method,
                                                                     extra):
    # replies open "<noun> was <adjective>": "was " ends in the adjective's token, the first of the
    # second block, so each block's request sees only part of it and the stop is found across blocks
    rows, _ = generate(world, tmp_path, models, data={"limit": 16},
                       decode={"method": method, "max_new_tokens": 16, "stop": ["was "], "block_tokens": 2, **extra})
    stopped = [r for r in rows if r["finish_reason"] == "stop"]
    assert len(stopped) >= 8
    for r in stopped:
        ids = r["response_token_ids"]
        assert "was " not in r["response"] and "was " in tokenizer.decode(ids, skip_special_tokens=True)
        assert "was " not in tokenizer.decode(ids[:-1], skip_special_tokens=True)  # nothing generated past it
    assert sum(len(r["rewards"]) >= 2 for r in stopped) >= 8


@pytest.mark.parametrize("method,extra", [("blockwise", {"n_candidates": 3}),
                                          ("early-rejection", {"n_candidates": 4})])
def test_block_methods_never_depend_on_the_micro_batch(world, tmp_path, models, method, extra):
    decode = {"method": method, "block_tokens": 3, "max_new_tokens": 10, **extra}
    one, _ = generate(world, tmp_path, models, "b16", data={"limit": 12}, decode={**decode, "micro_batch_size": 12})
    fives, summary = generate(world, tmp_path, models, "b5", data={"limit": 12},
                              decode={**decode, "micro_batch_size": 5})
    assert summary.micro_batches == 3
    for a, b in zip(one, fives):
        assert a["response_token_ids"] == b["response_token_ids"] and a["response"] == b["response"]
        assert a["llm_decode_tokens"] == b["llm_decode_tokens"] and a["reward_calls"] == b["reward_calls"]
    assert len({tuple(r["response_token_ids"]) for r in one}) > 6  # really sampled
    assert all(r["method"] == method and r["error"] is None for r in one)


def test_cost_columns_count_what_each_method_spent(world, tmp_path, models):
    data = {"limit": 8}
    stepped, _ = generate(world, tmp_path, models, "s", data=data, decode={"top_k": 5})
    for row in stepped:
        assert row["llm_decode_tokens"] == row["num_tokens"]
        assert row["reward_calls"] == 5 * row["num_tokens"]
        assert row["reward_tokens"] > row["reward_calls"]  # every input holds the prompt
        assert row["llm_prefill_tokens"] >= row["num_tokens"] and row["wall_s"] > 0
    best, _ = generate(world, tmp_path, models, "n", data=data, decode={"method": "best-of-n", "n_candidates": 6})
    for row in best:
        assert row["reward_calls"] == 6 and row["llm_decode_tokens"] >= row["num_tokens"]
    top, _ = generate(world, tmp_path, models, "t", data=data, decode={"method": "topk"})
    assert all(r["reward_calls"] == 0 and r["reward_tokens"] == 0 for r in top)
