"""`pargs-batch demo`: every decode method on the tiny default world, one engine shared by all."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

DEMO_METHODS = ("topk", "args", "pargs-greedy", "pargs", "best-of-n")


def demo_config(world: dict, method: str, out_dir: Path, num_prompts: int, beta: float,
                max_new_tokens: int) -> dict:
    """The generate config of one demo run, as a plain dict (what a YAML file would hold)."""
    return {
        "model": {"path": world["llm"], "dtype": "float32", "max_model_len": 256,
                  "kv_cache_memory_bytes": 64 << 20},
        "reward": {"path": world["reward_model"], "template": "{prompt}{response}", "batch_size": 256},
        "decode": {"method": method, "beta": beta, "top_k": 10, "max_new_tokens": max_new_tokens,
                   "seed": 0, "micro_batch_size": 64},  # best-of-n: N = k = 10
        "data": {"source": world["prompts"], "id_column": "id", "limit": num_prompts},
        "output": {"path": str(out_dir / method), "overwrite": True},
        "ray": {"enabled": False},  # one process shares one engine across the methods
    }


def run_demo(out_dir: str = "outputs/demo", world_dir: str = "outputs/world", num_prompts: int = 64,
             beta: float = 2.0, max_new_tokens: int = 32, sweep_beta: list[float] | None = None) -> list[dict]:
    from pargs_batch.config import GenerateConfig, build
    from pargs_batch.generate import run_generate
    from pargs_batch.pool import load_models
    from pargs_batch.io import read_output
    from pargs_batch.world.tiny import build_tiny_world

    t0 = time.perf_counter()
    world = build_tiny_world(world_dir)
    print(f"world ready in {world_dir} ({time.perf_counter() - t0:.1f} s)")
    out = Path(out_dir)
    configs = {m: build(GenerateConfig, demo_config(world, m, out, num_prompts, beta, max_new_tokens))
               for m in DEMO_METHODS}
    # every method uses the same LLM and reward model: load them once (the guided config loads the RM)
    models = load_models(configs["pargs"])
    scorer = models[2]
    table = []
    for method, config in configs.items():
        summary = run_generate(config, models=models)
        rows = read_output(config.output.path).to_pylist()
        ok = [r for r in rows if r["error"] is None]
        final = scorer.score([r["prompt"] for r in ok], [r["response"] for r in ok])
        table.append({"method": method, "rows": len(rows), "mean_tokens": float(np.mean([r["num_tokens"] for r in ok])),
                      "mean_reward": float(final.mean()), "reward_se": float(final.std(ddof=1) / np.sqrt(len(final))),
                      "tokens_per_s": summary["tokens_per_s"]})
    print(f"\n{'method':<14}{'rows':>6}{'mean tokens':>13}{'mean reward ± SE':>22}{'tokens/s':>10}")
    for r in table:
        reward = f"{r['mean_reward']:.3f} ± {r['reward_se']:.3f}"
        print(f"{r['method']:<14}{r['rows']:>6}{r['mean_tokens']:>13.1f}{reward:>22}{r['tokens_per_s']:>10.0f}")
    print(f"\n(beta={beta}, k=10, reward = the guidance reward model on the final response; "
          f"outputs in {out_dir}/)")
    (out / "demo_table.json").write_text(json.dumps(table, indent=2))
    if sweep_beta:
        sweep(world, out, models, num_prompts, sweep_beta, max_new_tokens)
    return table


def sweep(world: dict, out: Path, models, num_prompts: int, betas: list[float], max_new_tokens: int) -> dict:
    """The paper's Table 4: pargs at each beta, scored by the world's gold reward, with a plot."""
    from pargs_batch.config import GenerateConfig, build
    from pargs_batch.evaluation.config import EvalConfig
    from pargs_batch.evaluation.run import run_evaluate
    from pargs_batch.generate import run_generate

    runs = []
    for beta in betas:
        cfg = demo_config(world, "pargs", out / "sweep", num_prompts, beta, max_new_tokens)
        cfg["output"]["path"] = str(out / "sweep" / f"pargs-beta{beta:g}")
        run_generate(build(GenerateConfig, cfg), models=models)
        runs.append(cfg["output"]["path"])
    report = run_evaluate(build(EvalConfig, {"runs": runs, "output_dir": str(out / "sweep" / "report"),
                                             "gold_reward": "pargs_batch.world.tiny:gold_reward"}), progress=False)
    print(f"\n{'beta':>6}{'gold reward ± SE':>22}")
    for label in report["beta_groups"][0]:
        r = report["runs"][label]
        print(f"{r['beta']:>6g}{r['gold']['mean']:>14.3f} ± {r['gold']['se']:.3f}")
    print(f"(pargs, gold reward of the tiny world; table and plot in {out / 'sweep' / 'report'}/)")
    return report
