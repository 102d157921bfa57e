"""diagnose-rm's intervals (prompts resampled) and the accuracy of Eq. 5's labels, by hand."""

import numpy as np

from rm_training.diagnose import cluster_interval, label_accuracy
from rm_training.data import Triple


def test_cluster_interval_resamples_prompts_not_pairs():
    # every pair right: no spread at all
    assert cluster_interval([1, 1, 1], ["a", "b", "c"]) == [1.0, 1.0]
    assert cluster_interval([], []) is None
    # one prompt with 100 wrong pairs, nine with one right pair each: accuracy 9/109, but as a
    # statement about prompts it rests on ten clusters, so the interval is far wider than 109
    # independent pairs would give (whose 95 % half-width is about 0.05)
    correct = [0] * 100 + [1] * 9
    prompts = ["big"] * 100 + [f"p{i}" for i in range(9)]
    lo, hi = cluster_interval(correct, prompts)
    assert lo <= 9 / 109 <= hi and hi - lo > 0.3
    assert cluster_interval(correct, prompts) == [lo, hi]  # seeded
    # a resample holds whole prompts: every value is a ratio of whole clusters' counts
    rng = np.random.default_rng(1)
    flips = rng.integers(0, 2, 400)
    lo, hi = cluster_interval(flips, [f"q{i // 4}" for i in range(400)])
    assert lo < flips.mean() < hi


def test_label_accuracy_against_a_known_reward(world):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(world["reward_model"])
    triples = [Triple("review :", " lovely calm day", " rude cold night"),
               Triple("review :", " slow dull place", " kind warm staff")]  # the label is wrong here
    wins = {" lovely calm day", " kind warm staff"}

    def whole_only(prompts, responses):  # known on whole responses only; every prefix ties
        return [1.0 if r in wins else 0.0 if r in {" rude cold night", " slow dull place"} else 0.5 for r in responses]

    out = label_accuracy(triples, tok, whole_only)
    assert out["whole"]["accuracy"] == 0.5 and out["whole"]["pairs"] == 2 and out["whole"]["ties"] == 0
    early = out["0-25%"]  # no whole response among the shortest prefixes: all ties, no accuracy
    assert early["pairs"] > 0 and early["ties"] == early["pairs"] and early["accuracy"] is None
    assert all(0 <= b["ties"] <= b["pairs"] for b in out.values())
