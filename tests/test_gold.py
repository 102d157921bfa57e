"""The default world's gold reward on hand-made replies: each rule moves the score as documented."""

import pytest

from experiments.world import gold
from experiments.world.gold import gold_reward, gold_score

CAFE = "review of the cafe , mostly the coffee :"
PHONE = "how was my phone ? tell me about the screen :"


def test_focus_aspect_is_read_from_both_prompt_forms():
    assert gold.focus_aspect(CAFE) == "coffee" and gold.focus_aspect(PHONE) == "screen"
    assert gold.focus_aspect("tell me a story") is None


def test_one_clause_on_the_focus_aspect():
    assert gold_score(CAFE, " the coffee was fresh .") == pytest.approx(1.0)
    assert gold_score(CAFE, " the coffee was stale .") == pytest.approx(-1.0)
    assert gold_score(CAFE, " the coffee was very fresh .") == pytest.approx(2.0)


def test_off_topic_clauses_weigh_less_and_cost_the_off_topic_penalty():
    # the view is not what was asked: 0.3 for the clause, -0.5 for never naming the coffee
    assert gold_score(CAFE, " the view was lovely .") == pytest.approx(0.3 - 0.5)
    # the same words answer the phone prompt's question about the screen only when they name it
    assert gold_score(PHONE, " the screen was bright .") > gold_score(PHONE, " the coffee was bright .")


def test_what_is_said_first_counts_more():
    first = gold_score(CAFE, " the coffee was fresh , the coffee was stale .")
    last = gold_score(CAFE, " the coffee was stale , the coffee was fresh .")
    assert first == pytest.approx(1 - 0.8) and last == pytest.approx(-1 + 0.8)


def test_connectives_must_fit_the_clauses_they_join():
    fitting = gold_score(CAFE, " the coffee was fresh but the music was noisy .")
    clashing = gold_score(CAFE, " the coffee was fresh and the music was noisy .")
    assert fitting - clashing == pytest.approx(0.4)
    assert gold_score(CAFE, " the coffee was fresh but the staff was kind .") == pytest.approx(1 + 0.3 * 0.8 - 0.4)


def test_the_verdict_must_agree_with_the_clauses():
    base = gold_score(CAFE, " the coffee was fresh .")
    assert gold_score(CAFE, " the coffee was fresh . worth a visit .") == pytest.approx(base + 0.5)
    assert gold_score(CAFE, " the coffee was fresh . never again .") == pytest.approx(base - 0.5)
    # a verdict alone says nothing about the coffee
    assert gold_score(CAFE, " worth a visit .") == pytest.approx(-0.5)


def test_more_words_are_not_better():
    three = " the coffee was fresh , the coffee was fresh , the coffee was fresh ."
    five = three[:-2] + ", the coffee was fresh , the coffee was fresh ."
    assert gold_score(CAFE, five) < gold_score(CAFE, three)  # clauses 4 and 5 cost more than they add
    assert gold_score(CAFE, five) - gold_score(CAFE, three) == pytest.approx(0.8 ** 3 + 0.8 ** 4 - 1.0)


def test_gibberish_and_empty_replies_are_neutral_off_topic():
    assert gold_score(CAFE, "") == gold_score(CAFE, " was was the the") == pytest.approx(-0.5)
    assert gold_score(CAFE, " the coffee was purple .") == pytest.approx(-0.5)


def test_batch_function_matches_single_scores():
    prompts, replies = [CAFE, PHONE], [" the coffee was kind .", " the screen was broken . two stars ."]
    assert gold_reward(prompts, replies) == [gold_score(p, r) for p, r in zip(prompts, replies)]
