"""`pargs-batch evaluate`: read generation runs, measure them, write the report.

Rows with an ``error`` are counted and excluded, never scored. The evaluation reward model must not
be a run's guidance model unless ``allow_same_model`` (the paper scores with a separate one).
"""

from __future__ import annotations

import importlib
import json
import os
import time
from pathlib import Path

from pargs_batch.configlib import ConfigError
from pargs_batch.evaluation import metrics
from pargs_batch.evaluation.config import EvalConfig


def load_runs(config: EvalConfig) -> dict[str, dict]:
    """label -> {path, config (from the Parquet metadata), rows}."""
    from pargs_batch.output import read_output

    runs = {}
    for i, path in enumerate(config.runs):
        try:
            table = read_output(path)
        except FileNotFoundError:
            raise ConfigError("runs", path, "holds no Parquet part files (part-*.parquet); "
                              "is it a finished generation output?") from None
        gen_config = json.loads(table.schema.metadata[b"pargs_batch.config"])
        d = gen_config["decode"]
        label = config.labels[i] if config.labels else f"{d['method']} beta={d['beta']:g}"
        if label in runs:
            label = f"{label} ({Path(path).name})"
        runs[label] = {"path": str(path), "config": gen_config, "rows": table.to_pylist()}
    return runs


def check_models(config: EvalConfig, runs: dict[str, dict]) -> None:
    from pargs_batch.reward import check_reward_input

    check_reward_input(config.reward)
    if config.allow_same_model or not config.reward.path:
        return
    mine = os.path.realpath(config.reward.path)
    for label, run in runs.items():
        guidance = run["config"]["reward"]["path"]
        if guidance and os.path.realpath(guidance) == mine:
            raise ConfigError("reward.path", config.reward.path,
                              f"is the guidance reward model of run '{label}'; evaluate with a separate "
                              "model or set allow_same_model: true")


def import_callable(spec: str):
    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ConfigError("gold_reward", spec, f"cannot be imported ({type(e).__name__})") from None


def score_runs(config: EvalConfig, runs: dict[str, dict], progress: bool) -> dict[str, dict]:
    """Per run: rows, error rows, reward ± SE (evaluation RM and gold), diversity, raw scores."""
    from tqdm import tqdm

    scorer = None
    if config.reward.path and config.ray.enabled:  # the generation pool's reward actors, sharing the work
        from pargs_batch.pool import RemoteScorer, init_ray, reward_actors

        init_ray(config.ray.address)
        scorer = RemoteScorer(reward_actors(config.reward, [config.ray.resources] * config.ray.num_actors))
    elif config.reward.path:
        from pargs_batch.reward import HFRewardScorer

        scorer = HFRewardScorer(config.reward)
    gold = import_callable(config.gold_reward) if config.gold_reward else None
    results = {}
    for label, run in tqdm(runs.items(), desc="score runs", unit="run", disable=not progress):
        ok = [r for r in run["rows"] if r["error"] is None]
        prompts, responses = [r["prompt"] for r in ok], [r["response"] for r in ok]
        d = run["config"]["decode"]
        result = {"path": run["path"], "method": d["method"], "beta": d["beta"], "rows": len(run["rows"]),
                  "error_rows": len(run["rows"]) - len(ok),
                  "guidance_model": run["config"]["reward"]["path"] or None}
        if scorer is not None:
            rewards = scorer.score(prompts, responses).tolist() if ok else []
            result["reward"] = metrics.mean_se(rewards)
            result["reward_values"] = rewards
        if gold is not None:
            values = [float(x) for x in gold(prompts, responses)] if ok else []
            result["gold"] = metrics.mean_se(values)
            result["gold_values"] = values
        by_prompt: dict[str, list[str]] = {}
        for r in ok:
            by_prompt.setdefault(r["id"], []).append(r["response"])
        result["diversity"] = metrics.rouge_l_diversity(by_prompt)
        result["mean_tokens"] = metrics.mean_se([r["num_tokens"] for r in ok])["mean"]
        results[label] = result
    return results


def judge_runs(config: EvalConfig, runs: dict[str, dict], progress: bool) -> list[dict]:
    """Win/tie/loss/invalid of A against B for each requested pair, on their shared prompts."""
    from pargs_batch.evaluation.judge import Judge, JudgeCache

    j = config.judge
    if not j.pairs:
        return []
    for pair in j.pairs:
        for label in pair:
            if label not in runs:
                raise ConfigError("judge.pairs", pair, f"no run is labelled {label!r}; labels: {', '.join(runs)}")
    api_key = os.environ.get(j.api_key_env)
    if api_key is None:
        raise ConfigError("judge.api_key_env", j.api_key_env, "no such environment variable is set")
    cache = JudgeCache(config.cache_dir or Path(config.output_dir) / "judge_cache.sqlite")
    judge = Judge(j.base_url, j.model, api_key, j.template, cache, j.max_concurrency, j.max_retries,
                  j.parse_retries, j.timeout, j.max_tokens)
    out = []
    for a, b in j.pairs:
        first = {r["id"]: r for r in runs[a]["rows"] if r["error"] is None and r["sample_index"] == 0}
        second = {r["id"]: r for r in runs[b]["rows"] if r["error"] is None and r["sample_index"] == 0}
        shared = [i for i in first if i in second][: j.max_prompts]
        if not shared:
            raise ConfigError("judge.pairs", [a, b], "the two runs share no prompt ids")
        items = [(i, first[i]["prompt"], first[i]["response"], second[i]["response"]) for i in shared]
        before = judge.requests
        records = judge.compare_all(items, j.seed, progress)
        out.append({"a": a, "b": b, "prompts": len(shared), "seed": j.seed,
                    "requests": judge.requests - before,
                    **metrics.win_tie([r["outcome"] for r in records]), "records": records})
    return out


def run_evaluate(config: EvalConfig, progress: bool = True) -> dict:
    """Measure every run, judge the pairs, write report.md, report.json and plots/ and return it all."""
    from pargs_batch.evaluation.report import write_report

    start = time.perf_counter()
    runs = load_runs(config)
    check_models(config, runs)
    if config.judge.pairs and os.environ.get(config.judge.api_key_env) is None:  # before any model loads
        raise ConfigError("judge.api_key_env", config.judge.api_key_env, "no such environment variable is set")
    results = score_runs(config, runs, progress)
    judged = judge_runs(config, runs, progress)
    groups = metrics.beta_groups({label: run["config"] for label, run in runs.items()})
    report = {
        "evaluation_model": config.reward.path or None,
        "gold_reward": config.gold_reward,
        "runs": results,
        "judge": {"model": config.judge.model, "base_url": config.judge.base_url, "template": config.judge.template,
                  "pairs": judged} if judged else None,
        "beta_groups": groups,
        "seconds": round(time.perf_counter() - start, 2),
    }
    write_report(report, Path(config.output_dir))
    return report
