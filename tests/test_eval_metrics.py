"""Evaluation arithmetic against hand computations; judge-reply parsing and templates."""

import math

import pytest

from pargs_batch.evaluation import metrics
from pargs_batch.evaluation.judge import a_goes_first, load_template, parse_scores


def test_mean_and_standard_error_by_hand():
    stat = metrics.over_prompts({"a": [1.0], "b": [2.0], "c": [4.0], "d": [5.0]})
    # one sample a prompt: mean 3; sample variance (4 + 1 + 1 + 4) / 3 = 10/3; SE = sqrt(10/3 / 4)
    assert math.isclose(stat["mean"], 3.0) and stat["prompts"] == 4 and stat["rows"] == 4
    assert math.isclose(stat["se"], math.sqrt(10 / 12))
    assert metrics.over_prompts({}) == {"mean": None, "se": None, "prompts": 0, "rows": 0, "samples_per_prompt": None}
    assert metrics.over_prompts({"a": [2.5, 3.5]})["se"] is None  # one prompt: no spread to measure


def test_standard_error_is_over_prompts_not_rows():
    # two prompts, two samples each; prompt means 1.5 and 5.0 -> mean 3.25,
    # variance (1.75^2 + 1.75^2) / 1 = 6.125, SE = sqrt(6.125 / 2) = 1.75
    stat = metrics.over_prompts({"p": [1.0, 2.0], "q": [4.0, 6.0], "empty": []})
    assert math.isclose(stat["mean"], 3.25) and math.isclose(stat["se"], 1.75)
    assert (stat["prompts"], stat["rows"], stat["samples_per_prompt"]) == (2, 4, 2.0)
    # identical samples (greedy decoding) do not shrink the SE: over rows, n would double
    twice = metrics.over_prompts({"p": [1.0, 1.0], "q": [4.0, 4.0], "r": [7.0, 7.0]})
    once = metrics.over_prompts({"p": [1.0], "q": [4.0], "r": [7.0]})
    assert math.isclose(twice["se"], once["se"]) and math.isclose(once["se"], math.sqrt(9 / 3))
    rows = [1.0, 1.0, 4.0, 4.0, 7.0, 7.0]  # what the row-level SE would claim: smaller by about sqrt 2
    row_se = math.sqrt(sum((v - 4) ** 2 for v in rows) / 5 / 6)
    assert row_se < once["se"] / 1.3


def test_rouge_l_diversity_by_hand():
    # "a b c d" vs "a b x d": LCS 3 of 4 -> F1 0.75; identical pair -> 1.0; lone samples are skipped
    out = metrics.rouge_l_diversity({"p1": ["a b c d", "a b x d"], "p2": ["same words", "same words"],
                                     "p3": ["alone"]})
    assert out["prompts"] == 2 and math.isclose(out["rouge_l"], (0.75 + 1.0) / 2)
    three = metrics.rouge_l_diversity({"p": ["a b", "a c", "d e"]})  # pairs: 0.5, 0, 0
    assert math.isclose(three["rouge_l"], 0.5 / 3)
    assert metrics.rouge_l_diversity({"p": ["x"]}) == {"rouge_l": None, "prompts": 0}


def test_beta_groups_join_runs_that_differ_only_in_beta():
    def cfg(method, beta, seed=0, batch=64):
        return {"decode": {"method": method, "beta": beta, "seed": seed, "micro_batch_size": batch},
                "model": {"path": "m"}, "output": {"path": f"o{beta}"}, "ray": {"num_workers": 1}}

    runs = {"p1": cfg("pargs", 1.0), "p3": cfg("pargs", 3.0, batch=7), "p2": cfg("pargs", 2.0),
            "t": cfg("topk", 0.0), "s": cfg("pargs", 1.0, seed=5)}
    assert metrics.beta_groups(runs) == [["p1", "p2", "p3"]]


def test_win_tie_rates_exclude_invalid():
    out = metrics.win_tie(["win", "win", "tie", "loss", "invalid"])
    assert (out["win"], out["tie"], out["loss"], out["invalid"], out["valid"]) == (2, 1, 1, 1, 4)
    assert out["win_tie_rate"] == 0.75 and out["loss_rate"] == 0.25
    assert out["win_tie_interval"] == metrics.wilson(3, 4) and out["win_interval"] == metrics.wilson(2, 4)
    assert metrics.win_tie(["invalid"])["win_tie_interval"] is None


