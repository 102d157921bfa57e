"""Where a `generate` run's start-up goes: imports, the engine, the reward model, the first step.

    python -m experiments.bench.startup CONFIG.json SPAWNED_AT

is what ``measure_startup`` runs in a fresh process (a warm process hides imports), so the figures
are those a user's first `pargs-batch generate` meets: from the interpreter's start to the end of the
first guided step, the engine built and closed as `generate` does. The reward model's seconds are
its own load - in fused mode inside the engine (the guidance reports them), in stepped mode in this
process - and are not counted again in the engine's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time


def measure_startup(config: dict, repeats: int = 3) -> dict:
    """Median (and range) of each start-up phase over ``repeats`` fresh processes for ``config``."""
    import numpy as np

    runs = []
    for _ in range(repeats):
        spawned = time.time()
        done = subprocess.run([sys.executable, "-m", "experiments.bench.startup", json.dumps(config), str(spawned)],
                              capture_output=True, text=True, check=True, timeout=900)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {phase: {"median": float(np.median([r[phase] for r in runs])), "min": min(r[phase] for r in runs),
                    "max": max(r[phase] for r in runs)} for phase in runs[0]}


def _child(config_json: str, spawned: float) -> dict:
    t_imports = time.time()
    import torch  # noqa: F401 - what a run imports before its first model: torch, vLLM, transformers
    import vllm  # noqa: F401

    from pargs_batch.config import GenerateConfig
    from pargs_batch.configlib import build
    from pargs_batch.generation import run_generate
    from pargs_batch.models.loading import Models
    from pargs_batch.plan.placement import guides_in_engine

    config = build(GenerateConfig, json.loads(config_json))
    imported = time.time()
    models = Models()
    fused = guides_in_engine(config)
    tokenizer = models.tokenizer(config.model.tokenizer or config.model.path)
    t0 = time.time()
    reward_s = 0.0
    if not fused:  # stepped: the scorer loads in this process, on its own
        models.scorer(config.reward, len(tokenizer))
        reward_s = time.time() - t0
    t1 = time.time()
    loaded = models.for_config(config)
    engine_s = time.time() - t1
    if fused:
        reward_s = loaded[0].guide_info().reward_load_s
        engine_s -= reward_s
    t2 = time.time()
    run_generate(config, models=loaded, progress=False)
    first_step_s = time.time() - t2
    t3 = time.time()
    models.close()
    return {"imports_s": imported - spawned, "engine_s": engine_s, "reward_model_s": reward_s,
            "first_step_s": first_step_s, "total_s": t3 - spawned, "shutdown_s": time.time() - t3,
            "python_start_s": t_imports - spawned}


if __name__ == "__main__":
    import contextlib
    import os

    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):  # vLLM's prints; stdout is the JSON
        figures = _child(sys.argv[1], float(sys.argv[2]))
    print(json.dumps({k: round(v, 3) for k, v in figures.items()}))
    sys.stdout.flush()
