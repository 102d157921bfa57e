"""The numbers of the paper's tables: mean ± SE over prompts, pairwise ROUGE-L, β groups, win-tie.

Samples of one prompt are not independent (greedy methods repeat themselves), so every reported
mean ± SE is over prompts: a prompt's samples are averaged first, then the SE is taken across
prompts (``OverPrompts``). Both accumulate as rows stream by, a prompt at a time.
"""

from __future__ import annotations

import math
from collections import defaultdict
from itertools import combinations


class OverPrompts:
    """Mean ± SE over prompts, one prompt's values at a time (Welford's update on the prompt means):
    the SE is the sample standard deviation of the prompt means over sqrt(prompts)."""

    def __init__(self):
        self.prompts = self.rows = 0
        self._mean = self._m2 = 0.0

    def add(self, values) -> None:
        """One prompt's values (its samples); a prompt with none is not counted."""
        values = [float(v) for v in values]
        if not values:
            return
        x = sum(values) / len(values)
        self.prompts += 1
        self.rows += len(values)
        delta = x - self._mean
        self._mean += delta / self.prompts
        self._m2 += delta * (x - self._mean)

    def result(self) -> dict:
        """mean, se (None below 2 prompts), prompts, rows and samples_per_prompt (rows / prompts)."""
        p = self.prompts
        return {"mean": self._mean if p else None,
                "se": math.sqrt(self._m2 / (p - 1) / p) if p > 1 else None,
                "prompts": p, "rows": self.rows, "samples_per_prompt": self.rows / p if p else None}


def over_prompts(values_by_prompt: dict[str, list[float]]) -> dict:
    """``OverPrompts`` of a whole mapping prompt id -> its samples' values."""
    acc = OverPrompts()
    for values in values_by_prompt.values():
        acc.add(values)
    return acc.result()


class RougeDiversity:
    """Mean pairwise ROUGE-L F1 between a prompt's samples, averaged over prompts with >= 2 samples,
    one prompt at a time. Lower means more diverse (the paper's Table 3)."""

    def __init__(self):
        from rouge_score import rouge_scorer

        self.scorer = rouge_scorer.RougeScorer(["rougeL"])
        self.total, self.prompts = 0.0, 0

    def add(self, samples: list[str]) -> None:
        if len(samples) < 2:
            return
        pairs = [self.scorer.score(a, b)["rougeL"].fmeasure for a, b in combinations(samples, 2)]
        self.total += sum(pairs) / len(pairs)
        self.prompts += 1

    def result(self) -> dict:
        return {"rouge_l": self.total / self.prompts if self.prompts else None, "prompts": self.prompts}


def rouge_l_diversity(responses_by_prompt: dict[str, list[str]]) -> dict:
    """``RougeDiversity`` of a whole mapping prompt id -> its samples."""
    acc = RougeDiversity()
    for samples in responses_by_prompt.values():
        acc.add(samples)
    return acc.result()


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


Z95 = 1.959963984540054  # the standard normal's 97.5th percentile


def wilson(successes: int, n: int, z: float = Z95) -> list[float] | None:
    """The Wilson score interval of a binomial rate (95 % by default); None when n is 0.

    Each judged prompt is one judgement (its first sample), so prompts are the independent trials."""
    if n == 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # at 0 or n successes the bound is exactly 0 or 1; rounding would put it a hair inside the rate
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return [lo, hi]


def win_tie(outcomes: list[str]) -> dict:
    """Counts and rates of 'win', 'tie', 'loss', 'invalid' (rates over valid judgements), each rate
    with its 95 % Wilson interval (``*_interval``)."""
    counts = {k: outcomes.count(k) for k in ("win", "tie", "loss", "invalid")}
    valid = counts["win"] + counts["tie"] + counts["loss"]
    out = {**counts, "valid": valid}
    for name, k in (("win", counts["win"]), ("tie", counts["tie"]), ("loss", counts["loss"]),
                    ("win_tie", counts["win"] + counts["tie"])):
        out[f"{name}_rate"] = k / valid if valid else None
        out[f"{name}_interval"] = wilson(k, valid)
    return out


