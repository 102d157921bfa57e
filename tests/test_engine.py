"""The vLLM engine wrapper: the pure conversion, and the real engine against transformers."""

import numpy as np
import pytest
from vllm.logprobs import FlatLogprobs, Logprob

from pargs_batch.models.engine import topk_arrays


def test_topk_arrays_from_dicts_sorts_and_drops_the_extra_sampled_token():
    # vLLM adds the sampled token (here 9, rank 40) to the top-k it was asked for
    item = {5: Logprob(-2.0, 3, None), 7: Logprob(-0.5, 1, None), 2: Logprob(-1.0, 2, None),
            9: Logprob(-6.0, 40, None)}
    ids, lps = topk_arrays([item], 3)
    assert ids.tolist() == [[7, 2, 5]]
    assert lps.tolist() == [[-0.5, -1.0, -2.0]]


def test_topk_arrays_from_flat_pairs_breaks_ties_by_token_id_and_pads():
    # the flat form lists the sampled token (3) first, then the top-k again
    ids, lps = topk_arrays([([3, 3, 4, 1], [-0.1, -0.1, -1.0, -1.0])], 5)
    assert ids.tolist() == [[3, 1, 4, -1, -1]]
    assert lps[0, :3].tolist() == [-0.1, -1.0, -1.0] and np.all(np.isneginf(lps[0, 3:]))


def test_topk_arrays_reads_vllm_flat_logprobs():
    flat = FlatLogprobs()
    flat.append({11: Logprob(-0.2, 1, None), 12: Logprob(-1.7, 2, None)})
    from pargs_batch.models.engine import _flat_positions

    class Out:
        logprobs = flat

    ids, lps = topk_arrays([_flat_positions(Out())], 2)
    assert ids.tolist() == [[11, 12]] and np.allclose(lps, [[-0.2, -1.7]])


@pytest.mark.slow
def test_engine_topk_matches_transformers_log_softmax(engine, world, tokenizer):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(world["llm"], dtype=torch.float32).eval()
    prefixes = [tokenizer(t)["input_ids"] for t in
                ["review of the cafe :", "review of this book : staff was", "review of my phone : the"]]
    ids, lps = engine.topk(prefixes, 10)
    assert ids.shape == (3, 10) and np.all(np.diff(lps, axis=1) <= 0)
    for row, prefix in enumerate(prefixes):
        with torch.no_grad():
            logits = model(torch.tensor([prefix])).logits[0, -1]
        ref = torch.log_softmax(logits, dim=-1).topk(10)
        assert ids[row].tolist() == ref.indices.tolist()
        assert np.allclose(lps[row], ref.values.numpy(), atol=1e-4)


@pytest.mark.slow
def test_engine_is_batch_independent_and_prefix_cached(engine, tokenizer):
    prefix = tokenizer("review of the garden : food was")["input_ids"]
    alone = engine.topk([prefix], 5)
    crowd = engine.topk([tokenizer("review of x :")["input_ids"], prefix] * 8, 5)
    assert np.array_equal(alone[0][0], crowd[0][1])
    assert np.allclose(alone[1][0], crowd[1][1], atol=1e-5)
    assert engine.llm.llm_engine.vllm_config.cache_config.enable_prefix_caching
