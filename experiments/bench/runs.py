"""Timed runs of one model set: plain sampling, stepped and fused guidance, the reference loop,
and the correctness guard. Every guided row goes through ``run_generate`` with models from
``pargs_batch.models.loading.Models``, the path `pargs-batch generate` takes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from experiments.bench.flops import K, count_params, flop_bound
from experiments.bench.models import ModelSet
from experiments.bench.report import phase_shares


def generate_config(models: ModelSet, prompts: str, out: Path, b: int, mode: str, backend: str, tokens: int,
                    method: str = "pargs") -> dict:
    return {
        # compiled, as plain's engine is, so each ratio to plain is the guidance's cost alone (the library's
        # default for a fused engine on CPU is eager, for its start-up; see model.enforce_eager)
        "model": {"path": models.llm, "dtype": "float32", "kv_cache_memory_bytes": 256 << 20, "enforce_eager": False,
                  **(models.model or {})},
        "engine": {"mode": mode},
        "reward": {"path": models.rm_causal if backend == "causal" else models.rm_hf, "backend": backend,
                   "batch_size": 1024},
        "decode": {"method": method, "beta": 1.0, "top_k": K, "max_new_tokens": tokens, "ignore_eos": True,
                   "seed": 0, "micro_batch_size": b},
        "data": {"source": prompts, "id_column": "id", "limit": b},
        "output": {"path": str(out), "overwrite": True},
        "ray": {"enabled": False},
    }


def write_prompts(world: dict, path: Path, n: int) -> str:
    rows = [json.loads(line) for line in Path(world["prompts"]).read_text().splitlines()]
    with open(path, "w") as f:
        f.writelines(json.dumps({"id": f"b{i:05d}", "prompt": rows[i % len(rows)]["prompt"]}) + "\n" for i in range(n))
    return str(path)


def time_plain(engine, tokenizer, prompts: list[str], tokens: int) -> dict:
    ids = [tokenizer(p)["input_ids"] for p in prompts]
    engine.sample(ids[:1], 1, [0], 2, -1, 1.0, [], True)  # warm-up
    t0 = time.perf_counter()
    out = engine.sample(ids, 1, list(range(len(ids))), tokens, -1, 1.0, [], True)
    wall = time.perf_counter() - t0
    made = sum(len(o[0][0]) for o in out)
    return {"tokens": made, "seconds": wall, "tokens_per_s": made / wall, "split": {"engine": 1.0, "reward": 0.0,
                                                                                   "decode": 0.0}}


def time_generate(config: dict, models) -> tuple[dict, list]:
    """One `generate` run of ``config`` with ``models`` (a ``Models``): its timing and its rows."""
    from pargs_batch.config import GenerateConfig
    from pargs_batch.configlib import build
    from pargs_batch.generation import run_generate
    from pargs_batch.io.output import read_output

    cfg = build(GenerateConfig, config)
    summary = run_generate(cfg, models=models.for_config(cfg), progress=False)
    rows = read_output(cfg.output.path).to_pylist()
    # tokens of the responses written (what a user gets), so that a population method (blockwise's K
    # candidates, SMC's N particles) is timed on the same footing; the LLM's own count beside it
    written = sum(r["num_tokens"] for r in rows)
    return {"tokens": written, "seconds": summary.wall_s, "tokens_per_s": written / summary.wall_s if summary.wall_s else 0.0,
            "llm_tokens": summary.tokens, "split": phase_shares(vars(summary.phase_s))}, rows


def check_guard(runs: dict, models) -> dict:
    """Rerun each timed configuration from a YAML config, as `pargs-batch generate --config` loads it,
    at another micro-batch size: the rows must be identical."""
    import tempfile

    import yaml

    from pargs_batch.config import GenerateConfig
    from pargs_batch.configlib import load_config
    from pargs_batch.generation import run_generate
    from pargs_batch.io.output import read_output

    result = {}
    for (mode, backend, b), (cfg, rows) in runs.items():
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "run.yaml"
            path.write_text(yaml.safe_dump(cfg))
            again = load_config(GenerateConfig, str(path), [f"output.path={tmp}/out",
                                                           f"decode.micro_batch_size={max(1, b // 2)}"])
            run_generate(again, models=models.for_config(again), progress=False)
            other = read_output(f"{tmp}/out").to_pylist()
        same = [(r["id"], r["response_token_ids"]) for r in rows] == [(r["id"], r["response_token_ids"]) for r in other]
        result[f"{mode}-{backend}-B{b}"] = same
    return result


# the population methods, timed at the largest B only: their decode keys beside the method
POPULATION = {
    "blockwise": {"method": "blockwise", "block_tokens": 8, "n_candidates": 4},
    "smc": {"method": "smc", "n_particles": 4, "block_tokens": 8, "smc_proposal": "guided", "ess_threshold": 0.5},
}


def timed_configs(batch_sizes: list[int]) -> list[tuple[str, str, str, int]]:
    """(method, mode, backend, B) of every timed row of a model set: plain and PARGS at every B, then
    blockwise (m = 8, K = 4) and SMC (N = 4 particles, m = 8, the guided proposal) at the largest."""
    rows = [(method, mode, backend, b) for b in batch_sizes
            for method, mode, backend in (("plain", "-", "-"), ("pargs", "stepped", "hf"), ("pargs", "stepped", "causal"),
                                          ("pargs", "fused", "hf"), ("pargs", "fused", "causal"))]
    return rows + [("blockwise", "stepped", "hf", max(batch_sizes)), ("smc", "stepped", "hf", max(batch_sizes)),
                   ("smc", "stepped", "causal", max(batch_sizes))]


def summarise(runs: list[dict]) -> dict:
    """One row's figures from its repeated runs: the median run (its split, tokens and seconds), and
    the spread of tokens/s over all of them."""
    speeds = sorted(r["tokens_per_s"] for r in runs)
    median = sorted(runs, key=lambda r: r["tokens_per_s"])[(len(runs) - 1) // 2]
    return {**median, "tokens_per_s": float(np.median(speeds)), "tokens_per_s_min": speeds[0],
            "tokens_per_s_max": speeds[-1], "repeats": len(runs), "runs_tokens_per_s": [r["tokens_per_s"] for r in runs]}


def run_model_set(ms: ModelSet, world: dict, out: Path, batch_sizes: list[int], tokens: int, reference_prompts: int,
                  flops: float, repeats: int = 3, log=None) -> tuple[list[dict], dict, dict]:
    """Every row of one model set, its shapes, and its correctness guard.

    Every engine the rows use is loaded first (the stepped one, shared by plain and both stepped
    backends, and a fused engine per backend, its reward model inside); then each round times every
    configuration once, the order rotated from round to round, so a slow minute of the machine
    falls on different configurations. A row reports the median of its rounds and their range."""
    from pargs_batch.console import console
    from pargs_batch.models.loading import Models

    log = log or console.say

    from experiments.bench.reference import reference_loop

    prompts_file = write_prompts(world, out / f"prompts-{ms.name}.jsonl", max(batch_sizes))
    prompt_texts = [json.loads(line)["prompt"] for line in Path(prompts_file).read_text().splitlines()]
    llm, rm_hf, rm_causal = count_params(ms.llm), count_params(ms.rm_hf), count_params(ms.rm_causal)
    shapes = {"hf": rm_hf, "causal": rm_causal}
    n_ctx = float(np.mean([len(p.split()) for p in prompt_texts])) + tokens / 2
    rows, guard = [], {}

    def config(b, mode, backend, name, n_tokens=tokens, method="pargs"):
        cfg = generate_config(ms, prompts_file, out / "runs" / name, b, mode, backend, n_tokens)
        cfg["decode"].update(POPULATION.get(method, {}))
        return cfg

    configs = timed_configs(batch_sizes)
    with Models() as models:
        for mode in ("stepped", "fused"):  # load every engine; first calls at new shapes compile and allocate
            for backend in ("hf", "causal"):
                time_generate(config(max(batch_sizes), mode, backend, "warm-up", 4), models)
        engine, tokenizer, _ = models.for_config(_build(config(batch_sizes[0], "stepped", "hf", "plain")))
        runs: dict[tuple, list[dict]] = {c: [] for c in configs}
        timed = {}
        for round_ in range(repeats):
            shift = round_ * len(configs) // max(repeats, 1)
            for method, mode, backend, b in configs[shift:] + configs[:shift]:
                if method == "plain":
                    runs[(method, mode, backend, b)].append(time_plain(engine, tokenizer, prompt_texts[:b], tokens))
                    continue
                cfg = config(b, mode, backend, f"{ms.name}-{method}-{mode}-{backend}-{b}", method=method)
                result, out_rows = time_generate(cfg, models)
                runs[(method, mode, backend, b)].append(result)
                if method == "pargs":  # the guard compares PARGS's modes
                    timed[(mode, backend, b)] = (cfg, out_rows)
            log(f"  {ms.name}: round {round_ + 1} of {repeats} timed")
        for method, mode, backend, b in configs:
            rm = shapes[backend] if method != "plain" else None
            bound = flop_bound(llm, rm, n_ctx, K, flops) if rm else flop_bound(llm, llm, n_ctx, 0, flops)
            result = summarise(runs[(method, mode, backend, b)])
            rows.append({"model_set": ms.name, "method": method, "mode": mode, "backend": backend, "B": b, **result,
                         "bound_s_per_token": bound, "measured_over_bound": (1 / result["tokens_per_s"]) / bound})
            log(f"  {ms.name:<12}{method:<10}{mode:<9}{backend:<8}B={b:<4} {result['tokens_per_s']:>9.0f} tok/s "
                f"({result['tokens_per_s_min']:.0f}-{result['tokens_per_s_max']:.0f})")
        guard.update(check_guard(timed, models))
    # the reference runs each reward model the pargs rows use, so every ratio is on the same models
    refs = {}
    for backend, path in (("hf", ms.rm_hf), ("causal", ms.rm_causal)):
        refs[backend] = summarise([reference_loop(ms.llm, path, prompt_texts[:reference_prompts], tokens)])
        rows.append({"model_set": ms.name, "method": "reference", "mode": "loop", "backend": backend, "B": 1,
                     **refs[backend], "bound_s_per_token": flop_bound(llm, shapes[backend], n_ctx, K, flops)})
        rows[-1]["measured_over_bound"] = (1 / refs[backend]["tokens_per_s"]) / rows[-1]["bound_s_per_token"]
    for r in rows:
        plain = next(p for p in rows if p["method"] == "plain" and p["B"] == r["B"]) \
            if r["method"] != "reference" else None
        r["vs_plain"] = r["tokens_per_s"] / plain["tokens_per_s"] if plain else None
        r["vs_reference"] = r["tokens_per_s"] / refs[r["backend"] if r["backend"] in refs else "hf"]["tokens_per_s"]
    log(f"  {ms.name}: correctness guard {'passed' if all(guard.values()) else 'FAILED'}: {guard}")
    return rows, {"llm": llm, "rm_hf": rm_hf, "rm_causal": rm_causal, "n_ctx": n_ctx,
                  "ratio_llm_to_rm": llm["N"] / rm_hf["N"]}, guard


def _build(config: dict):
    from pargs_batch.config import GenerateConfig
    from pargs_batch.configlib import build

    return build(GenerateConfig, config)