def paired_difference(diffs, z: float = Z95) -> dict:
    """Mean of per-prompt differences a - b (each side a prompt's mean over its samples, on the
    prompts both runs have), its standard error across those prompts and a 95 % interval (normal
    approximation: mean ± 1.96 SE). The same prompts went through both runs: the pairing removes
    the prompt-to-prompt spread both share, which two separate ± figures cannot."""
    import numpy as np

    d = np.asarray(diffs, dtype=np.float64)
    n = len(d)
    if n == 0:
        return {"diff": None, "se": None, "interval": None, "prompts": 0}
    mean = float(d.mean())
    if n == 1:
        return {"diff": mean, "se": None, "interval": None, "prompts": 1}
    se = float(d.std(ddof=1) / math.sqrt(n))
    return {"diff": mean, "se": se, "interval": [mean - z * se, mean + z * se], "prompts": n}


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _incomplete_beta(a: float, b: float, x: float) -> float:
    if x <= 0.0 or x >= 1.0:
        return 0.0 if x <= 0.0 else 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile (0.5 < p < 1) of Student's t with ``df`` degrees of freedom (not
    necessarily whole: Satterthwaite's), by bisection on its CDF; the normal's for df = inf."""
    if math.isinf(df):
        from statistics import NormalDist

        return NormalDist().inv_cdf(p)
    tail = 1.0 - p

    def upper(t: float) -> float:  # P(T > t), t >= 0
        return 0.5 * _incomplete_beta(df / 2.0, 0.5, df / (df + t * t))

    lo, hi = 0.0, 1.0
    while upper(hi) > tail:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if upper(mid) > tail else (lo, mid)
    return (lo + hi) / 2.0


def over_seeds_and_prompts(table) -> dict:
    """Mean and 95 % interval of a seeds x prompts table (each cell a prompt's mean under one
    reward-model seed; the same prompts under every seed) covering both sources of variation.

    The estimate is a crossed two-way random-effects model, x_sp = mu + a_s + b_p + e_sp (a seed's
    effect, a prompt's, and what is left), by the method of moments: with the ANOVA mean squares of
    seeds (MS_S), prompts (MS_P) and residual (MS_E), Var(grand mean) = sigma_a^2/S + sigma_b^2/P +
    sigma_e^2/(SP) = (MS_S + MS_P - MS_E) / (SP), and the interval is mean +/- t * sqrt(that) with
    Satterthwaite's degrees of freedom (few seeds: a wide t). One seed: the SE over prompts and the
    normal interval, as everywhere else. Also the seeds' own means and their spread."""
    import numpy as np

    x = np.asarray(table, dtype=np.float64)
    s, p = x.shape
    seed_means = x.mean(axis=1)
    grand = float(x.mean()) if x.size else None
    out = {"mean": grand, "seeds": s, "prompts": p, "seed_means": [float(v) for v in seed_means],
           "seed_sd": float(seed_means.std(ddof=1)) if s > 1 else None, "se": None, "df": None, "interval": None,
           "estimator": "crossed random effects (seeds x prompts), method of moments, Satterthwaite df"}
    if p < 2 or s < 1:
        return out
    if s == 1:
        se = float(x[0].std(ddof=1) / math.sqrt(p))
        return {**out, "se": se, "df": math.inf, "interval": [grand - Z95 * se, grand + Z95 * se],
                "estimator": "one seed: SE over prompts, normal interval"}
    prompt_means = x.mean(axis=0)
    ms_s = p * float(((seed_means - grand) ** 2).sum()) / (s - 1)
    ms_p = s * float(((prompt_means - grand) ** 2).sum()) / (p - 1)
    resid = x - seed_means[:, None] - prompt_means[None, :] + grand
    ms_e = float((resid ** 2).sum()) / ((s - 1) * (p - 1))
    combined = max(ms_s + ms_p - ms_e, ms_e, 1e-300)  # a variance: never below the residual's share
    se = math.sqrt(combined / (s * p))
    denominator = ms_s ** 2 / (s - 1) + ms_p ** 2 / (p - 1) + ms_e ** 2 / ((s - 1) * (p - 1))
    df = combined ** 2 / denominator if denominator > 0 else math.inf
    t = t_quantile(0.975, df)
    return {**out, "se": se, "df": df, "interval": [grand - t * se, grand + t * se],
            "mean_squares": {"seeds": ms_s, "prompts": ms_p, "residual": ms_e}}
