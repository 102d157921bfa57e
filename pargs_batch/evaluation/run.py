"""`pargs-batch evaluate`: read generation runs, measure them (``scoring``), judge them
(``judging``), write the report.

Runs are streamed in record batches (``batch_rows``), never loaded whole; ``report.json`` holds
aggregates only. The evaluation reward model must not be a run's guidance model unless
``allow_same_model`` (the paper scores with a separate one).
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

from pargs_batch.configlib import ConfigError
from pargs_batch.evaluation import metrics
from pargs_batch.evaluation.config import EvalConfig
from pargs_batch.evaluation.judging import check_judge, judge_runs
from pargs_batch.evaluation.scoring import pair_labels, paired_runs, score_runs


def load_runs(config: EvalConfig) -> dict[str, dict]:
    """label -> {path, config (from the Parquet metadata), rows}: footers only, no rows are read."""
    from pargs_batch.io.output import output_info

    runs = {}
    for i, path in enumerate(config.runs):
        try:
            gen_config, rows = output_info(path)
        except FileNotFoundError:
            raise ConfigError("runs", path, "holds no Parquet part files (part-*.parquet); "
                              "is it a finished generation output?") from None
        except OSError as e:
            raise ConfigError("runs", path, f"cannot be read ({str(e).splitlines()[0]})") from None
        d = gen_config["decode"]
        label = config.labels[i] if config.labels else f"{d['method']} beta={d['beta']:g}"
        if label in runs:
            label = f"{label} ({Path(path).name})"
        runs[label] = {"path": str(path), "config": gen_config, "rows": rows}
    return runs


def check_models(config: EvalConfig, runs: dict[str, dict]) -> None:
    from pargs_batch.rewards.hf import check_reward_input

    check_reward_input(config.reward)
    if config.allow_same_model or not config.reward.path:
        return
    mine = os.path.realpath(config.reward.path)
    for label, run in runs.items():
        reward = run["config"]["reward"]
        guidance = [reward["path"]] + [m.get("path") for m in reward.get("models") or []]
        if any(g and os.path.realpath(g) == mine for g in guidance):
            raise ConfigError("reward.path", config.reward.path,
                              f"is the guidance reward model of run '{label}'; evaluate with a separate "
                              "model or set allow_same_model: true")


def run_evaluate(config: EvalConfig, progress: bool = True) -> dict:
    """Measure every run, judge the pairs, write report.md, report.json (aggregates), plots/ and
    return the report; per-row scores are in scores.parquet, judgements in judge.parquet."""
    from pargs_batch.evaluation.report import write_report

    start = time.perf_counter()
    runs = load_runs(config)
    check_models(config, runs)
    check_judge(config, runs)
    pair_labels(config, runs)
    results = score_runs(config, runs, progress)
    paired = paired_runs(config, runs, results)
    judged = judge_runs(config, runs, progress)
    groups = metrics.beta_groups({label: run["config"] for label, run in runs.items()})
    report = {
        "evaluation_model": config.reward.path or None,
        "gold_reward": config.gold_reward,
        "runs": results,
        "paired": paired,
        "judge": {"model": config.judge.model, "base_url": config.judge.base_url, "template": config.judge.template,
                  "pairs": judged} if judged else None,
        "beta_groups": groups,
        "seconds": round(time.perf_counter() - start, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    write_report(report, Path(config.output_dir))
    return report