def test_wilson_interval_by_hand():
    # 8 of 10: centre (0.8 + z^2/20) / (1 + z^2/10), half-width z / (1 + z^2/10) * sqrt(0.016 + z^2/400)
    z2 = metrics.Z95 ** 2
    centre = (0.8 + z2 / 20) / (1 + z2 / 10)
    half = metrics.Z95 / (1 + z2 / 10) * math.sqrt(0.8 * 0.2 / 10 + z2 / 400)
    lo, hi = metrics.wilson(8, 10)
    assert math.isclose(lo, centre - half) and math.isclose(hi, centre + half)
    assert abs(lo - 0.490) < 5e-4 and abs(hi - 0.943) < 5e-4  # the published table's figures
    assert metrics.wilson(0, 0) is None
    for n in range(1, 300):  # all or none: the bound sits exactly on the rate (CI once met 1 - 1e-16)
        assert metrics.wilson(0, n)[0] == 0.0 and metrics.wilson(n, n)[1] == 1.0


def test_paired_difference_by_hand():
    # differences 1, 2, 3, 6: mean 3, sample variance (4 + 1 + 0 + 9) / 3 = 14/3, SE = sqrt(14/3 / 4)
    out = metrics.paired_difference([1.0, 2.0, 3.0, 6.0])
    se = math.sqrt(14 / 3 / 4)
    assert math.isclose(out["diff"], 3.0) and math.isclose(out["se"], se) and out["prompts"] == 4
    assert math.isclose(out["interval"][0], 3 - metrics.Z95 * se) and math.isclose(out["interval"][1], 3 + metrics.Z95 * se)
    assert metrics.paired_difference([])["diff"] is None and metrics.paired_difference([2.0])["se"] is None


@pytest.mark.parametrize("reply,expected", [
    ("8 3\nThe first is better.", (8.0, 3.0)),
    ("7, 7\nBoth fine.", (7.0, 7.0)),
    ("\n 9.5 2 \nwhy", (9.5, 2.0)),
    ("Score: 8 and 3", None),
    ("8\n3", None),
    ("11 3", None),
    ("I prefer the first answer.", None),
    ("", None),
])
def test_parse_scores_reads_only_a_clean_first_line(reply, expected):
    assert parse_scores(reply) == expected


def test_templates_and_order():
    for name in ("dialogue", "summary"):
        system, user = load_template(name)
        assert "1 to 10" in system and "{answer_1}" in user and "{question}" in user
    orders = [a_goes_first(0, f"p{i}") for i in range(200)]
    assert 70 < sum(orders) < 130  # both orders, about half each
    assert orders == [a_goes_first(0, f"p{i}") for i in range(200)]  # recorded: same seed, same order
    assert orders != [a_goes_first(1, f"p{i}") for i in range(200)]


def test_judge_cache_of_an_earlier_version_is_still_read(tmp_path):
    """Answers cached before attempts were counted (no "attempts", no "fields"), under the key the
    default sampling fields still give: a valid one is final, an invalid one counts as a run's worth
    of requests. Nothing here reaches an endpoint (none listens on port 9)."""
    import hashlib
    import json

    from pargs_batch.evaluation.judge import Judge, JudgeCache

    cache = JudgeCache(tmp_path / "c.sqlite")
    judge = Judge("http://127.0.0.1:9/v1", "m", "k", "dialogue", cache, parse_retries=2, max_attempts=3)
    old_key = lambda q, x, y: hashlib.sha256(json.dumps(["m", judge.system, judge.user, q, x, y]).encode()).hexdigest()  # noqa: E731
    cache.put(old_key("q", "a", "b"), {"scores": [7, 3], "reply": "7 3"})
    cache.put(old_key("q", "b", "a"), {"scores": [3, 7], "reply": "3 7"})
    cache.put(old_key("q2", "c", "d"), {"scores": None, "reply": "?"})
    cache.put(old_key("q2", "d", "c"), {"scores": None, "reply": "?"})
    for prompt_id in ("p1", "p2", "p3"):  # both orders are cached, so any per-prompt order is
        rec = judge.compare(prompt_id, "q", "a", "b", seed=0)
        assert rec["cached"] and rec["outcome"] == "win" and rec["attempts"] == 3
        bad = judge.compare(prompt_id, "q2", "c", "d", seed=0)
        assert bad["cached"] and bad["outcome"] == "invalid"
    assert judge.requests == 0


