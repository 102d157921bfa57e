"""in_engine/guide.py: the fused processor applies `decoding`'s statement of the rule: same candidate order, same scores,
same greedy choice as the stepped loop, ties included (pure torch/numpy on CPU; no engine)."""

from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pargs_batch import decoding  # noqa: E402
from pargs_batch.in_engine.rule import guided_scores, top_candidates  # noqa: E402
from pargs_batch.in_engine.state import Row  # noqa: E402
from pargs_batch.in_engine.processor import PargsLogitsProcessor  # noqa: E402


def tied_logits(rng, b=64, vocab=40):
    """Integer logits: many exact ties among the candidates (and in their scores)."""
    return torch.tensor(rng.integers(-4, 4, (b, vocab)), dtype=torch.float32)


def test_candidates_come_in_decodings_order_ties_to_the_lower_token_id():
    rng = np.random.default_rng(0)
    logp = torch.log_softmax(tied_logits(rng), dim=-1)
    ids, lps = top_candidates(logp, 10)
    assert ids.shape == lps.shape == (64, 10)
    assert np.allclose(lps, np.take_along_axis(logp.numpy(), ids, 1))
    ties = 0
    for row_ids, row_lps in zip(ids, lps):
        for j in range(9):
            assert row_lps[j] >= row_lps[j + 1]
            if row_lps[j] == row_lps[j + 1]:
                ties += 1
                assert row_ids[j] < row_ids[j + 1]
    assert ties > 100  # the inputs really had ties
    again, _ = decoding.order_candidates(ids[:, ::-1].copy(), lps[:, ::-1].copy(), 10)
    assert (again == ids).all()


@pytest.mark.parametrize("method", ["args", "pargs-greedy", "pargs", "topk"])
def test_guided_scores_are_decodings_scores_and_greedy_keeps_decodings_choice(method):
    rng = np.random.default_rng(1)
    spec = decoding.METHODS[method]
    logp = torch.log_softmax(tied_logits(rng), dim=-1)
    k = 10
    ids, lps = top_candidates(logp, k)
    rewards = rng.integers(-2, 3, (len(ids), k)).astype(np.float32)  # ties in the scores too
    beta = np.full(len(ids), 0.5 if spec.uses_reward else 0.0)
    got = guided_scores(lps, rewards, beta, np.full(len(ids), k), np.full(len(ids), spec.greedy))
    want = decoding.scores(lps, rewards if spec.uses_reward else None, beta[0])
    if spec.greedy:
        choice = decoding.choose(method, lps, rewards, beta[0], 1.0, np.zeros(len(ids)))
        assert (np.isfinite(got).sum(axis=1) == 1).all()
        assert (np.argmax(got, axis=1) == choice).all()
        assert np.allclose(got[np.arange(len(ids)), choice], want[np.arange(len(ids)), choice])
        tied = (want == want.max(axis=1, keepdims=True)).sum(axis=1) > 1
        assert tied.sum() > 5  # ties at the top, broken toward the more likely token
    else:
        assert np.array_equal(got, want)


def test_rows_with_a_smaller_k_get_minus_infinity_beyond_it():
    lps = np.log(np.full((2, 4), 0.25))
    got = guided_scores(lps, np.zeros((2, 4), np.float32), np.zeros(2), np.array([4, 2]), np.array([False, False]))
    assert np.isfinite(got[0]).all() and np.isfinite(got[1, :2]).all() and np.isneginf(got[1, 2:]).all()


def test_the_processor_rewrites_logits_by_the_rule():
    """``apply`` on a batch of unguided rows (no reward model needed): a greedy row's only finite
    logit is decoding's argmax, a sampled row's top-k hold log pi_ref, and rows it does not
    know are left alone."""
    rng = np.random.default_rng(2)
    proc = PargsLogitsProcessor(SimpleNamespace(additional_config=None), "cpu", False)
    for i, greedy in enumerate([True, False, True]):
        proc.adaptor.rows[i] = Row(key=str(i), k=5, beta=0.0, guided=False, greedy=greedy, prompt="", out_ids=[])
    logits = tied_logits(rng, b=4)
    before = logits.clone()
    out = proc.apply(logits)
    ids, lps = top_candidates(torch.log_softmax(before, dim=-1), 5)
    for i in (0, 2):
        assert torch.isfinite(out[i]).sum() == 1
        assert int(out[i].argmax()) == ids[i, decoding.greedy(lps[i: i + 1])[0]]
    finite = torch.isfinite(out[1])
    assert sorted(torch.nonzero(finite).flatten().tolist()) == sorted(ids[1].tolist())
    assert np.allclose(out[1, ids[1]].numpy(), lps[1], atol=1e-6)
    assert torch.equal(out[3], before[3])
