"""Prefix pairs for the partial-sequence Bradley-Terry loss (the paper's Eq. 5).

From one preference triple (x, y_w, y_l) come the pairs (x + y_w[:i], x + y_l[:i]) for prefix
lengths i counted in reward-model tokens, up to the longer response; a response shorter than i is
used whole ("pad to the longest", Fig. 2). Which lengths are used is a ``PrefixSpec``:

- ``every``:  i = min_length, min_length + 1, ..., L
- ``stride``: i = min_length, min_length + stride, ..., plus L itself
- ``sample``: ``num_samples`` distinct lengths drawn uniformly from [min_length, L] (seeded)

where L = max(|y_w|, |y_l|). Pairs whose two sides are the same text (a shared opening) carry no
preference; they are skipped and counted.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

STRATEGIES = ("every", "stride", "sample")


@dataclass(frozen=True)
class PrefixPair:
    chosen: str          # a prefix of the chosen response (or all of it)
    rejected: str        # a prefix of the rejected response (or all of it)
    length: int          # i, in reward-model tokens
    fraction: float      # i / L: how far into the longer response the pair is


def prefix_lengths(longest: int, strategy: str, min_length: int = 1, stride: int = 1,
                   num_samples: int = 4, rng: random.Random | None = None) -> list[int]:
    """The prefix lengths used for a triple whose longer response has ``longest`` tokens."""
    lo = max(1, min_length)
    if longest < lo:
        return [longest] if longest > 0 else []
    if strategy == "every":
        return list(range(lo, longest + 1))
    if strategy == "stride":
        lengths = list(range(lo, longest + 1, stride))
        return lengths if lengths[-1] == longest else lengths + [longest]
    if strategy == "sample":
        pool = range(lo, longest + 1)
        return sorted((rng or random.Random(0)).sample(pool, min(num_samples, len(pool))))
    raise ValueError(f"unknown prefix strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")


def token_ends(tokenizer, text: str) -> list[int]:
    """Character offset at which each reward-model token of ``text`` ends (text[:ends[i-1]] = i tokens)."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return [end for _, end in enc["offset_mapping"]]


def prefix_pairs(chosen: str, rejected: str, tokenizer, strategy: str = "every", min_length: int = 1,
                 stride: int = 1, num_samples: int = 4,
                 rng: random.Random | None = None) -> tuple[list[PrefixPair], int]:
    """The prefix pairs of one triple's two responses, and how many identical pairs were skipped.

    Prefixes are cut at reward-model token boundaries but kept as text, so the reward model sees
    them exactly as it will at decoding time (prompt + response prefix, re-tokenised). A cut inside
    a character (byte-level tokens can split one) is rounded up to the character's end.
    """
    c_ends, r_ends = token_ends(tokenizer, chosen), token_ends(tokenizer, rejected)
    longest = max(len(c_ends), len(r_ends))
    pairs, identical = [], 0
    for i in prefix_lengths(longest, strategy, min_length, stride, num_samples, rng):
        c = chosen if i >= len(c_ends) else chosen[: c_ends[i - 1]]
        r = rejected if i >= len(r_ends) else rejected[: r_ends[i - 1]]
        if c == r:
            identical += 1
        else:
            pairs.append(PrefixPair(c, r, i, i / longest))
    return pairs, identical
