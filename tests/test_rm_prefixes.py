"""Prefix pairs (Eq. 5): properties over generated responses, and the count formula of each option."""

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rm_training.prefixes import prefix_lengths, prefix_pairs

WORDS = ["staff", "was", "lovely", "rude", "the", "food", ",", ".", "café", "and", "but", "warm"]
response = st.lists(st.sampled_from(WORDS), min_size=1, max_size=14).map(lambda w: " " + " ".join(w))
options = st.fixed_dictionaries({
    "strategy": st.sampled_from(["every", "stride", "sample"]),
    "min_length": st.integers(1, 4), "stride": st.integers(1, 5), "num_samples": st.integers(1, 6)})


@pytest.fixture(scope="module", params=["reward_model", "llm"])
def any_tokenizer(request, world):
    """WordPiece (the reward model's) and byte-level BPE (the LLM's) tokenizers."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(world[request.param])


def expected_count(longest: int, strategy: str, min_length: int, stride: int, num_samples: int) -> int:
    if longest < min_length:
        return 1
    span = longest - min_length + 1
    if strategy == "every":
        return span
    if strategy == "stride":
        return math.ceil(span / stride) + (0 if (longest - min_length) % stride == 0 else 1)
    return min(num_samples, span)


@settings(max_examples=150, deadline=None)
@given(longest=st.integers(1, 60), opts=options, seed=st.integers(0, 1000))
def test_prefix_lengths_follow_their_formula(longest, opts, seed):
    lengths = prefix_lengths(longest, rng=random.Random(seed), **opts)
    assert len(lengths) == expected_count(longest, **opts)
    assert lengths == sorted(set(lengths)) and lengths[-1] <= longest
    assert all(i >= min(opts["min_length"], longest) for i in lengths)
    if opts["strategy"] != "sample" or longest < opts["min_length"]:
        assert lengths[-1] == longest  # the whole responses are always compared
    # seeded: the same seed draws the same lengths
    assert lengths == prefix_lengths(longest, rng=random.Random(seed), **opts)


@settings(max_examples=60, deadline=None)
@given(chosen=response, rejected=response, opts=options, seed=st.integers(0, 1000))
def test_prefix_pairs_are_prefixes_and_never_identical(any_tokenizer, chosen, rejected, opts, seed):
    pairs, identical = prefix_pairs(chosen, rejected, any_tokenizer, rng=random.Random(seed), **opts)
    n_c = len(any_tokenizer(chosen, add_special_tokens=False)["input_ids"])
    n_r = len(any_tokenizer(rejected, add_special_tokens=False)["input_ids"])
    assert len(pairs) + identical == expected_count(max(n_c, n_r), **opts)
    for p in pairs:
        assert chosen.startswith(p.chosen) and rejected.startswith(p.rejected)
        assert p.chosen != p.rejected
        # "pad to the longest": past its end a response is used whole
        if p.length >= n_c:
            assert p.chosen == chosen
        else:  # i tokens, rounded up to a whole character (byte-level tokens can split one)
            assert len(any_tokenizer(p.chosen, add_special_tokens=False)["input_ids"]) >= p.length
        assert 0 < p.fraction <= 1
    if chosen == rejected:
        assert pairs == []


def test_shared_opening_is_skipped_and_counted(world):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(world["reward_model"])
    pairs, identical = prefix_pairs(" staff was lovely .", " staff was rude .", tok, "every")
    assert identical == 2  # "staff", "staff was"
    assert [p.length for p in pairs] == [3, 4]
    assert pairs[0].chosen == " staff was lovely" and pairs[0].rejected == " staff was rude"


def test_the_held_out_prefix_evaluation_can_take_every_nth_length(world):
    """training.eval_prefix_stride: every n-th prefix length of a held-out pair, and its whole replies."""
    from transformers import AutoTokenizer

    from rm_training.data import Triple
    from rm_training.diagnose import bucketed_prefixes

    tokenizer = AutoTokenizer.from_pretrained(world["reward_model"])
    triple = Triple("review of the cafe :", " staff was lovely , food was warm , we will be back soon .",
                    " staff was rude , food was stale , we will never come back .")
    every = bucketed_prefixes([triple], tokenizer)
    strided = bucketed_prefixes([triple], tokenizer, stride=4)
    count = lambda groups: sum(len(p) for p, _, _ in groups.values())  # noqa: E731
    assert count(strided) < count(every) / 2
    assert (triple.chosen, triple.rejected) in zip(strided["75-100%"][1], strided["75-100%"][2])
    for name, (_, chosen, _) in strided.items():
        assert set(chosen) <= set(every[name][1])  # the same prefixes, fewer of them
