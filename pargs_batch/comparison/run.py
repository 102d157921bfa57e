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
(``compare_runs`` with their own lists of runs). What runs is planned in ``config``; the table and
plots are drawn in ``tables``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from pargs_batch.decoding import METHODS
from pargs_batch.comparison.config import (CompareConfig, Run, check_planned_evaluation, evaluation_config, plan_runs,
                                           reference_group, reference_pairs, run_configs)
from pargs_batch.comparison.tables import (format_seed_table, format_table, group_points, judge_seed_rows, plot,
                                           seed_rows, table_rows)
from pargs_batch.config import GenerateConfig
from pargs_batch.console import console




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
            c = configs[label]
            guided = METHODS[c.decode.method].uses_reward
            rm = (c.reward.path or f"{len(c.reward.models)} weighted models") if guided else "no reward model"
            console.say(f"compare: run {i}/{len(configs)}: {label} (guided by {rm})" if guided
                        else f"compare: run {i}/{len(configs)}: {label} ({rm})")
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


