"""`pargs-batch bench --memory`: the driver's peak memory against the number of prompts.

Runs `pargs-batch generate` as a user would (a subprocess each, so each peak is its own) on the tiny
world's LLM - method ``topk``, one new token, Ray off - over N synthetic prompts for each N, then
runs the same command again on the finished output (a resume: it reads every finished id and
generates nothing), then `pargs-batch evaluate` on it (gold reward only: it streams the output in
record batches). Reports the driver's peak RSS of each run and the growth per prompt between
the smallest and the largest N: what bookkeeping costs a prompt (a 64-bit hash, 8 bytes: in the
earlier runs' finished set or, for the ids still to come, the reader's duplicate check).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from pargs_batch.console import console

TARGET_BYTES_PER_PROMPT = 32


def write_prompts(path: Path, n: int) -> None:
    with open(path, "w") as f:
        for start in range(0, n, 100_000):
            f.write("".join(f'{{"id": "p{i:08d}", "prompt": "review of the cafe :"}}\n'
                            for i in range(start, min(n, start + 100_000))))


def generate(config: Path, log: Path, command: str = "generate") -> dict:
    """One `pargs-batch generate` (or ``evaluate``) run; its summary."""
    cli = str(Path(sys.executable).parent / "pargs-batch")
    t0 = time.perf_counter()
    with open(log, "w") as err:
        out = subprocess.run([cli, command, "--config", str(config), "--no-progress", "--verbose"], stdout=subprocess.PIPE,
                             stderr=err, text=True, check=True).stdout
    summary = json.loads(next(x for x in out.splitlines() if x.startswith("summary: "))[9:])
    summary["command_s"] = round(time.perf_counter() - t0, 1)
    return summary


def text_files(out: Path, n: int = 100_000, words: int = 150, tokens: int = 200) -> dict:
    """The part files ``n`` rows of typical text make with the default ``output.*`` settings:
    synthetic rows (a 20-word prompt, a ``words``-word response drawn from 5,000 made-up words,
    ``tokens`` token ids and rewards, as a ``pargs`` row has) written through ``RunDir`` in
    micro-batches of 64, then read back whole by pyarrow."""
    import random

    import pyarrow.parquet as pq

    from pargs_batch.io.batch import ResponseRow
    from pargs_batch.io.output import RunDir, read_output

    rng = random.Random(0)
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(5000)]
    path = out / "text-files"
    run = RunDir(path, {"bench": "text"}, {"pargs_batch.config": "{}"}, overwrite=True)
    t0 = time.perf_counter()
    for start in range(0, n, 64):
        run.write([ResponseRow(f"q{i:08d}", 0, " ".join(rng.choices(vocab, k=20)), " ".join(rng.choices(vocab, k=words)),
                               [rng.randrange(50_000) for _ in range(tokens)], "eos", "pargs", 1.5, 10, 1.0, 0,
                               [rng.uniform(-3, 3) for _ in range(tokens)], "meta-llama/Llama-3.1-8B-Instruct",
                               "my-org/partial-rm", None) for i in range(start, min(n, start + 64))])
    run.close()
    write_s = time.perf_counter() - t0
    files = sorted(path.glob("part-*.parquet"))
    t0 = time.perf_counter()
    rows = read_output(path).num_rows
    result = {"rows": rows, "files": len(files), "file_mb": [round(f.stat().st_size / (1 << 20), 1) for f in files],
              "row_groups": [pq.ParquetFile(f).num_row_groups for f in files], "write_s": round(write_s, 1),
              "read_s": round(time.perf_counter() - t0, 2)}
    console.show(f"  {n} text rows ({words} words, {tokens} tokens each): {result['files']} part file(s) of "
                 f"{', '.join(map(str, result['file_mb']))} MB, {sum(result['row_groups'])} row groups; "
                 f"pyarrow reads them in {result['read_s']} s")
    return result


class MissingMeasurement(RuntimeError):
    """A figure ``bench --memory`` needs did not come out of its runs: the bench fails rather than
    judge what it did not measure."""


KINDS = ("fresh", "resume", "evaluate")  # the runs whose peak each size measures
JUDGED = ("fresh", "resume")              # the ones held to TARGET_BYTES_PER_PROMPT


def check_sizes(sizes) -> list[int]:
    """The prompt counts to measure at: at least two different ones, each at least 1 (growth per prompt
    is a difference between two sizes: one size alone measures none)."""
    from pargs_batch.configlib import ConfigError

    sizes = [int(n) for n in sizes]
    if len(set(sizes)) < 2 or min(sizes) < 1:
        raise ConfigError("--memory-sizes", ",".join(map(str, sizes)),
                          "at least two different prompt counts, each >= 1: the growth per prompt is measured "
                          "between the smallest and the largest")
    return sizes


def figure(summary: dict, key: str, what: str) -> float:
    """``summary[key]``, a positive number, or MissingMeasurement saying which run did not report it."""
    value = summary.get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise MissingMeasurement(f"bench --memory: {what} reported no {key} (got {value!r}); its summary has "
                                 f"{sorted(summary)}")
    return float(value)


def growth_per_prompt(rows: list[dict]) -> dict[str, float]:
    """Bytes of peak RSS per prompt, fresh / resume / evaluate, between the smallest and the largest
    size; MissingMeasurement where a row lacks a peak or there is no span to divide by."""
    small, large = min(rows, key=lambda r: r["prompts"]), max(rows, key=lambda r: r["prompts"])
    span = large["prompts"] - small["prompts"]
    if span <= 0:
        raise MissingMeasurement(f"bench --memory: no growth to measure between {small['prompts']} and "
                                 f"{large['prompts']} prompts (two different sizes are needed)")
    out = {}
    for kind in KINDS:
        key = f"{kind}_peak_rss_mb"
        peaks = [figure(r, key, f"the {kind} row of {r['prompts']} prompts") for r in (small, large)]
        out[kind] = (peaks[1] - peaks[0]) * (1 << 20) / span
    return out


def verdict(growth: dict[str, float]) -> dict[str, bool]:
    """Whether each judged run's growth per prompt is within TARGET_BYTES_PER_PROMPT; MissingMeasurement
    where one was not measured (a missing figure never passes)."""
    import math

    out = {}
    for kind in JUDGED:
        b = growth.get(kind)
        if not isinstance(b, (int, float)) or not math.isfinite(b):
            raise MissingMeasurement(f"bench --memory: no driver growth per prompt for the {kind} run (got {b!r})")
        out[kind] = b <= TARGET_BYTES_PER_PROMPT
    return out


def run_memory(out_dir: str = "outputs/bench", sizes=(20_000, 1_000_000), micro_batch: int = 1024,
               text_rows: int = 100_000, world: dict | None = None) -> dict:
    """Peak memory of each run at each of ``sizes`` prompts (at least two different ones), the growth
    per prompt and whether it meets the target, and the part files ``text_rows`` rows of text make;
    prints the table and writes OUT/memory.json. ``world``: a built tiny world to reuse (default: build
    one under OUT/memory). A figure missing from a run's summary raises MissingMeasurement."""
    import pyarrow.parquet as pq
    import yaml

    from experiments.world.tiny import build_tiny_world

    sizes = check_sizes(sizes)
    out = Path(out_dir) / "memory"
    out.mkdir(parents=True, exist_ok=True)
    world = world or build_tiny_world(out / "tiny-world")
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
        eval_config = out / f"eval-{n}.yaml"  # the evaluation job streams the same output back
        eval_config.write_text(yaml.safe_dump({"runs": [str(out / f"out-{n}")], "output_dir": str(out / f"eval-{n}"),
                                               "gold_reward": "experiments.world.tiny:gold_reward"}))
        evaluation = generate(eval_config, out / f"eval-{n}.log", "evaluate")
        if resume.get("resumed_rows") != n:  # else the resume row measures a second fresh run
            raise MissingMeasurement(f"bench --memory: the resume of {n} prompts resumed {resume.get('resumed_rows')!r} "
                                     f"rows, not {n}: it measured no resume")
        parts = sorted((out / f"out-{n}").glob("part-*.parquet"))
        row = {"prompts": n, "fresh_peak_rss_mb": figure(fresh, "driver_peak_rss_mb", f"the fresh run of {n} prompts"),
               "resume_peak_rss_mb": figure(resume, "driver_peak_rss_mb", f"the resume of {n} prompts"),
               "evaluate_peak_rss_mb": figure(evaluation, "peak_rss_mb", f"the evaluation of {n} prompts"),
               "fresh_s": fresh["command_s"], "resume_s": resume["command_s"], "evaluate_s": evaluation["command_s"],
               "files": fresh["files"], "finished_ids_bytes": resume["finished_ids_bytes"],
               "resumed_rows": resume["resumed_rows"],
               "file_mb": [round(f.stat().st_size / (1 << 20), 2) for f in parts],
               "row_groups": [pq.ParquetFile(f).num_row_groups for f in parts]}
        rows.append(row)
        console.show(f"  {n:>9} prompts: driver peak {row['fresh_peak_rss_mb']:.0f} MB fresh ({row['fresh_s']} s), "
                     f"{row['resume_peak_rss_mb']:.0f} MB resuming ({row['resume_s']} s), evaluation "
                     f"{row['evaluate_peak_rss_mb']:.0f} MB ({row['evaluate_s']} s); {row['files']} file(s) of "
                     f"{', '.join(map(str, row['file_mb']))} MB")
    growth = growth_per_prompt(rows)
    met = verdict(growth)
    result = {"rows": rows, "bytes_per_prompt": growth, "target_bytes_per_prompt": TARGET_BYTES_PER_PROMPT,
              "target_met": met, "text_files": text_files(out, text_rows)}
    console.show(f"\n{'prompts':>10} {'fresh MB':>10} {'resume MB':>10} {'evaluate MB':>12} {'fresh s':>9} {'resume s':>9} "
                 f"{'evaluate s':>11}")
    for r in rows:
        console.show(f"{r['prompts']:>10} {r['fresh_peak_rss_mb']:>10.0f} {r['resume_peak_rss_mb']:>10.0f} "
                     f"{r['evaluate_peak_rss_mb']:>12.0f} {r['fresh_s']:>9} {r['resume_s']:>9} {r['evaluate_s']:>11}")
    for kind, b in growth.items():
        if kind == "evaluate":
            console.show(f"evaluation growth per row: {b:.1f} bytes (streamed in record batches)")
            continue
        console.show(f"driver growth per prompt ({kind}): {b:.1f} bytes "
                     f"[{'met' if met[kind] else 'NOT met'}: <= {TARGET_BYTES_PER_PROMPT}]")
    (Path(out_dir) / "memory.json").write_text(json.dumps(result, indent=2))
    return result
