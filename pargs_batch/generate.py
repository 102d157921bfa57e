"""One generation run: prompts in, Parquet shards out as micro-batches finish, a summary at the end.

The driver streams prompts (Ray Data on the Ray path), skips those an earlier run into the same
directory finished, keeps every worker busy with up to ``ray.inflight_per_worker`` micro-batches,
and writes each finished micro-batch as a shard plus a manifest entry. Memory stays flat in the
number of prompts: only the micro-batches in flight are held.
"""

from __future__ import annotations

import json
import resource
import time

from pargs_batch.config import GenerateConfig
from pargs_batch.io import PromptSource, RunDir, package_versions
from pargs_batch.pool import DecodeWorker, LocalPool, RayPool, init_ray, merge_stats, new_stats
from pargs_batch.stepper import error_rows


def run_generate(config: GenerateConfig, models=None, progress: bool = True) -> dict:
    """Generate for every unfinished prompt of ``config.data`` into ``config.output.path``.

    Everything that can be checked without models (config, input columns, the output directory
    and its earlier run) is checked before any model loads. ``models`` (from ``pool.load_models``)
    runs in this process with models already loaded; otherwise ``ray.enabled`` picks the pool.
    """
    from tqdm import tqdm

    source = PromptSource(config.data)
    metadata = {"pargs_batch.config": config.to_json(), "pargs_batch.versions": json.dumps(package_versions())}
    run = RunDir(config.output.path, config.identity(), metadata, config.output.compression,
                 overwrite=config.output.overwrite)
    records, started = None, time.perf_counter()
    if models is not None:
        pool = LocalPool(DecodeWorker.from_models(config, *models))
    elif config.ray.enabled:
        init_ray(config)
        pool = RayPool(config)
        records = source.ray_records()
    else:
        pool = LocalPool(DecodeWorker(config))

    startup = time.perf_counter() - started
    stats, errors = new_stats(), 0
    llm, rm = config.model.path, config.reward.path or None
    bar = tqdm(desc=f"generate {config.decode.method}", unit="row", disable=not progress, dynamic_ncols=True)

    def write_next() -> None:
        nonlocal errors
        prompts, (status, payload) = pool.next_result()
        candidates = []
        if status == "ok":
            rows = payload["rows"]
            candidates = payload["candidates"] if config.output.keep_all_candidates else []
            merge_stats(stats, payload)
        else:
            rows = error_rows(prompts, config.decode, llm, rm,
                              f"micro-batch failed after {config.ray.max_retries} retries: {payload}")
        t0 = time.perf_counter()
        run.write(rows, candidates)
        stats["phase_s"]["io"] += time.perf_counter() - t0
        errors += sum(r.error is not None for r in rows)
        bar.update(len(rows))

    try:
        for prompts in source.batches(config.decode.micro_batch_size, records, skip=run.is_finished):
            while pool.pending() >= pool.capacity:
                write_next()
            pool.submit(prompts, prompts)
        while pool.pending():
            write_next()
    finally:
        bar.close()
        pool.shutdown()

    wall = time.perf_counter() - stats["start"]
    summary = {
        "method": config.decode.method,
        "rows": run.rows,
        "resumed_rows": run.resumed_rows,
        "error_rows": errors,
        "shards": run.shards,
        "tokens": stats["tokens"],
        "startup_s": round(startup, 3),
        "wall_s": round(wall, 3),
        "tokens_per_s": round(stats["tokens"] / wall, 1) if wall > 0 else 0.0,
        "phase_s": {k: round(v, 3) for k, v in sorted(stats["phase_s"].items())},
        "workers": config.ray.num_workers if config.ray.enabled and models is None else 1,
        "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "output": str(run.path),
    }
    (run.path / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
