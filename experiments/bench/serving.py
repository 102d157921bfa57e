"""`pargs-batch bench --serve` (part of `make bench`): what `pargs-batch serve` sustains.

One server of the world's models (LLM + partial RM, fused, compiled as the batch rows are; k = 10)
is started as a user starts it, and closed-loop clients (the ``openai`` client, each sending its
next request when the last returns) ask it for completions of a fixed length (EOS ignored) at each
concurrency: ``guided`` requests (``method: pargs``) and ``plain`` ones (``guidance: false``: vLLM's
own sampling in the same engine, the processor idle). Rounds interleave the two; each row is the
median over rounds of requests/s, tokens/s and the p50/p99 request latency, with the tokens/s range.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np

from experiments.bench.models import world_set
from experiments.bench.runs import generate_config, write_prompts
from pargs_batch.console import console

MODES = ("guided", "plain")


def serve_config(world: dict, prompts: str, out: Path, tokens: int) -> dict:
    config = generate_config(world_set(world), prompts, out, 64, "fused", "hf", tokens)
    config["model"]["log_stats"] = True
    return config


async def _load(base: str, model: str, prompts: list[str], clients: int, requests: int, tokens: int,
                mode: str) -> dict:
    """``requests`` completions by ``clients`` closed-loop clients: wall time, latencies, tokens."""
    import openai

    c = openai.AsyncOpenAI(base_url=base, api_key="none", max_retries=0, timeout=600)
    queue = list(range(requests))
    latencies, made = [], []

    async def client():
        while queue:
            i = queue.pop()
            extra = {"method": "pargs", "id": f"r{i}"} if mode == "guided" else {"guidance": False}
            t0 = time.perf_counter()
            r = await c.completions.create(model=model, prompt=prompts[i % len(prompts)], max_tokens=tokens,
                                           extra_body={**extra, "ignore_eos": True})
            latencies.append(time.perf_counter() - t0)
            made.append(r.usage.completion_tokens)

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - t0
    await c.close()
    return {"wall_s": wall, "requests_per_s": requests / wall, "tokens": sum(made), "tokens_per_s": sum(made) / wall,
            "p50_s": float(np.percentile(latencies, 50)), "p99_s": float(np.percentile(latencies, 99))}


def _metrics(base: str) -> dict[str, float]:
    import urllib.request

    text = urllib.request.urlopen(base.removesuffix("/v1") + "/metrics", timeout=30).read().decode()
    found = {}
    for line in text.splitlines():
        if line.startswith("pargs_guidance_"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


def run_serving(out_dir: str = "outputs/bench", world_dir: str = "outputs/world", reduced_world: bool = False,
                concurrency=(1, 16, 64), tokens: int = 64, min_requests: int = 8, repeats: int = 3) -> dict:
    from experiments.world.default import ensure_world
    from pargs_batch.serving.replicas import ChildServer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    world = ensure_world(world_dir, reduced_world)
    prompts_path = write_prompts(world, out / "prompts-serve.jsonl", 256)
    prompts = [json.loads(line)["prompt"] for line in Path(prompts_path).read_text().splitlines()]
    config = serve_config(world, prompts_path, out / "runs" / "serve", tokens)
    console.show(f"serving: starting pargs-batch serve on {world['llm']} + {world['rm_partial']} (fused, compiled)")
    t0 = time.perf_counter()
    server = ChildServer(config, directory=out / "serve")
    try:
        base = server.wait_ready()
        started = time.perf_counter() - t0
        model = config["model"]["path"]
        for mode in MODES:  # warm-up: the first requests of each kind pay one-off costs
            asyncio.run(_load(base, model, prompts, 2, 2, tokens, mode))
        runs = {(mode, c): [] for c in concurrency for mode in MODES}
        guidance = []
        for r in range(repeats):
            for c in concurrency:
                for mode in MODES:
                    console.say(f"serving: round {r + 1}/{repeats}, {c} clients, {mode}")
                    before = _metrics(base)
                    runs[(mode, c)].append(asyncio.run(_load(base, model, prompts, c, max(min_requests, 2 * c),
                                                             tokens, mode)))
                    if mode == "guided":
                        after = _metrics(base)
                        steps = after["pargs_guidance_steps_total"] - before["pargs_guidance_steps_total"]
                        reward = after["pargs_guidance_reward_seconds_total"] - before["pargs_guidance_reward_seconds_total"]
                        guidance.append({"clients": c, "steps": steps, "reward_s_per_step": reward / max(steps, 1)})
    finally:
        server.stop()
    rows = [_row(mode, c, runs[(mode, c)]) for c in concurrency for mode in MODES]
    for c in concurrency:
        guided, plain = (next(x for x in rows if x["mode"] == m and x["clients"] == c) for m in MODES)
        guided["vs_plain"] = guided["tokens_per_s"] / plain["tokens_per_s"]
    result = {"tokens": tokens, "k": config["decode"]["top_k"], "repeats": repeats, "server_start_s": started,
              "models": {"llm": world["llm"], "reward": world["rm_partial"]}, "rows": rows, "guidance": guidance}
    console.show("\n" + format_serving(result))
    (out / "bench_serve.json").write_text(json.dumps(result, indent=2))
    plot_serving(result, out / "serving.png")
    console.show(f"\nwritten: {out / 'bench_serve.json'}, {out / 'serving.png'}")
    return result


def _row(mode: str, clients: int, runs: list[dict]) -> dict:
    median = {k: float(np.median([r[k] for r in runs])) for k in runs[0]}
    tps = [r["tokens_per_s"] for r in runs]
    return {"mode": mode, "clients": clients, **median, "tokens_per_s_min": min(tps), "tokens_per_s_max": max(tps),
            "runs": runs}


def format_serving(result: dict) -> str:
    lines = [f"serving: {result['tokens']} tokens a request (EOS ignored), k={result['k']}, closed-loop clients, "
             f"median of {result['repeats']} rounds; server start {result['server_start_s']:.0f} s",
             f"  {'mode':<7}{'clients':>8}{'req/s':>8}{'tok/s':>9}{'tok/s range':>16}{'p50 s':>8}{'p99 s':>8}"
             f"{'×plain':>8}"]
    for r in result["rows"]:
        ratio = f"{r['vs_plain']:.2f}" if "vs_plain" in r else "-"
        lines.append(f"  {r['mode']:<7}{r['clients']:>8}{r['requests_per_s']:>8.2f}{r['tokens_per_s']:>9.0f}"
                     f"{r['tokens_per_s_min']:>8.0f}-{r['tokens_per_s_max']:<7.0f}{r['p50_s']:>8.2f}{r['p99_s']:>8.2f}"
                     f"{ratio:>8}")
    return "\n".join(lines)


def plot_serving(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    for mode, colour in zip(MODES, ("tab:red", "tab:grey")):
        rows = [r for r in result["rows"] if r["mode"] == mode]
        x = [r["clients"] for r in rows]
        left.plot(x, [r["tokens_per_s"] for r in rows], "o-", color=colour, label=mode)
        left.fill_between(x, [r["tokens_per_s_min"] for r in rows], [r["tokens_per_s_max"] for r in rows],
                          color=colour, alpha=0.2)
        right.plot(x, [r["p50_s"] for r in rows], "o-", color=colour, label=f"{mode} p50")
        right.plot(x, [r["p99_s"] for r in rows], "o--", color=colour, label=f"{mode} p99")
    for ax, label in ((left, "tokens/s"), (right, "request latency, s")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    fig.suptitle(f"pargs-batch serve: {result['tokens']} tokens a request, k={result['k']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