def test_the_example_evaluation_config_loads(tmp_path, monkeypatch):
    from pathlib import Path

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # a hub id is then taken on trust, not looked up

    from pargs_batch.configlib import load_config
    from pargs_batch.evaluation.config import EvalConfig

    path = Path(__file__).parent.parent / "jobs" / "configs" / "eval.yaml"
    config = load_config(EvalConfig, str(path), [f"runs=[{tmp_path}, {tmp_path}, {tmp_path}]"])
    assert config.paired == [["pargs", "args"], ["pargs", "topk"]] and config.judge.max_attempts == 3
    assert config.reward.input == "pair"


def test_win_tie_plot_draws_a_pair_that_won_every_prompt(tmp_path):
    # 131 wins of 131: the Wilson bound is 1 and the bar's upper arm has length 0 (never below)
    from pargs_batch.evaluation.report import plots

    wins = {**metrics.win_tie(["win"] * 131), "a": "x", "b": "y", "prompts": 131, "seed": 0}
    report = {"runs": {}, "beta_groups": [], "judge": {"pairs": [wins]}}
    assert plots(report, tmp_path) == ["win_tie.png"] and (tmp_path / "win_tie.png").exists()


def test_the_interval_over_seeds_and_prompts_matches_a_hand_computation():
    """Two seeds x three prompts, worked by hand: seed means 2 and 4, prompt means 1.5, 3, 4.5, grand
    mean 3; MS_seeds = 3 * (1 + 1) / 1 = 6, MS_prompts = 2 * (2.25 + 0 + 2.25) / 2 = 4.5, residuals
    +-0.5 and 0 so MS_resid = 1 / 2 = 0.5; Var(mean) = (6 + 4.5 - 0.5) / 6, Satterthwaite's
    df = 10^2 / (6^2 / 1 + 4.5^2 / 2 + 0.5^2 / 2) = 100 / 46.25."""
    from scipy import stats

    from pargs_batch.evaluation.metrics import over_seeds_and_prompts, t_quantile

    out = over_seeds_and_prompts([[1, 2, 3], [2, 4, 6]])
    assert out["mean"] == 3 and out["seed_means"] == [2, 4] and out["seed_sd"] == pytest.approx(2 ** 0.5)
    assert out["mean_squares"] == pytest.approx({"seeds": 6, "prompts": 4.5, "residual": 0.5})
    se, df = (10 / 6) ** 0.5, 100 / 46.25
    assert out["se"] == pytest.approx(se) and out["df"] == pytest.approx(df)
    half = stats.t.ppf(0.975, df) * se
    assert out["interval"] == pytest.approx([3 - half, 3 + half])
    for d in (1, 2, 2.16, 7.5, 60):
        assert t_quantile(0.975, d) == pytest.approx(stats.t.ppf(0.975, d), rel=1e-9)
    # one seed: the SE over prompts and the normal interval, as for a single run
    one = over_seeds_and_prompts([[1, 2, 3]])
    assert one["se"] == pytest.approx(1 / 3 ** 0.5) and one["interval"][1] == pytest.approx(2 + 1.959964 / 3 ** 0.5)
    # seeds that disagree widen the interval beyond what the prompts alone give
    agree = over_seeds_and_prompts([[1, 2, 3, 4], [1.1, 2.1, 3.1, 4.1], [0.9, 1.9, 2.9, 3.9]])
    disagree = over_seeds_and_prompts([[1, 2, 3, 4], [3, 4, 5, 6], [-1, 0, 1, 2]])
    width = lambda r: r["interval"][1] - r["interval"][0]  # noqa: E731
    assert width(disagree) > 1.5 * width(agree)
