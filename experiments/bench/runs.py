"""Timed runs of one model set: plain sampling, stepped and fused guidance, the reference loop,
and the correctness guard. Every guided row goes through ``run_generate`` with models from
``pargs_batch.models.Models``, the path `pargs-batch generate` takes."""

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
        "model": {"path": models.llm, "dtype": "float32", "kv_cache_memory_bytes": 256 << 20},
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
    from pargs_batch.generate import run_generate
    from pargs_batch.output import read_output

    cfg = build(GenerateConfig, config)
    summary = run_generate(cfg, models=models.for_config(cfg), progress=False)
    rows = read_output(cfg.output.path).to_pylist()
    return {"tokens": summary["tokens"], "seconds": summary["wall_s"], "tokens_per_s": summary["tokens_per_s"],
            "split": phase_shares(summary["phase_s"])}, rows


def check_guard(runs: dict, models) -> dict:
    """Rerun each timed configuration from a YAML config, as `pargs-batch generate --config` loads it,
    at another micro-batch size: the rows must be identical."""
    import tempfile

    import yaml

    from pargs_batch.config import GenerateConfig
    from pargs_batch.configlib import load_config
    from pargs_batch.generate import run_generate
    from pargs_batch.output import read_output

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


def run_model_set(ms: ModelSet, world: dict, out: Path, batch_sizes: list[int], tokens: int, reference_prompts: int,
                  flops: float, log=None) -> tuple[list[dict], dict, dict]:
    """Every row of one model set, its shapes, and its correctness guard."""
    from pargs_batch.console import console
    from pargs_batch.models import Models

    log = log or console.say

    from experiments.bench.reference import reference_loop

    prompts_file = write_prompts(world, out / f"prompts-{ms.name}.jsonl", max(batch_sizes))
    prompt_texts = [json.loads(line)["prompt"] for line in Path(prompts_file).read_text().splitlines()]
    llm, rm_hf, rm_causal = count_params(ms.llm), count_params(ms.rm_hf), count_params(ms.rm_causal)
    shapes = {"hf": rm_hf, "causal": rm_causal}
    n_ctx = float(np.mean([len(p.split()) for p in prompt_texts])) + tokens / 2
    rows, guard = [], {}

    def config(b, mode, backend, name, n_tokens=tokens):
        return generate_config(ms, prompts_file, out / "runs" / name, b, mode, backend, n_tokens)

    def add(method, mode, backend, b, result, rm):
        bound = flop_bound(llm, rm, n_ctx, K if rm else 0, flops) if method != "plain" else \
            flop_bound(llm, llm, n_ctx, 0, flops)
        rows.append({"model_set": ms.name, "method": method, "mode": mode, "backend": backend, "B": b, **result,
                     "bound_s_per_token": bound, "measured_over_bound": (1 / result["tokens_per_s"]) / bound})
        log(f"  {ms.name:<12}{method:<10}{mode:<9}{backend:<8}B={b:<4} {result['tokens_per_s']:>9.0f} tok/s")

    with Models() as models:  # one engine and one scorer per backend for every stepped row
        for backend in ("hf", "causal"):  # warm-up: first calls at new shapes compile and allocate
            time_generate(config(batch_sizes[0], "stepped", backend, "warm-up", 4), models)
        timed = {}
        for b in batch_sizes:
            engine, tokenizer, _ = models.for_config(_build(config(b, "stepped", "hf", "plain")))
            add("plain", "-", "-", b, time_plain(engine, tokenizer, prompt_texts[:b], tokens), None)
            for backend in ("hf", "causal"):
                cfg = config(b, "stepped", backend, f"{ms.name}-stepped-{backend}-{b}")
                result, out_rows = time_generate(cfg, models)
                timed[("stepped", backend, b)] = (cfg, out_rows)
                add("pargs", "stepped", backend, b, result, shapes[backend])
        guard.update(check_guard(timed, models))
    for backend in ("hf", "causal"):
        with Models() as models:  # the fused engine of this backend, its reward model inside
            timed = {}
            for b in batch_sizes:
                cfg = config(b, "fused", backend, f"{ms.name}-fused-{backend}-{b}")
                if b == batch_sizes[0]:
                    time_generate(cfg, models)  # warm-up: the first guided steps compile
                result, out_rows = time_generate(cfg, models)
                timed[("fused", backend, b)] = (cfg, out_rows)
                add("pargs", "fused", backend, b, result, shapes[backend])
            guard.update(check_guard(timed, models))
    # the reference runs each reward model the pargs rows use, so every ratio is on the same models
    refs = {}
    for backend, path in (("hf", ms.rm_hf), ("causal", ms.rm_causal)):
        refs[backend] = reference_loop(ms.llm, path, prompt_texts[:reference_prompts], tokens)
        add("reference", "loop", backend, 1, refs[backend], shapes[backend])
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
