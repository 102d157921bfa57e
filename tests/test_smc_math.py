"""SMC's array maths (pargs_batch.smc), without models: the proposal correction, ESS, the two
resampling rules' offspring counts, the returned particle, the keys."""

from __future__ import annotations

import numpy as np
import pytest

from pargs_batch import smc
from pargs_batch.decoding import keyed_uniforms, softmax


def test_the_guided_correction_makes_the_fully_adapted_weight():
    """At T = 1, π̃(v) exp(β r(y·v)) / q(v) is the same for every v: Σ_u π̃(u) exp(β r(y·u))."""
    rng = np.random.default_rng(0)
    lp = np.log(softmax(rng.normal(size=(5, 4)))) - 0.3  # raw logprobs of a top 4 (not summing to one)
    r = rng.normal(size=(5, 4))
    beta = 1.7
    pi = softmax(lp)
    expected = np.log((pi * np.exp(beta * r)).sum(1))
    for v in range(4):
        choice = np.full(5, v)
        got = smc.proposal_correction(lp, r, beta, 1.0, choice) + beta * r[:, v]
        np.testing.assert_allclose(got, expected, rtol=1e-12)
    np.testing.assert_array_equal(smc.proposal_correction(lp, None, beta, 1.0, np.zeros(5, int)), 0.0)


def test_ess_and_when_to_resample():
    assert smc.ess(np.zeros(8)) == pytest.approx(8)
    assert smc.ess(np.array([0.0, -np.inf, -np.inf])) == pytest.approx(1)
    assert smc.ess(np.full(3, -np.inf)) == 0
    skewed = np.log(np.array([0.7, 0.1, 0.1, 0.1]))
    assert smc.ess(skewed) == pytest.approx(1 / (0.49 + 0.03))
    assert not smc.should_resample(skewed, 0.0)
    assert smc.should_resample(np.zeros(4), 1.0)  # τ = 1: every block, even with equal weights
    assert smc.should_resample(skewed, 0.5) and not smc.should_resample(skewed, 0.4)


@pytest.mark.parametrize("rule", smc.RULES)
def test_resampling_keeps_each_particles_expected_copies(rule):
    """Over many keyed draws, particle i gets N·W_i copies on average; systematic within one of it."""
    w = np.array([0.5, 0.25, 0.125, 0.0625, 0.0625])
    logw = np.log(w) + 3.0
    n, draws = len(w), 4000
    counts = np.zeros((draws, n))
    for d in range(draws):
        hashes = smc.particle_hashes(np.uint64(d * 7919 + 1), n)
        u = smc.resample_uniforms(0, hashes, 0, 5, rule)
        counts[d] = np.bincount(smc.ancestors(logw, u, rule), minlength=n)
    np.testing.assert_allclose(counts.mean(0), n * w, atol=4 * counts.std(0).max() / np.sqrt(draws) + 1e-9)
    if rule == "systematic":
        assert (np.abs(counts - n * w) < 1 + 1e-9).all()
    assert (counts.sum(1) == n).all()


def test_zero_weight_particles_are_never_chosen():
    logw = np.array([-np.inf, 0.0, -np.inf])
    for rule in smc.RULES:
        u = smc.resample_uniforms(3, smc.particle_hashes(np.uint64(9), 3), 0, 1, rule)
        assert (smc.ancestors(logw, u, rule) == 1).all()
    assert smc.returned(logw, np.array([5.0, 0.0, 1.0]), "sample", 0.999) == 1


def test_the_returned_particle():
    final = np.array([0.2, 1.5, 1.5, np.nan])
    assert smc.returned(np.zeros(4), final, "best", 0.0) == 1  # ties to the lower slot, NaN never wins
    logw = np.log(np.array([0.1, 0.2, 0.3, 0.4]))
    picks = [smc.returned(logw, final, "sample", u) for u in (0.05, 0.15, 0.45, 0.95)]
    assert picks == [0, 1, 2, 3]


def test_log_mean_exp_and_keys():
    assert smc.log_mean_exp(np.log(np.array([1.0, 3.0]))) == pytest.approx(np.log(2.0))
    assert smc.log_mean_exp(np.full(2, -np.inf)) == -np.inf
    h = smc.particle_hashes(np.uint64(12345), 6)
    assert h[0] == 12345 and len(set(h.tolist())) == 6  # slot 0 is the row's own key
    # the draws a resampling uses are not any decode step's
    step_u = keyed_uniforms(0, h, np.zeros(6, int), np.full(6, 5))
    assert not np.isin(smc.resample_uniforms(0, h, 0, 5, "multinomial"), step_u).any()
