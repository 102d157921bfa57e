"""`pargs-batch compare`: the paper's Table 1 and the reward-per-compute frontier on your own models.

From one generate config (your LLM, reward model and prompts) every method in a list runs over the
same prompts - at the config's settings, or over a grid of budgets (PARGS's k, Best-of-N's N, ...) -
with one vLLM engine and one scorer per reward model shared by all runs (in this process; with
``ray.enabled`` each run starts its own pool). Then one evaluation scores them all: the evaluation
reward model (mean ± SE over prompts), the gold reward when given, ROUGE-L diversity, the paired
difference of every run to a reference run over the same prompts, and the LLM judge when one is
configured. It writes a table (``compare.md``), ``compare.json`` and a plot of reward against the
compute each run spent per prompt.

The demo and the frontier of ``experiments/`` are this module applied to the default world
(``compare_runs`` with their own lists of runs).
"""

from __future__ import annotations

import itertools
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pargs_batch.config import GenerateConfig
from pargs_batch.configlib import ConfigError, Loadable, build, option
from pargs_batch.console import console
from pargs_batch.decoding import METHODS
from pargs_batch.evaluation.config import EvalConfig

DEFAULT_METHODS = ["topk", "args", "pargs-greedy", "pargs", "best-of-n"]
# the decode keys a budget may vary: what changes how much a method computes (or, for beta, what it buys)
BUDGET_KEYS = ("top_k", "n_candidates", "block_tokens", "reject_fraction", "beta", "temperature")


@dataclass
class CompareConfig(Loadable):
    """What to compare: methods, budgets and the evaluation; the models and prompts come from the generate config."""

    methods: list[str] = option("decoding methods to run, each at the generate config's settings unless it has "
                                "budgets", factory=lambda: list(DEFAULT_METHODS))
    budgets: dict = option("per method, decode keys and the values to run it at, e.g. {pargs: {top_k: [2, 5, 10]}, "
                           "best-of-n: {n_candidates: [4, 16]}}; several keys run every combination; keys: "
                           + ", ".join(BUDGET_KEYS), factory=dict)
    rewards: dict = option("per method, a guidance reward model other than the config's: a path, or a mapping of "
                           "reward.* keys, e.g. {args: path/to/full-sequence-rm} (ARGS is defined with a "
                           "full-sequence one); a list of them: that model's seeds", factory=dict)
    reward_seeds: list[str] = option("other seeds of the config's reward model (its recipe trained again with "
                                     "another initialisation and data order): every run it guides runs once per "
                                     "seed, and the table reports each method over seeds and prompts", factory=list)
    reference: str | None = option("the run every other is paired with (paired differences, judge); default: "
                                   "the first pargs run, else the first guided one", None)
    output_dir: str = option("where runs/, report/, compare.md, compare.json and plots/ go", "outputs/compare")
    overwrite: bool = option("start every run over (otherwise a rerun resumes finished and partial runs)", False)
    evaluation: dict = option("the evaluation job's keys (evaluate's configuration: reward, gold_reward, judge, "
                              "...); runs, labels, output_dir and the pairs are filled in here",
                              factory=dict)

    def __post_init__(self):
        if not self.methods:
            raise ConfigError("methods", self.methods, "name at least one of " + ", ".join(METHODS))
        for name in self.methods:
            if name not in METHODS:
                raise ConfigError("methods", name, "one of " + ", ".join(METHODS))
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError("methods", self.methods, "each method once (budgets give one method several runs)")
        for name, grid in self.budgets.items():
            if name not in self.methods:
                raise ConfigError(f"budgets.{name}", grid, "budgets for a method that is not in methods: "
                                  + ", ".join(self.methods))
            if not isinstance(grid, dict) or not grid:
                raise ConfigError(f"budgets.{name}", grid, "a mapping of decode keys to lists of values")
            for key, values in grid.items():
                if key not in BUDGET_KEYS:
                    raise ConfigError(f"budgets.{name}.{key}", values, "one of " + ", ".join(BUDGET_KEYS))
                if not isinstance(values, list) or not values:
                    raise ConfigError(f"budgets.{name}.{key}", values, "a non-empty list of values")
        for name, given in self.rewards.items():
            if name not in self.methods or not METHODS[name].uses_reward:
                raise ConfigError(f"rewards.{name}", given, "a reward model for a guided method in methods")
            for path in given if isinstance(given, list) and given else [given]:
                if not (isinstance(path, str) and path or isinstance(path, dict) and path.get("path")):
                    raise ConfigError(f"rewards.{name}", given, "a reward model's path or hub id, a mapping of "
                                      "reward.* keys with a path, or a non-empty list of them (its seeds)")
        if not isinstance(self.reward_seeds, list) or not all(isinstance(p, str) and p for p in self.reward_seeds):
            raise ConfigError("reward_seeds", self.reward_seeds, "a list of reward-model paths or hub ids")
        if not isinstance(self.evaluation, dict):
            raise ConfigError("evaluation", self.evaluation, "a mapping of evaluate's keys")
        for key in ("runs", "labels", "output_dir"):
            if key in self.evaluation:
                raise ConfigError(f"evaluation.{key}", self.evaluation[key], "left out: compare fills it in")
        try:  # checked now, with a stand-in for the runs compare will make
            build(EvalConfig, {**self.evaluation, "runs": ["."]}, "evaluation.")
        except ConfigError as e:
            raise ConfigError(e.key if e.key.startswith("evaluation.") else f"evaluation.{e.key}",
                              e.value, e.allowed) from None


