"""The quickstart's gold measure on real text: how positive a reply is, by a small hand-written lexicon.

``gold_reward(prompts, responses)`` gives each response the number of its words in ``POSITIVE``
minus the number in ``NEGATIVE`` (lower-cased, split on anything that is not a letter or an
apostrophe; a word counts each time it occurs), with the sign of a word flipped when one of
``NEGATORS`` ("not", "never", "no", ...) stands one or two words before it ("not bad" is +1,
"not good" -1). The prompt is not read.

It is a measure a reader can check by eye, computed offline in microseconds, and one that a chat
model's own samples vary on for neutral prompts ("Describe a rainy Monday morning."): some replies
are cheerful, some gloomy, most plain. A reward model learns it from pairs of those samples (which
words, in which places, make a reply the preferred one), and a partial reply's count already says
much of the whole's, so a partial-sequence reward model has something to learn from prefixes.
"""

from __future__ import annotations

import re

POSITIVE = frozenset("""
amazing beautiful best bright brilliant calm charming cheerful clean comfortable cosy cozy
cool delicious delight delighted delightful easy enjoy enjoyable enjoyed enjoying excellent
excited exciting fantastic favourite favorite fine fresh friendly fun gentle glad good gorgeous
grateful great happy happiness healthy helpful hope hopeful kind laugh laughter lively love loved
lovely loving lucky magical memorable nice peace peaceful perfect pleasant pleased proud
refreshing relax relaxed relaxing safe satisfying smile smiles smiling special splendid sunny
sunshine support sweet thank thankful thanks tidy treasure warm warmth welcome welcoming
wonderful joy joyful inspiring beauty bliss charm cherish cherished comfort cosiness glow
""".split())

NEGATIVE = frozenset("""
afraid angry annoyed annoying anxious awful bad bored boring broken cold crowded cry crying
damp dangerous dark dirty disappointed disappointing dreadful dull empty exhausted fail failed
fear frustrated frustrating gloomy grey gray grim hard hate hated horrible hurt ill late lonely
lost mess messy miserable miss missed nasty nervous noisy pain painful poor rude sad scared
sick slow smelly sorry stress stressed stressful terrible tired ugly uncomfortable unhappy
upset wet worried worry worse worst wrong chaos chaotic cramped dreary filthy grumpy harsh
""".split())

NEGATORS = frozenset("not no never nothing hardly isn't wasn't don't doesn't didn't can't couldn't won't".split())
WORD = re.compile(r"[a-z']+")


def positivity(text: str) -> float:
    """Positive words minus negative words of ``text``, a negator one or two words before flipping a word."""
    words = WORD.findall(text.lower().replace("\u2019", "'"))
    score = 0
    for i, word in enumerate(words):
        sign = 1 if word in POSITIVE else -1 if word in NEGATIVE else 0
        if sign and NEGATORS.intersection(words[max(0, i - 2):i]):
            sign = -sign
        score += sign
    return float(score)


def gold_reward(prompts: list[str], responses: list[str]) -> list[float]:
    """The gold measure of each (prompt, response): the response's ``positivity`` (for
    ``--gold-reward experiments.positivity:gold_reward`` and ``pargs-batch pairs --gold``)."""
    return [positivity(r) for r in responses]
