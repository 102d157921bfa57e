"""rows.py: the columns a run's rows share, which prompts can be generated (too long, already bad),
whole-request jobs keyed by position so a repeated id never overwrites its first, input order, stop
strings found across the boundary of what was searched, and the chat-template check before any
model loads."""

import pytest

from pargs_batch.io.batch import PromptRow
from pargs_batch.config import DecodeConfig, GenerateConfig
from pargs_batch.configlib import ConfigError, build
from pargs_batch.runners.rows import (RowMaker, check_chat_template, first_stop, in_input_order, tokenize_prompts,
                              whole_request_jobs)

from helpers import base_config


def maker(**decode) -> RowMaker:
    return RowMaker(DecodeConfig(**{"method": "pargs", "beta": 2.0, "top_k": 4, "seed": 7, **decode}), "llm", "rm")


def test_a_row_carries_the_runs_columns_and_a_non_string_prompt_is_null():
    row = maker().row("a", 1, {"not": "text"}, "hi", [5, 6], "eos", [0.5, 0.25])
    assert (row.id, row.sample_index, row.prompt, row.response, row.num_tokens) == ("a", 1, None, "hi", 2)
    assert (row.method, row.beta, row.k, row.seed, row.llm, row.reward_model) == ("pargs", 2.0, 4, 7, "llm", "rm")
    errors = maker(num_samples=3).errors([PromptRow("x", "p"), PromptRow("y", "q")], "boom")
    assert [(r.id, r.sample_index, r.finish_reason, r.error) for r in errors] == \
        [(i, s, "error", "boom") for i in "xy" for s in range(3)]
    assert maker().nonfinite_error(4, "at step 2").startswith("non-finite reward: reward model rm gave no finite")


def test_too_long_and_bad_prompts_are_not_generated(tokenizer):
    prompts = [PromptRow("ok", "review of the cafe :"), PromptRow("long", "review of the cafe : " * 40),
               PromptRow("bad", 42, error="prompt is not a string")]
    (ok, ids, why), (_, long_ids, long_why), (_, bad_ids, bad_why) = tokenize_prompts(prompts, tokenizer, 32)
    assert ids == tokenizer("review of the cafe :")["input_ids"] and why is None
    assert long_ids is None and "the LLM's context is 32 tokens" in long_why
    assert bad_ids is None and bad_why == "prompt is not a string"


def test_jobs_are_keyed_by_position_so_a_repeated_id_keeps_both_rows(tokenizer):
    rows = maker(num_samples=2)
    prompts = [PromptRow("a", "review of the cafe :"), PromptRow("a", "review of the train :", error="duplicate id"),
               PromptRow("b", "review of my phone :")]
    jobs, errors = whole_request_jobs(prompts, tokenizer, 64, rows)
    assert [(i, p.id, s) for i, p, _, s in jobs] == [(0, "a", 0), (0, "a", 1), (2, "b", 0), (2, "b", 1)]
    assert set(errors) == {(1, 0), (1, 1)} and all(e.error == "duplicate id" for e in errors.values())
    done = {**errors, **{(i, s): rows.row(p.id, s, p.prompt, "r", [1], "eos", None) for i, p, _, s in jobs}}
    assert [(r.id, r.sample_index, r.error) for r in in_input_order(prompts, 2, done)] == \
        [("a", 0, None), ("a", 1, None), ("a", 0, "duplicate id"), ("a", 1, "duplicate id"), ("b", 0, None), ("b", 1, None)]


def test_a_stop_string_is_found_where_it_began_even_before_the_searched_part():
    text = "one two ## three"
    assert first_stop(text, 0, ["##"]) == 8
    assert first_stop(text, 9, ["##"]) == 8        # it began before `start` and ends after it
    assert first_stop(text, 11, ["##"]) == -1      # searched already
    assert first_stop(text, 0, ["three", "two"]) == 4
    assert first_stop(text, 0, []) == -1


def test_a_chat_run_on_a_tokenizer_without_a_template_fails_before_loading(world, tmp_path):
    cfg = build(GenerateConfig, base_config(world, tmp_path, data={"chat_template": True}))
    with pytest.raises(ConfigError, match="data.chat_template.*has no chat template"):
        check_chat_template(cfg)
    check_chat_template(build(GenerateConfig, base_config(world, tmp_path)))  # not a chat run: nothing to check