@dataclass(frozen=True)
class Run:
    """One run of a comparison: a method at one budget, as overrides of the base generate config."""

    label: str
    method: str                  # the curve it belongs to in the plot
    budget: str = ""             # the budget as the table prints it ("" = the config's settings)
    overrides: dict = field(default_factory=dict)  # {section: {key: value}} over the base config
    seed: int | None = None      # which seed of its reward model, when the comparison has several
    of: str | None = None        # the label its seeds share (the run's own label when it has no seeds)

    @property
    def group(self) -> str:
        """What the run is, whatever the seed: what the table across seeds has a row for."""
        return self.of or self.label


def plan_runs(config: GenerateConfig, spec: CompareConfig) -> list[Run]:
    """The runs ``spec`` asks for, in order: each method at the config's settings or at each budget."""
    if spec.reward_seeds and config.reward.models:
        raise ConfigError("reward_seeds", spec.reward_seeds, "seeds of one reward model: the config's reward.path, "
                          "not an ensemble (reward.models)")
    # the config's own model (no override), then its other seeds: the same recipe, so the same reward keys
    own_seeds = [None] + [{"path": p} for p in spec.reward_seeds]
    runs = []
    for name in spec.methods:
        given = spec.rewards.get(name)
        # another model replaces the config's (its path or its ensemble), scored by the hf backend unless
        # the entry says otherwise; the config's other reward keys (input, template, ...) stay
        if not METHODS[name].uses_reward:
            seeds = [None]
        elif given is None:
            seeds = own_seeds
        else:
            seeds = [{"models": [], "backend": "hf", **({"path": g} if isinstance(g, str) else g)}
                     for g in (given if isinstance(given, list) else [given])]
        grid = spec.budgets.get(name)
        combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())] if grid else [{}]
        for combo in combos:
            budget = " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in combo.items())
            for i, reward in enumerate(seeds):
                overrides = {"decode": {"method": name, **combo}}
                if reward:  # one model of its own: the ensemble's per-prompt weights do not apply
                    overrides["reward"], overrides["data"] = {"models": [], **reward}, {"weights_column": None}
                seed = i if len(seeds) > 1 else None
                group = f"{name} {budget}".strip()
                runs.append(Run(group if seed is None else f"{group} seed={seed}", name, budget, overrides, seed, group))
    return runs


