"""`pargs-batch bench --memory`: the driver's peak memory against the number of prompts.

Runs `pargs-batch generate` as a user would (a subprocess each, so each peak is its own) on the tiny
world's LLM - method ``topk``, one new token, Ray off - over N synthetic prompts for each N, then
runs the same command again on the finished output (a resume: it reads every finished id and
generates nothing). Reports the driver's peak RSS of each run and the growth per prompt between
the smallest and the largest N: what bookkeeping costs a prompt (the reader's duplicate check and,
on a resume, the earlier run's finished ids are 64-bit hashes, 8 bytes a prompt each).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

TARGET_BYTES_PER_PROMPT = 32


def write_prompts(path: Path, n: int) -> None:
    with open(path, "w") as f:
        for start in range(0, n, 100_000):
            f.write("".join(f'{{"id": "p{i:08d}", "prompt": "review of the cafe :"}}\n'
                            for i in range(start, min(n, start + 100_000))))


def generate(config: Path, log: Path) -> dict:
    """One `pargs-batch generate` run; its summary."""
    cli = str(Path(sys.executable).parent / "pargs-batch")
    t0 = time.perf_counter()
    with open(log, "w") as err:
        out = subprocess.run([cli, "generate", "--config", str(config), "--no-progress"], stdout=subprocess.PIPE,
                             stderr=err, text=True, check=True).stdout
    summary = json.loads(next(x for x in out.splitlines() if x.startswith("summary: "))[9:])
    summary["command_s"] = round(time.perf_counter() - t0, 1)
    return summary


def run_memory(out_dir: str = "outputs/bench", sizes=(20_000, 1_000_000), micro_batch: int = 1024) -> dict:
    import pyarrow.parquet as pq
    import yaml

    from experiments.world.tiny import build_tiny_world

    out = Path(out_dir) / "memory"
    out.mkdir(parents=True, exist_ok=True)
    world = build_tiny_world(out / "tiny-world")
    rows = []
    for n in sizes:
        prompts = out / f"prompts-{n}.jsonl"
        if not prompts.exists():
            write_prompts(prompts, n)
        config = out / f"run-{n}.yaml"
        config.write_text(yaml.safe_dump({
            "model": {"path": world["llm"], "dtype": "float32", "max_model_len": 64,
                      "kv_cache_memory_bytes": 256 << 20},
            "decode": {"method": "topk", "max_new_tokens": 1, "micro_batch_size": micro_batch, "seed": 0},
            "data": {"source": str(prompts), "id_column": "id"},
            "output": {"path": str(out / f"out-{n}"), "overwrite": True},
            "ray": {"enabled": False}}))
        fresh = generate(config, out / f"run-{n}.log")
        config.write_text(config.read_text().replace("overwrite: true", "overwrite: false"))
        resume = generate(config, out / f"resume-{n}.log")
        row = {"prompts": n, "fresh_peak_rss_mb": fresh["driver_peak_rss_mb"],
               "resume_peak_rss_mb": resume["driver_peak_rss_mb"], "fresh_s": fresh["command_s"],
               "resume_s": resume["command_s"], "files": fresh["files"], "finished_ids_bytes": fresh["finished_ids_bytes"],
               "resumed_rows": resume["resumed_rows"],
               "file_mb": [round(f.stat().st_size / (1 << 20), 2)
                           for f in sorted((out / f"out-{n}").glob("part-*.parquet"))],
               "row_groups": [pq.ParquetFile(f).num_row_groups for f in sorted((out / f"out-{n}").glob("part-*.parquet"))]}
        rows.append(row)
        print(f"  {n:>9} prompts: driver peak {row['fresh_peak_rss_mb']:.0f} MB fresh ({row['fresh_s']} s), "
              f"{row['resume_peak_rss_mb']:.0f} MB resuming ({row['resume_s']} s); {row['files']} file(s) of "
              f"{', '.join(map(str, row['file_mb']))} MB", flush=True)
    small, large = rows[0], rows[-1]
    span = large["prompts"] - small["prompts"]
    growth = {kind: (large[f"{kind}_peak_rss_mb"] - small[f"{kind}_peak_rss_mb"]) * (1 << 20) / span
              for kind in ("fresh", "resume")} if span else {}
    result = {"rows": rows, "bytes_per_prompt": growth, "target_bytes_per_prompt": TARGET_BYTES_PER_PROMPT}
    print(f"\n{'prompts':>10} {'fresh MB':>10} {'resume MB':>10} {'fresh s':>9} {'resume s':>9}")
    for r in rows:
        print(f"{r['prompts']:>10} {r['fresh_peak_rss_mb']:>10.0f} {r['resume_peak_rss_mb']:>10.0f} "
              f"{r['fresh_s']:>9} {r['resume_s']:>9}")
    for kind, b in growth.items():
        print(f"driver growth per prompt ({kind}): {b:.1f} bytes "
              f"[{'met' if b <= TARGET_BYTES_PER_PROMPT else 'NOT met'}: <= {TARGET_BYTES_PER_PROMPT}]")
    (Path(out_dir) / "memory.json").write_text(json.dumps(result, indent=2))
    return result
