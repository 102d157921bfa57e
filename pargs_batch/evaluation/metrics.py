"""The numbers of the paper's tables, as pure functions: mean ± SE, pairwise ROUGE-L, β groups."""

from __future__ import annotations

import math
from collections import defaultdict
from itertools import combinations


def mean_se(values) -> dict:
    """Mean, standard error of the mean (sample standard deviation / sqrt n) and count."""
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        return {"mean": None, "se": None, "n": 0}
    mean = sum(values) / n
    if n == 1:
        return {"mean": mean, "se": None, "n": 1}
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return {"mean": mean, "se": math.sqrt(var / n), "n": n}


def rouge_l_diversity(responses_by_prompt: dict[str, list[str]]) -> dict:
    """Mean pairwise ROUGE-L F1 between a prompt's samples, averaged over prompts with >= 2.

    Lower means more diverse (the paper's Table 3).
    """
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    per_prompt = []
    for samples in responses_by_prompt.values():
        if len(samples) < 2:
            continue
        pairs = [scorer.score(a, b)["rougeL"].fmeasure for a, b in combinations(samples, 2)]
        per_prompt.append(sum(pairs) / len(pairs))
    if not per_prompt:
        return {"rouge_l": None, "prompts": 0}
    return {"rouge_l": sum(per_prompt) / len(per_prompt), "prompts": len(per_prompt)}


def beta_groups(runs: dict[str, dict]) -> list[list[str]]:
    """Labels of runs that differ only in beta (at least two betas per group), sorted by beta.

    ``runs`` maps a label to its generation config (as written in the Parquet metadata).
    """
    groups = defaultdict(list)
    for label, config in runs.items():
        key = _without_beta(config)
        groups[key].append((config["decode"]["beta"], label))
    out = []
    for members in groups.values():
        if len({beta for beta, _ in members}) >= 2:
            out.append([label for _, label in sorted(members)])
    return out


def _without_beta(config: dict) -> str:
    import json

    rest = {k: v for k, v in config.items() if k not in ("output", "ray")}
    rest["decode"] = {k: v for k, v in config["decode"].items() if k not in ("beta", "micro_batch_size")}
    return json.dumps(rest, sort_keys=True)


def win_tie(outcomes: list[str]) -> dict:
    """Counts and rates of 'win', 'tie', 'loss', 'invalid' (rates over valid judgements)."""
    counts = {k: outcomes.count(k) for k in ("win", "tie", "loss", "invalid")}
    valid = counts["win"] + counts["tie"] + counts["loss"]
    rates = {f"{k}_rate": (counts[k] / valid if valid else None) for k in ("win", "tie", "loss")}
    return {**counts, "valid": valid, **rates,
            "win_tie_rate": (counts["win"] + counts["tie"]) / valid if valid else None}