def slug(label: str) -> str:
    """A directory name for a run label."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label.replace("=", "")).strip("_") or "run"


def run_configs(config: GenerateConfig, runs: list[Run], out_dir: Path, overwrite: bool) -> dict[str, GenerateConfig]:
    """Each run's generate config, built and checked (so a bad one fails before any model loads)."""
    from pargs_batch.configlib import merge_overrides

    base = config.to_dict()
    configs, dirs = {}, set()
    for run in runs:
        if run.label in configs:
            raise ConfigError("runs", run.label, "each run label once")
        data = merge_overrides(json.loads(json.dumps(base)), run.overrides, GenerateConfig)
        if not METHODS[data["decode"]["method"]].uses_reward:  # e.g. top-k: no reward model, no weights
            data["reward"] = {**data["reward"], "path": "", "models": []}
            data["data"] = {**data["data"], "weights_column": None}
        data["output"] = {**data.get("output", {}), "path": str(out_dir / "runs" / slug(run.label)),
                          "overwrite": overwrite}
        if slug(run.label) in dirs:
            raise ConfigError("runs", run.label, "labels that differ in more than punctuation")
        dirs.add(slug(run.label))
        built = build(GenerateConfig, data)
        if METHODS[built.decode.method].uses_reward and not (built.reward.path or built.reward.models):
            raise ConfigError("reward.path", built.reward.path,
                              f"a guidance reward model: run '{run.label}' ({built.decode.method}) needs one")
        configs[run.label] = built
    return configs


def reference_group(runs: list[Run], reference: str | None) -> str | None:
    """The method (at its budget) every other is paired with: ``reference`` (a run's label or its
    group's), else the first pargs run's, else the first guided run's."""
    if reference is None:
        return next((r.group for r in runs if r.method == "pargs"),
                    next((r.group for r in runs if METHODS[r.method].uses_reward), None))
    for r in runs:
        if reference in (r.label, r.group):
            return r.group
    raise ConfigError("reference", reference, "a run label: " + ", ".join(dict.fromkeys(
        x for r in runs for x in (r.group, r.label))))


def reference_pairs(runs: list[Run], group: str | None) -> list[list[str]]:
    """[reference run, run] for every run outside the reference group: the reference run of the
    same seed; a run without seeds (no reward model) against every seed of the reference; a run
    whose seed the reference lacks against the reference's first."""
    if group is None:
        return []
    mine = {r.seed: r.label for r in runs if r.group == group}
    first = next(iter(mine.values()))
    pairs = []
    for r in runs:
        if r.group != group:
            partners = mine.values() if r.seed is None else [mine.get(r.seed, first)]
            pairs += [[a, r.label] for a in partners]
    return pairs


def evaluation_config(evaluation: dict, configs: dict[str, GenerateConfig], out_dir: Path,
                      pairs: list[list[str]], stand_in: bool = False) -> EvalConfig:
    """The one evaluation of every run: ``evaluation``'s keys with the runs, their labels and the pairs
    (``stand_in``: an existing directory for each run not made yet, to check the rest before it is)."""
    data = json.loads(json.dumps(evaluation))
    runs = ["."] * len(configs) if stand_in else [c.output.path for c in configs.values()]
    data.update(runs=runs, labels=list(configs),
                output_dir=str(out_dir / "report"), paired=data.get("paired") or pairs)  # pairs given win
    judge = data.get("judge") or {}
    if judge.get("base_url"):
        judge["pairs"] = judge.get("pairs") or pairs
        data["judge"] = judge
    try:
        return build(EvalConfig, data)
    except ConfigError as e:
        raise ConfigError(f"evaluation.{e.key}", e.value, e.allowed) from None


def check_planned_evaluation(evaluation: dict, configs: dict[str, GenerateConfig], out_dir: Path,
                             pairs: list[list[str]]) -> None:
    """Everything the evaluation would refuse after every run was generated, refused before any is:
    its keys, the pairs' labels, the judge's model and key, the evaluation model."""
    from pargs_batch.evaluation.judging import check_judge
    from pargs_batch.evaluation.scoring import pair_labels

    planned = evaluation_config(evaluation, configs, out_dir, pairs, stand_in=True)
    labels = dict.fromkeys(configs)
    try:
        pair_labels(planned, labels)
        check_judge(planned, labels)
    except ConfigError as e:
        raise ConfigError(f"evaluation.{e.key}", e.value, e.allowed) from None
    check_evaluation(planned, configs)


