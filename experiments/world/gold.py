"""The default world's language and its gold reward: what a good reply *is*, known exactly.

Prompts ask for a review of a subject with one aspect in focus::

    review of the cafe , mostly the coffee :
    how was this hotel ? tell me about the staff :

A reply is a list of clauses joined by connectives, then a verdict::

     the coffee was very fresh but the music was noisy . worth a visit .

Each clause says ``[the] NOUN was [very] ADJ``. Adjectives are pleasant (+1) or unpleasant (-1);
``very`` doubles them.

``gold_reward(prompt, response)`` is the sum of

- **clause value**: each clause's polarity (x2 with ``very``), weighted 1.0 when its noun is the
  prompt's focus aspect and 0.3 otherwise, discounted by 0.8 per earlier clause (what is said first
  counts most);
- **staying on topic**: -0.5 when no clause names the focus aspect;
- **coherence**: -0.4 for each ``but`` / ``while`` joining clauses of the same polarity and each
  ``and`` / ``so`` / ``because`` joining clauses of opposite polarity;
- **verdict**: +0.5 when the verdict's polarity agrees with the sign of the clause value,
  -0.5 when it contradicts it (nothing for a missing verdict or a zero clause value);
- **length**: -0.5 for every clause beyond three.

So two replies with the same words can differ (order, connective, aspect), a reply's early clauses
decide most of its value (a partial-sequence reward model has something to learn from prefixes),
and more words are not better. Words outside the language are ignored.
"""

from __future__ import annotations

import itertools
import re

SUBJECTS = ["the cafe", "this hotel", "the movie", "my phone", "the train", "our guide", "the garden",
            "this book", "the concert", "the museum", "the bakery", "that game", "the gym", "this laptop",
            "the ferry", "the zoo", "our flat", "the library", "this album", "the market", "the spa",
            "the pizzeria", "this bike", "the theatre"]
ASPECTS = ["staff", "food", "music", "room", "story", "screen", "seats", "coffee", "view", "price",
           "noise", "service"]
GOOD = ["lovely", "friendly", "bright", "calm", "clever", "warm", "quick", "fresh", "kind", "clean"]
BAD = ["noisy", "slow", "dull", "cold", "rude", "stale", "messy", "late", "broken", "pricey"]
CONTRAST = ["but", "while"]
AGREE = ["and", "so", "because"]
GOOD_VERDICTS = ["i would go back .", "worth a visit .", "five stars ."]
BAD_VERDICTS = ["never again .", "not for me .", "two stars ."]
PROMPT_FORMS = ["review of {subject} , mostly the {aspect} :", "how was {subject} ? tell me about the {aspect} :"]

FOCUS_WEIGHT, OTHER_WEIGHT, DISCOUNT = 1.0, 0.3, 0.8
OFF_TOPIC, INCOHERENT, VERDICT, EXTRA_CLAUSE, MAX_CLAUSES = -0.5, -0.4, 0.5, -0.5, 3

_POLARITY = {**{w: 1 for w in GOOD}, **{w: -1 for w in BAD}}
_VERDICTS = {**{v: 1 for v in GOOD_VERDICTS}, **{v: -1 for v in BAD_VERDICTS}}
_ASPECT_RE = re.compile(r"the (\w+) :\s*$")


def focus_aspect(prompt: str) -> str | None:
    """The aspect a prompt asks about (the noun before the final colon), or None."""
    m = _ASPECT_RE.search(prompt)
    return m.group(1) if m else None


def parse(response: str) -> tuple[list[tuple[str | None, str, int]], int | None]:
    """Clauses as (connective before it, noun, signed value) and the verdict's polarity (or None).

    Only well-formed ``NOUN was [very] ADJ`` clauses count; anything else is skipped.
    """
    words = response.replace(",", " , ").split()
    text = " ".join(words)
    verdict = None
    for phrase, polarity in _VERDICTS.items():
        if phrase in text:
            verdict = polarity
            text = text.replace(phrase, " ")
    words = text.split()
    clauses, link = [], None
    for i, w in enumerate(words):
        if w in CONTRAST or w in AGREE:
            link = w
        elif w == "was" and i > 0 and words[i - 1] in ASPECTS:
            rest = words[i + 1: i + 3]
            strength = 2 if rest[:1] == ["very"] else 1
            adj = rest[1] if strength == 2 and len(rest) > 1 else (rest[0] if rest else "")
            if adj in _POLARITY:
                clauses.append((link if clauses else None, words[i - 1], strength * _POLARITY[adj]))
            link = None
    return clauses, verdict


def gold_score(prompt: str, response: str) -> float:
    """The gold reward of one (prompt, response); see the module docstring for the rules."""
    aspect = focus_aspect(prompt)
    clauses, verdict = parse(response)
    value = sum((FOCUS_WEIGHT if noun == aspect else OTHER_WEIGHT) * DISCOUNT ** i * v
                for i, (_, noun, v) in enumerate(clauses))
    score = value
    if not any(noun == aspect for _, noun, _ in clauses):
        score += OFF_TOPIC
    for (_, _, prev), (link, _, cur) in itertools.pairwise(clauses):
        same = (prev > 0) == (cur > 0)
        if (link in CONTRAST and same) or (link in AGREE and not same):
            score += INCOHERENT
    if verdict is not None and value != 0:
        score += VERDICT if (verdict > 0) == (value > 0) else -VERDICT
    score += EXTRA_CLAUSE * max(0, len(clauses) - MAX_CLAUSES)
    return round(score, 6)


def gold_reward(prompts: list[str], responses: list[str]) -> list[float]:
    """Gold reward of whole responses (``gold_reward: experiments.world.gold:gold_reward``)."""
    return [gold_score(p, r) for p, r in zip(prompts, responses)]
