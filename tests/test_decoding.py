"""The decode rules on fixed arrays: no models."""

import numpy as np
import pytest
from scipy import stats

from pargs_batch import decoding

LOGP = np.log(np.array([0.40, 0.25, 0.15, 0.10, 0.05, 0.03, 0.02]))
R = np.array([-1.0, 0.5, 1.0, -0.5, 2.0, 0.0, 1.5])


def draws(method, beta, n=20_000, temperature=1.0, seed=7):
    """n draws for one fixed candidate set, one per step key."""
    logp = np.tile(LOGP, (n, 1))
    rewards = np.tile(R, (n, 1))
    u = decoding.keyed_uniforms(seed, np.full(n, 123, dtype=np.uint64), np.zeros(n), np.arange(n))
    return decoding.choose(method, logp, rewards, beta, temperature, u)


@pytest.mark.parametrize("beta,temperature", [(1.0, 1.0), (2.5, 1.0), (1.0, 0.7)])
def test_pargs_frequencies_match_softmax_of_scores(beta, temperature):
    chosen = draws("pargs", beta, temperature=temperature)
    expected = np.exp((LOGP + beta * R) / temperature)
    expected = expected / expected.sum() * len(chosen)
    observed = np.bincount(chosen, minlength=len(LOGP))
    _, p = stats.chisquare(observed, expected)
    assert p > 0.01, (observed, expected.round())


def test_pargs_frequencies_reject_a_wrong_formula():
    """The chi-square test has power: the draws do not fit softmax(logp) when beta = 2."""
    chosen = draws("pargs", 2.0)
    wrong = np.exp(LOGP) / np.exp(LOGP).sum() * len(chosen)
    _, p = stats.chisquare(np.bincount(chosen, minlength=len(LOGP)), wrong)
    assert p < 1e-6


def test_beta_zero_pargs_is_topk():
    assert np.array_equal(draws("pargs", 0.0), draws("topk", 5.0))
    chosen = draws("topk", 0.0)
    expected = np.exp(LOGP) / np.exp(LOGP).sum() * len(chosen)
    _, p = stats.chisquare(np.bincount(chosen, minlength=len(LOGP)), expected)
    assert p > 0.01


@pytest.mark.parametrize("method", ["args", "pargs-greedy"])
def test_greedy_methods_take_the_argmax(method):
    rng = np.random.default_rng(0)
    logp = np.sort(rng.normal(size=(500, 10)), axis=1)[:, ::-1]
    rewards = rng.normal(size=(500, 10))
    u = rng.random(500)
    for beta in (0.0, 0.5, 3.0):
        chosen = decoding.choose(method, logp, rewards, beta, 1.0, u)
        assert np.array_equal(chosen, np.argmax(logp + beta * rewards, axis=1))
    # beta = 0 is plain greedy decoding: the most likely token
    assert np.all(decoding.choose(method, logp, rewards, 0.0, 1.0, u) == 0)


def test_missing_candidates_are_never_chosen():
    logp = np.array([[-0.1, -2.0, -np.inf, -np.inf]] * 2000)
    rewards = np.array([[0.0, 0.0, 100.0, 100.0]] * 2000)
    u = decoding.keyed_uniforms(0, np.zeros(2000, dtype=np.uint64), np.zeros(2000), np.arange(2000))
    assert decoding.choose("pargs", logp, rewards, 1.0, 1.0, u).max() <= 1
    assert decoding.choose("args", logp, rewards, 1.0, 1.0, u).max() <= 1


def test_uniforms_depend_only_on_their_key():
    ids = decoding.id_hashes(["a", "b", "c", "d"])
    sample = np.array([0, 1, 0, 2])
    step = np.array([5, 5, 9, 0])
    together = decoding.keyed_uniforms(3, ids, sample, step)
    alone = [decoding.keyed_uniforms(3, ids[i:i + 1], sample[i:i + 1], step[i:i + 1])[0] for i in range(4)]
    assert np.array_equal(together, np.array(alone))
    assert np.all((together >= 0) & (together < 1))
    # every part of the key matters
    assert decoding.keyed_uniforms(4, ids, sample, step)[0] != together[0]
    assert decoding.keyed_uniforms(3, ids, sample + 1, step)[0] != together[0]
    assert decoding.keyed_uniforms(3, ids, sample, step + 1)[0] != together[0]


def test_uniforms_are_uniform():
    n = 50_000
    u = decoding.keyed_uniforms(0, decoding.id_hashes(["x"] * n), np.zeros(n), np.arange(n))
    assert stats.kstest(u, "uniform").pvalue > 0.01


def test_id_hash_is_stable_across_processes():
    # a fixed value: the hash must not depend on PYTHONHASHSEED or the process
    assert int(decoding.id_hashes(["prompt-1"])[0]) == int.from_bytes(
        __import__("hashlib").blake2b(b"prompt-1", digest_size=8).digest(), "little")


def test_unknown_method_raises():
    with pytest.raises(KeyError):
        decoding.choose("beam", np.zeros((1, 2)), None, 1.0, 1.0, np.zeros(1))