def check_evaluation(evaluation: EvalConfig, configs: dict[str, GenerateConfig]) -> None:
    """What the evaluation would refuse after every run was generated, refused before: no measure
    at all, or a guidance reward model as the evaluation one (unless allowed)."""
    import os

    from pargs_batch.rewards.hf import check_reward_input

    if not evaluation.reward.path and not evaluation.gold_reward:
        raise ConfigError("evaluation.reward.path", evaluation.reward.path,
                          "an evaluation reward model (a separate one: guided methods optimise the guidance "
                          "model's score), or evaluation.gold_reward")
    check_reward_input(evaluation.reward, "evaluation.reward")
    if evaluation.gold_reward:
        from pargs_batch.evaluation.scoring import import_callable

        try:
            import_callable(evaluation.gold_reward)
        except ConfigError as e:
            raise ConfigError("evaluation.gold_reward", evaluation.gold_reward, e.allowed) from None
    if evaluation.allow_same_model or not evaluation.reward.path:
        return
    mine = os.path.realpath(evaluation.reward.path)
    for label, c in configs.items():
        if any(m.path and os.path.realpath(m.path) == mine for m, _ in c.reward.members):
            raise ConfigError("evaluation.reward.path", evaluation.reward.path,
                              f"is the guidance reward model of run '{label}'; evaluate with a separate model "
                              "or set evaluation.allow_same_model: true")


def compare_runs(config: GenerateConfig, runs: list[Run], evaluation: dict, out_dir: str | Path,
                 reference: str | None = None, overwrite: bool = False, models=None,
                 progress: bool = True) -> dict:
    """Generate every run with shared models, evaluate them in one job, and return
    ``{"configs", "summaries", "report", "reference", "seconds"}`` (the report: ``pb.evaluate``'s;
    the reference: the group every other is paired with)."""
    from pargs_batch.generation import check_models, run_generate
    from pargs_batch.models.loading import Models

    out = Path(out_dir)
    reference = reference_group(runs, reference)
    pairs = reference_pairs(runs, reference)
    configs = run_configs(config, runs, out, overwrite)
    check_planned_evaluation(evaluation, configs, out, pairs)
    for c in configs.values():
        check_models(c)
    start = time.perf_counter()
    shared = None if config.ray.enabled else (models if models is not None else Models())
    summaries, engines = {}, None
    # runs that share an engine run one after another (the table keeps the given order), and an
    # engine no later run needs is closed (when compare owns the models): one engine alive at a time
    key = Models.engine_key_for
    first = {}
    for c in configs.values():
        first.setdefault(key(c), len(first))
    order = sorted(configs, key=lambda label: first[key(configs[label])])
    started = set()
    try:
        for i, label in enumerate(order, 1):
            console.say(f"compare: run {i}/{len(configs)}: {label}")
            summaries[label] = run_generate(configs[label], models=shared, progress=progress)
            if shared is not None:
                started |= set(shared.engines)
                if models is None:
                    shared.release({key(configs[later]) for later in order[i:]})
        engines = None if shared is None else len(started)
    finally:
        if shared is not None and models is None:
            shared.close()
    generate_s = time.perf_counter() - start
    console.say(f"compare: evaluating {len(configs)} runs in one job")
    from pargs_batch.evaluation.run import run_evaluate

    report = run_evaluate(evaluation_config(evaluation, configs, out, pairs), progress=progress)
    summaries = {label: summaries[label] for label in configs}  # the given order
    return {"configs": configs, "summaries": summaries, "report": report, "reference": reference, "engines": engines,
            "generate_seconds": round(generate_s, 1), "seconds": round(time.perf_counter() - start, 1)}


