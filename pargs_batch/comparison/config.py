"""What ``pargs-batch compare`` runs: its config (methods, budgets, reward models, seeds, the
evaluation), the runs it plans from them, each run's generate config and the evaluation that scores them
all - checked before any model loads."""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pargs_batch.config import GenerateConfig
from pargs_batch.configlib import ConfigError, Loadable, build, option
from pargs_batch.decoding import METHODS
from pargs_batch.evaluation.config import EvalConfig

DEFAULT_METHODS = ["topk", "args", "pargs-greedy", "pargs", "best-of-n"]
# the decode keys a budget may vary: what changes how much a method computes (or, for beta, what it buys)
BUDGET_KEYS = ("top_k", "n_candidates", "block_tokens", "reject_fraction", "beta", "temperature", "n_particles",
               "smc_proposal", "ess_threshold")


# a reward model given to compare by its path alone: read as its checkpoint says, not with the config's keys
OWN_READING = {"input": "auto", "template": "{prompt}{response}", "dtype": "auto"}


@dataclass
class CompareConfig(Loadable):
    """What to compare: methods, budgets and the evaluation; the models and prompts come from the generate config."""

    methods: list[str] = option("decoding methods to run, each at the generate config's settings unless it has "
                                "budgets", factory=lambda: list(DEFAULT_METHODS))
    budgets: dict = option("per method, decode keys and the values to run it at, e.g. {pargs: {top_k: [2, 5, 10]}, "
                           "best-of-n: {n_candidates: [4, 16]}}; several keys run every combination; keys: "
                           + ", ".join(BUDGET_KEYS), factory=dict)
    rewards: dict = option("per method, a guidance reward model other than the config's: a path (read as its "
                           "checkpoint says: reward.input auto, its own dtype), or a mapping of reward.* keys, e.g. "
                           "{args: path/to/full-sequence-rm} (ARGS is defined with a full-sequence one); a list of "
                           "them: that model's seeds. Best-of-N, which scores whole responses, takes ARGS's when it "
                           "has none of its own", factory=dict)
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
        if given is None and name == "best-of-n":  # whole responses: the full-sequence model where given
            given = spec.rewards.get("args")
        # another model replaces the config's (its path or its ensemble), scored by the hf backend unless
        # the entry says otherwise; one given by its path is read as its checkpoint says (its input, its
        # template, its dtype), not with the config's keys for another model
        if not METHODS[name].uses_reward:
            seeds = [None]
        elif given is None:
            seeds = own_seeds
        else:
            seeds = [{"models": [], "backend": "hf", **({"path": g, **OWN_READING} if isinstance(g, str) else g)}
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


def parse_budget(text: str) -> tuple[str, str, list[Any]]:
    """``pargs.top_k=2,5,10`` -> ("pargs", "top_k", [2, 5, 10]) (values read as YAML scalars)."""
    import yaml

    head, sep, values = text.partition("=")
    method, dot, key = head.rpartition(".")
    if not (sep and dot and method and key and values):
        raise ConfigError("--budget", text, "METHOD.KEY=V1,V2,... e.g. pargs.top_k=2,5,10")
    return method, key, [yaml.safe_load(v) for v in values.split(",")]
