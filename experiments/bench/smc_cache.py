"""What vLLM's prefix cache does for SMC: after a resampling, a particle's copies continue one prefix.

One SMC micro-batch (N particles, resampled at every block) on a model set, run through the
library's runner on a stepped engine; from the runner's own count of each request's prompt tokens
and vLLM's ``num_cached_tokens``: the share of prompt tokens served from the prefix cache in the
steps right after a resampling and over all steps, and how many requests the particles needed
(copies with one prefix share a request).
"""

from __future__ import annotations

import json
from pathlib import Path


def smc_prefix_cache(ms, prompts_file: str, out: Path, b: int = 64, tokens: int = 32, n: int = 16,
                     block: int = 8) -> dict:
    from experiments.bench.runs import generate_config
    from pargs_batch.config import GenerateConfig
    from pargs_batch.configlib import build
    from pargs_batch.io.batch import PromptRow
    from pargs_batch.models.loading import Models
    from pargs_batch.runners import make_runner

    cfg = generate_config(ms, prompts_file, out / "runs" / "smc-cache", b, "stepped", "hf", tokens)
    cfg["decode"].update(method="smc", n_particles=n, block_tokens=block, ess_threshold=1.0, beta=2.0)
    config = build(GenerateConfig, cfg)
    rows = [json.loads(line) for line in Path(prompts_file).read_text().splitlines()][:b]
    with Models() as models:
        engine, tokenizer, scorer = models.for_config(config)
        runner = make_runner(config, engine, tokenizer, scorer)
        result = runner.run([PromptRow(id=r["id"], prompt=r["prompt"]) for r in rows])
    figures = {"B": b, "n_particles": n, "block_tokens": block, "new_tokens": tokens,
               "resamples_per_row": sum(r.resamples for r in result.rows) / len(result.rows)}
    for name, (prompt_tokens, hits, requests, particles) in runner.cache.items():
        figures[name] = {"prompt_tokens": prompt_tokens, "cached_share": hits / max(prompt_tokens, 1),
                         "requests": requests, "particle_steps": particles,
                         "requests_per_particle": requests / max(particles, 1)}
    return figures


def format_smc_cache(f: dict) -> str:
    a, w = f["after_resample"], f["all"]
    return (f"SMC and vLLM's prefix cache ({f['model_set']}: B={f['B']}, N={f['n_particles']}, m={f['block_tokens']}, "
            f"resampled every block, {f['resamples_per_row']:.1f} resamplings a row): right after a resampling "
            f"{a['cached_share']:.1%} of the requests' prompt tokens came from the cache and "
            f"{a['requests_per_particle']:.2f} requests served each particle (copies share one); over all steps "
            f"{w['cached_share']:.1%} and {w['requests_per_particle']:.2f}")