def table_rows(runs: list[Run], done: dict) -> list[dict]:
    """Per run: rewards (mean ± SE over prompts), diversity, cost per prompt, the paired difference
    to the reference and the judge's win-tie rate of the reference against it."""
    report, summaries, reference = done["report"], done["summaries"], done["reference"]
    mine = {r.label for r in runs if r.group == reference}
    # a run without seeds is paired with every seed of the reference: its row shows the first pair
    paired = {p["b"]: p for p in reversed(report.get("paired", [])) if p["a"] in mine}
    judged = {p["b"]: p for p in reversed((report.get("judge") or {}).get("pairs", [])) if p["a"] in mine}
    rows = []
    for run in runs:
        r = report["runs"][run.label]
        prompts = max(r["rows"] / r["samples_per_prompt"], 1)
        cost = r.get("cost") or {}
        p, j = paired.get(run.label, {}), judged.get(run.label)
        rows.append({
            "label": run.label, "group": run.group, "method": run.method, "budget": run.budget, "seed": run.seed,
            "rows": r["rows"],
            "error_rows": r["error_rows"], "reward": r.get("reward"), "gold": r.get("gold"),
            "rouge_l": r["diversity"]["rouge_l"], "mean_tokens": r["mean_tokens"],
            # this invocation's speed; None for a run it only resumed (nothing left to make)
            "tokens_per_s": summaries[run.label].tokens_per_s if summaries[run.label].rows else None,
            "reward_tokens_per_prompt": cost.get("reward_tokens", 0) / prompts,
            "reward_calls_per_prompt": cost.get("reward_calls", 0) / prompts,
            "llm_tokens_per_prompt": (cost.get("llm_prefill_tokens", 0) + cost.get("llm_decode_tokens", 0)) / prompts,
            "wall_s_per_prompt": cost.get("wall_s", 0.0) / prompts,
            "reference_minus_this": {k: p[k] for k in ("reward", "gold") if k in p} or None,
            "judge_win_tie": None if j is None else {"rate": j["win_tie_rate"], "interval": j["win_tie_interval"]},
        })
    return rows


def _mean_se(stat: dict | None) -> str:
    if not stat or stat.get("mean") is None:
        return "—"
    return f"{stat['mean']:.3f} ± " + ("—" if stat.get("se") is None else f"{stat['se']:.3f}")  # one prompt: no SE


def _diff(d: dict | None) -> str:
    return "—" if not d or not d.get("interval") else \
        f"{d['diff']:+.3f} [{d['interval'][0]:+.3f}, {d['interval'][1]:+.3f}]"


def format_table(rows: list[dict], reference: str | None, note: str = "") -> str:
    """The comparison as text: one line a run."""
    gold = any(r["gold"] for r in rows)
    judge = any(r["judge_win_tie"] for r in rows)
    metric = "gold" if gold else "reward"
    w = max(8, *(len(r["label"]) for r in rows)) + 2
    diff_head = f"{reference or chr(8212)} − run ({metric}) [95% CI]"
    dw = max(28, len(diff_head)) + 2
    head = (f"{'run':<{w}}{'eval-RM ± SE':>17}" + (f"{'gold ± SE':>17}" if gold else "") +
            f"{'ROUGE-L':>9}{'tokens':>8}{'RM tok/prompt':>15}{'wall s/prompt':>15}{'tok/s':>8}"
            f"{diff_head:>{dw}}" + (f"{'judge: ref. win-tie %':>23}" if judge else ""))
    lines = [head]
    for r in rows:
        d = (r["reference_minus_this"] or {}).get(metric)
        jw = r["judge_win_tie"]
        jtext = "—" if not jw or jw["rate"] is None else \
            f"{100 * jw['rate']:.0f} [{100 * jw['interval'][0]:.0f}, {100 * jw['interval'][1]:.0f}]"
        rouge = "—" if r["rouge_l"] is None else f"{r['rouge_l']:.3f}"
        speed = "—" if r["tokens_per_s"] is None else f"{r['tokens_per_s']:.0f}"
        lines.append(f"{r['label']:<{w}}{_mean_se(r['reward']):>17}" + (f"{_mean_se(r['gold']):>17}" if gold else "") +
                     f"{rouge:>9}{r['mean_tokens'] or 0:>8.1f}{r['reward_tokens_per_prompt']:>15.0f}"
                     f"{r['wall_s_per_prompt']:>15.3f}{speed:>8}{_diff(d) if r['group'] != reference else 'reference':>{dw}}"
                     + (f"{jtext:>23}" if judge else ""))
    lines.append("(± is the standard error over prompts, each prompt's samples averaged first; ROUGE-L between a "
                 "prompt's samples, lower = more diverse; RM tok/prompt = tokens the guidance reward model read; "
                 "wall s/prompt = the rows' shares of their micro-batches; tok/s = this invocation's (— for a run it only "
                 "resumed); reference − run: the paired difference "
                 "over shared prompts, mean and 95% interval" + (f"; {note}" if note else "") + ")")
    return "\n".join(lines)


def seed_rows(runs: list[Run], report_dir: Path, reference: str | None, metric: str) -> list[dict]:
    """Per method (at its budget): ``metric`` over seeds and prompts (``metrics.over_seeds_and_prompts``
    on the prompts every seed answered), and the reference minus it paired on seed and prompt (a method
    with one run - no reward model - is paired with every seed of the other)."""
    import numpy as np
    import pyarrow.parquet as pq

    from pargs_batch.evaluation.metrics import over_seeds_and_prompts

    values: dict[str, dict[str, float]] = {}
    for row in pq.read_table(report_dir / "prompts.parquet", columns=["run", "id", metric]).to_pylist():
        if row[metric] is not None:
            values.setdefault(row["run"], {})[row["id"]] = row[metric]
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.group, []).append(run)

    def matrix(labels: list[str], ids: list[str]):
        return np.array([[values[label][i] for i in ids] for label in labels])

    def shared(labels: list[str]) -> list[str]:
        sets = [set(values.get(label, {})) for label in labels]
        return sorted(set.intersection(*sets)) if sets else []

    ref = [r.label for r in groups.get(reference, [])]
    rows = []
    for group, members in groups.items():
        labels = [r.label for r in members]
        ids = shared(labels)
        row = {"group": group, "method": members[0].method, "budget": members[0].budget, "seeds": len(labels),
               metric: over_seeds_and_prompts(matrix(labels, ids)) if ids else None, "reference_minus_this": None}
        if ref and group != reference and (len(ref) == len(labels) or 1 in (len(ref), len(labels))):
            n = max(len(ref), len(labels))
            a = [ref[i % len(ref)] for i in range(n)]
            b = [labels[i % len(labels)] for i in range(n)]
            ids = shared(a + b)
            if ids:
                d = matrix(a, ids) - matrix(b, ids)
                diff = over_seeds_and_prompts(d)
                per_seed = [float(v) for v in d.mean(axis=1)]
                row["reference_minus_this"] = {**diff, "seed_diffs": per_seed,
                                               "changes_sign": min(per_seed) < 0 < max(per_seed)}
        rows.append(row)
    return rows


def judge_seed_rows(runs: list[Run], report_dir: Path, reference: str | None) -> dict[str, dict]:
    """Per method judged against the reference: win/tie/loss summed over its seed pairs, and the
    win-tie rate over seeds and prompts (``metrics.over_seeds_and_prompts`` on a 1/0 outcome per
    seed and prompt, the prompts every pair judged validly)."""
    import pyarrow.parquet as pq

    from pargs_batch.evaluation.metrics import over_seeds_and_prompts

    path = report_dir / "judge.parquet"
    if not path.exists():
        return {}
    outcomes: dict[tuple[str, str], dict[str, str]] = {}
    for row in pq.read_table(path, columns=["a", "b", "id", "outcome"]).to_pylist():
        outcomes.setdefault((row["a"], row["b"]), {})[row["id"]] = row["outcome"]
    group_of = {r.label: r.group for r in runs}
    by_group: dict[str, list[dict[str, str]]] = {}
    for (a, b), judged in outcomes.items():
        if group_of.get(a) == reference and group_of.get(b) not in (None, reference):
            by_group.setdefault(group_of[b], []).append(judged)
    rows = {}
    for group, pairs in by_group.items():
        every = [o for judged in pairs for o in judged.values()]
        ids = sorted(set.intersection(*({i for i, o in judged.items() if o != "invalid"} for judged in pairs)))
        table = [[1.0 if judged[i] in ("win", "tie") else 0.0 for i in ids] for judged in pairs]
        rows[group] = {**{k: every.count(k) for k in ("win", "tie", "loss", "invalid")}, "seeds": len(pairs),
                       "win_tie": over_seeds_and_prompts(table) if ids else None}
    return rows


def group_points(rows: list[dict], over_seeds: list[dict] | None, metric: str) -> list[dict]:
    """What the plots show: each run, or over seeds each method at its budget (its mean and SE over
    seeds and prompts, its runs' mean cost)."""
    if not over_seeds:
        return rows
    members: dict[str, list[dict]] = {}
    for r in rows:
        members.setdefault(r["group"], []).append(r)
    points = []
    for g in over_seeds:
        mine, stat = members[g["group"]], g[metric] or {}
        points.append({"label": g["group"], "group": g["group"], "method": g["method"], "budget": g["budget"],
                       metric: {"mean": stat.get("mean"), "se": stat.get("se")},
                       **{k: sum(m[k] for m in mine) / len(mine) for k, _, _ in AXES}})
    return points


def format_seed_table(rows: list[dict], reference: str | None, metric: str) -> str:
    """The comparison over reward-model seeds: a line a method (at its budget)."""
    w = max(8, *(len(r["group"]) for r in rows)) + 2
    name = "gold" if metric == "gold" else "eval-RM"
    judge = any(r.get("judge") for r in rows)
    lines = [f"{'method':<{w}}{'seeds':>6}{f'{name} mean [95% CI]':>28}{'seed means':>22}"
             + (f"{'judge: ref. win-tie %':>23}" if judge else "") + f"{f'{reference or chr(8212)} − method [95% CI]':>34}"
             "  per seed"]
    for r in rows:
        m = r[metric] or {}
        lo_hi = m.get("interval")
        mean = "—" if m.get("mean") is None else f"{m['mean']:.3f}" + (
            f" [{lo_hi[0]:.3f}, {lo_hi[1]:.3f}]" if lo_hi else "")
        seeds = ", ".join(f"{v:.2f}" for v in m.get("seed_means", [])) if r["seeds"] > 1 else "—"
        d = r["reference_minus_this"]
        if r["group"] == reference:
            diff, per_seed = "reference", ""
        elif not d or d.get("mean") is None:
            diff, per_seed = "—", ""
        else:
            iv = d.get("interval")
            diff = f"{d['mean']:+.3f}" + (f" [{iv[0]:+.3f}, {iv[1]:+.3f}]" if iv else "")
            per_seed = ", ".join(f"{v:+.2f}" for v in d["seed_diffs"]) + (" (sign changes)" if d["changes_sign"] else "")
        lines.append(f"{r['group']:<{w}}{r['seeds']:>6}{mean:>28}{seeds:>22}"
                     + (f"{win_tie_text(r.get('judge')):>23}" if judge else "") + f"{diff:>34}  {per_seed}")
    lines.append("(over reward-model seeds and prompts: per seed a prompt's samples are averaged, then the mean "
                 "over seeds and prompts with a 95% interval from a crossed random-effects model - seeds x "
                 "prompts, method of moments, Satterthwaite's t; a method without a reward model has one seed "
                 "and is paired with every seed of the reference; an ordering holds where its interval "
                 "excludes 0" + ("; the judge's win-tie rate likewise over seed-paired prompts" if judge else "") + ")")
    return "\n".join(lines)


def win_tie_text(judged: dict | None) -> str:
    """The judge's win-tie rate over seeds and prompts as a percentage with its 95 % interval."""
    stat = (judged or {}).get("win_tie") or {}
    if stat.get("mean") is None:
        return "—"
    iv = stat.get("interval")
    return f"{100 * stat['mean']:.0f}" + (f" [{100 * max(iv[0], 0):.0f}, {100 * min(iv[1], 1):.0f}]" if iv else "")


AXES = (("reward_tokens_per_prompt", "reward-model tokens read per prompt", "reward_vs_rm_tokens.png"),
        ("wall_s_per_prompt", "wall seconds per prompt", "reward_vs_wall_s.png"))


def plot(rows: list[dict], out: Path, reference: str | None, axes=AXES, title: str = "Reward per unit of compute"
         ) -> list[str]:
    """Mean reward (gold when given, else the evaluation RM's; ± SE) against each of ``axes``' cost
    per prompt ((row key, label, file name), x log): a curve a method, its budgets as points; a
    method that costs nothing on an axis (top-k reads no reward model) as a level to beat, and the
    reference run as a dashed one. Returns the files written under ``out/plots``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = "gold" if any(r.get("gold") for r in rows) else "reward"
    usable = [r for r in rows if r.get(metric) and r[metric].get("mean") is not None]
    ref = next((r for r in usable if r["label"] == reference or r.get("group") == reference), None)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    names = []
    colors = {m: f"C{i}" for i, m in enumerate(dict.fromkeys(r["method"] for r in usable))}  # alike in every plot
    for key, xlabel, name in axes:
        fig, ax = plt.subplots(figsize=(7.5, 5))
        for method in colors:
            mine = sorted((r for r in usable if r["method"] == method), key=lambda r: r[key])
            if all(r[key] > 0 for r in mine):
                ax.errorbar([r[key] for r in mine], [r[metric]["mean"] for r in mine],
                            yerr=[r[metric]["se"] or 0.0 for r in mine], marker="o", capsize=3, label=method,
                            color=colors[method])
                for r in mine:
                    if r["budget"]:
                        ax.annotate(r["budget"], (r[key], r[metric]["mean"]), fontsize=7, xytext=(3, 3),
                                    textcoords="offset points")
            else:
                ax.axhline(mine[0][metric]["mean"], color=colors[method], lw=1, ls=":", label=f"{method} (no RM)")
        if ref is not None:
            ax.axhline(ref[metric]["mean"], color="black", lw=1, ls="--", label=f"{reference} (reference)")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"mean {'gold reward' if metric == 'gold' else 'evaluation-RM reward'} (± SE over prompts)")
        ax.set_title(title)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "plots" / name, dpi=120)
        plt.close(fig)
        names.append(name)
    return names


def run_compare(config: GenerateConfig, spec: CompareConfig, models=None, progress: bool = True) -> dict:
    """``pargs-batch compare``: plan the runs, generate and evaluate them, print and write the table
    and plots; returns what ``compare.json`` holds."""
    out = Path(spec.output_dir)
    runs = plan_runs(config, spec)
    evaluation = spec.evaluation
    done = compare_runs(config, runs, evaluation, out, spec.reference, spec.overwrite, models, progress)
    rows = table_rows(runs, done)
    notes = [f"{name} guided by {', '.join(g if isinstance(g, str) else g['path'] for g in (r if isinstance(r, list) else [r]))}"
             for name, r in spec.rewards.items()]
    text = format_table(rows, done["reference"], "; ".join(notes))
    seeded = any(run.seed is not None for run in runs)
    metric = "gold" if any(r["gold"] for r in rows) else "reward"
    over_seeds = seed_rows(runs, out / "report", done["reference"], metric) if seeded else None
    if over_seeds:
        judged = judge_seed_rows(runs, out / "report", done["reference"])
        for row in over_seeds:
            row["judge"] = judged.get(row["group"])
        text += "\n\n" + format_seed_table(over_seeds, done["reference"], metric)
    out.mkdir(parents=True, exist_ok=True)
    result = {"llm": config.model.path, "reward_model": config.reward.path or None,
              "evaluation_model": (evaluation.get("reward") or {}).get("path"),
              "gold_reward": evaluation.get("gold_reward"),
              "prompts": config.data.source, "reference": done["reference"], "rows": rows,
              "over_seeds": over_seeds,
              "plots": plot(group_points(rows, over_seeds, metric), out, done["reference"]),
              "report": str(out / "report" / "report.md"),
              "engines": done["engines"],
              "generate_seconds": done["generate_seconds"], "seconds": done["seconds"]}
    (out / "compare.json").write_text(json.dumps(result, indent=2))
    (out / "compare.md").write_text("# Comparison\n\n```\n" + text + "\n```\n\n" +
                                    "\n".join(f"![{p}](plots/{p})" for p in result["plots"]) + "\n")
    console.show("\n" + text)
    console.say(f"compare: {len(runs)} runs in {result['seconds']} s; table, plots, report and runs in {out}/")
    return result


def parse_budget(text: str) -> tuple[str, str, list[Any]]:
    """``pargs.top_k=2,5,10`` -> ("pargs", "top_k", [2, 5, 10]) (values read as YAML scalars)."""
    import yaml

    head, sep, values = text.partition("=")
    method, dot, key = head.rpartition(".")
    if not (sep and dot and method and key and values):
        raise ConfigError("--budget", text, "METHOD.KEY=V1,V2,... e.g. pargs.top_k=2,5,10")
    return method, key, [yaml.safe_load(v) for v in values.split(",")]
