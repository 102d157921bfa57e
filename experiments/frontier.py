"""`pargs-batch frontier`: which decoding method buys the most reward per unit of compute.

On the default world's held-out prompts, every method runs over a grid of budgets (Best-of-N's N,
PARGS's k, blockwise's block size and K, early rejection's N) with one engine and one scorer per
reward model - ``pargs-batch compare`` (``pargs_batch.comparison.run.compare_runs``) applied to the world -
and one evaluation job scores every run with the gold reward and the evaluation RM and sums each
run's cost columns. Each point is placed at the reward-model FLOPs and the wall seconds it
spent per prompt; the report gives, per method, the least compute at which its mean gold reward
reaches Best-of-16's, with the paired gold difference to Best-of-16 over the same prompts.

Reward-model FLOPs are 2 N per token read (N: non-embedding parameters, 12 n_layers d_model^2,
as in Section 5.3 and Kaplan et al.; plus d_model x vocab for the autoregressive RM, whose reward
is a log-softmax over the vocabulary), times the run's ``reward_tokens`` (the autoregressive RM
reads one token a step whatever k); wall seconds are the sum
of the rows' ``wall_s`` (one micro-batch in flight, so their sum is the generation time).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from pargs_batch.console import console

REFERENCE = "best-of-n N=16"


@dataclass(frozen=True)
class Point:
    """One run of the grid: a method at one budget."""

    method: str                 # the curve it belongs to (what the plot's legend says)
    budget: str                 # the budget, as the table prints it
    decode: dict = field(default_factory=dict)  # decode.* of this run
    reward_model: str | None = "rm_partial"     # world.json key of its guidance RM
    backend: str = "hf"                         # reward.backend
    mode: str = "stepped"                       # engine.mode

    @property
    def label(self) -> str:
        return f"{self.method} {self.budget}"


def grid(beta: float, max_new_tokens: int = 48) -> list[Point]:
    """The budgets each method runs at (N, k, block size and K, beta; ordered by compute within a method)."""
    points = [Point("topk", "k=10", {"method": "topk", "top_k": 10}, None)]
    points += [Point("best-of-n", f"N={n}", {"method": "best-of-n", "n_candidates": n}, "rm_full")
               for n in (1, 2, 4, 8, 16, 32, 64)]
    points += [Point("pargs", f"k={k}", {"method": "pargs", "top_k": k, "beta": beta}) for k in (2, 3, 4, 6, 10)]
    # beta buys no compute: at k = 2 it moves gold up or down at the same cost
    points += [Point("pargs k=2, other β", f"β={b:g}", {"method": "pargs", "top_k": 2, "beta": b})
               for b in (beta / 2, beta * 2)]
    # the autoregressive RM (one forward a step gives every token's reward): fused, so that k = 0, the
    # whole vocabulary, runs too (inside vLLM's logits), and its curve is one mode
    points += [Point("pargs-ar (fused)", "whole vocab" if k == 0 else f"k={k}",
                     {"method": "pargs", "top_k": k, "beta": beta}, "rm_autoregressive", "autoregressive", "fused")
               for k in (2, 10, 0)]
    points += [Point("blockwise", f"m={m} K={k}", {"method": "blockwise", "block_tokens": m, "n_candidates": k,
                                                     "beta": beta})
               for m, k in ((16, 2), (16, 4), (8, 4), (8, 8), (4, 8), (8, 16))]
    points += [Point("early-rejection", f"N={n}", {"method": "early-rejection", "n_candidates": n,
                                                   "block_tokens": 8, "reject_fraction": 0.5})
               for n in (4, 8, 16, 32, 64)]
    # the same N in whole requests (one block, so nothing is rejected before the end): what block-sized
    # requests cost in wall time against vLLM generating each candidate in one go
    points.append(Point("early-rejection, one block", f"N=16 m={max_new_tokens}",
                        {"method": "early-rejection", "n_candidates": 16, "block_tokens": max_new_tokens}))
    return points + smc_points(beta)


SMC_RMS = (("rm_partial", "hf"), ("rm_partial_causal", "causal"), ("rm_autoregressive", "autoregressive"))


def smc_points(beta: float) -> list[Point]:
    """SMC at N in {4, 16, 64} particles, blocks of m in {1, 8} tokens, both proposals, with each of the
    world's three guidance reward models (the partial DeBERTa, the partial causal one keeping KV state,
    the autoregressive one); resampled when the ESS falls below N/2, the response drawn by final weight.
    One curve per (proposal, reward model), ordered by N then m within it."""
    return [Point(f"smc-{proposal} ({backend})", f"N={n} m={m}",
                  {"method": "smc", "n_particles": n, "block_tokens": m, "smc_proposal": proposal, "beta": beta},
                  rm, backend)
            for rm, backend in SMC_RMS for proposal in ("ref", "guided") for n in (4, 16, 64) for m in (8, 1)]


def point_config(world: dict, point: Point, out: Path, num_prompts: int, max_new_tokens: int) -> dict:
    """The generate config of one point, as a plain dict (what a YAML file would hold)."""
    return {
        "model": {"path": world["llm"], "dtype": "float32", "max_model_len": 256, "kv_cache_memory_bytes": 256 << 20},
        "reward": {"path": world[point.reward_model] if point.reward_model else "", "template": world["template"],
                   "batch_size": 512, "max_length": 128},
        "decode": {"beta": 2.0, "top_k": 10, "max_new_tokens": max_new_tokens, "num_samples": 1, "seed": 0,
                   "micro_batch_size": 128, **point.decode},
        "data": {"source": world["prompts"], "id_column": "id", "limit": num_prompts},
        "output": {"path": str(out / "runs" / point.label.replace(" ", "_").replace("=", "")), "overwrite": True},
        "ray": {"enabled": False},  # one process: every run shares the engine
    }


def rm_flops_per_token(path: str) -> float:
    """2 N: the forward FLOPs of one token through the reward model (N non-embedding parameters,
    and an autoregressive RM's output projection, which its reward needs)."""
    from experiments.bench.flops import flop_params
    from pargs_batch.rewards.factory import trained_backend

    return 2.0 * flop_params(path, trained_backend(path) == "autoregressive")


def frontier_runs(world: dict, points: list[Point], seeds: int) -> list:
    """Each point as ``compare`` runs: once per seed of its reward model (``label seed=i``) when
    there are several, once without one."""
    from experiments.world.default import reward_seed_paths
    from pargs_batch.comparison.config import Run

    runs = []
    for p in points:
        paths = reward_seed_paths(world, p.reward_model, seeds)
        for i, path in enumerate(paths):
            overrides = {"decode": p.decode, "reward": {"path": path, "backend": p.backend},
                         "engine": {"mode": p.mode}}
            runs.append(Run(f"{p.label} seed={i}", p.method, p.budget, overrides, i, p.label) if len(paths) > 1
                        else Run(p.label, p.method, p.budget, overrides))
    return runs


def run_frontier(out_dir: str = "outputs/frontier", world_dir: str = "outputs/world", num_prompts: int = 256,
                 max_new_tokens: int = 48, beta: float = 2.0, reduced_world: bool = False,
                 points: list[Point] | None = None, rm_seeds: int | None = None, curves: list[str] | None = None) -> dict:
    """``curves``: run only the points whose curve (the table's method column) starts with one of these
    (``best-of-n`` is always run: it is the reference)."""
    from pargs_batch.comparison.run import compare_runs
    from pargs_batch.comparison.tables import seed_rows
    from pargs_batch.config import GenerateConfig
    from pargs_batch.configlib import build

    from experiments.world.default import DefaultWorldSpec, check_seed_count, ensure_world

    start = time.perf_counter()
    spec = DefaultWorldSpec.reduced() if reduced_world else DefaultWorldSpec()
    check_seed_count(spec, rm_seeds)  # before the world is built
    world = ensure_world(world_dir, reduced_world)
    world_s = time.perf_counter() - start
    seeds = rm_seeds or len(world["rm_seeds"]["rm_full"])
    out = Path(out_dir)
    points = points or grid(beta, max_new_tokens)
    if curves:
        points = [p for p in points if p.method == "best-of-n" or any(p.method.startswith(c) for c in curves)]
    # every run is the base config with its own decode keys and RM (as each point's config alone was)
    base = build(GenerateConfig, point_config(world, Point("", "", {"method": "topk"}, None), out, num_prompts, max_new_tokens))
    runs = frontier_runs(world, points, seeds)
    console.say(f"frontier: pargs-batch compare on the world: {len(points)} points, each with a reward model once per "
                f"seed ({seeds}): {len(runs)} runs of {num_prompts} prompts (one vLLM engine for all; it takes about a "
                "minute to start), then one evaluation (gold reward, evaluation RM, cost sums)")
    reference = REFERENCE if REFERENCE in {p.label for p in points} else None
    evaluation = {
        "gold_reward": world["gold_reward"],
        "reward": {"path": world["rm_eval"], "template": world["template"], "batch_size": 512, "max_length": 128}}
    done = compare_runs(base, runs, evaluation, out, reference=reference, overwrite=True)
    report, generate_s = done["report"], done["generate_seconds"]
    over = {metric: {r["group"]: r for r in seed_rows(runs, out / "report", reference, metric)}
            for metric in ("gold", "reward")}
    flops = {key: rm_flops_per_token(world[key]) for key in {p.reward_model for p in points if p.reward_model}}
    rows = frontier_rows(points, runs, report, over, flops)
    result = {"num_prompts": num_prompts, "max_new_tokens": max_new_tokens, "beta": beta, "rm_seeds": seeds,
              "reference": REFERENCE, "rows": rows, "reach": reach(rows),
              "rm_flops_per_token": flops, "world_fingerprint": world.get("fingerprint"),
              "generate_seconds": round(generate_s, 1)}
    result["plots"] = plot(rows, out)
    result["seconds"] = round(time.perf_counter() - start, 1)
    result["world_seconds"] = round(world_s, 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "frontier.json").write_text(json.dumps(result, indent=2))
    text = format_tables(result)
    (out / "frontier.md").write_text("# Reward per unit of compute\n\n```\n" + text + "\n```\n\n" +
                                     "\n".join(f"![{p}](plots/{p})" for p in result["plots"]) + "\n")
    console.show("\n" + text)
    console.show(f"\nfrontier done in {result['seconds']} s ({result['world_seconds']} s for the world, "
                 f"{result['generate_seconds']} s generating); tables, plots and runs in {out}/")
    return result


def frontier_rows(points: list[Point], runs: list, report: dict, over: dict, flops: dict[str, float]) -> list[dict]:
    """Per point: gold and eval-RM reward over its seeds and the prompts (mean, SE, 95 % interval;
    ``over``: metric -> point -> ``seed_rows`` row), compute per prompt (the mean over its seeds'
    runs), and the gold difference to the reference paired on seed and prompt."""
    rows = []
    for p in points:
        members = [report["runs"][r.label] for r in runs if r.group == p.label]
        prompts = [max(r["rows"] / r["samples_per_prompt"], 1) for r in members]  # error rows spent compute too

        def per_prompt(*keys: str) -> float:
            return sum(sum(r["cost"][k] for k in keys) / n for r, n in zip(members, prompts)) / len(members)

        mine = over["gold"][p.label]
        diff = mine["reference_minus_this"]
        rows.append({
            "label": p.label, "method": p.method, "budget": p.budget, "decode": p.decode, "seeds": len(members),
            "gold": mine["gold"], "eval_rm": over["reward"][p.label]["reward"],
            "error_rows": sum(r["error_rows"] for r in members),
            "mean_tokens": sum(r["mean_tokens"] or 0 for r in members) / len(members),
            "rm_flops_per_prompt": per_prompt("reward_tokens") * flops.get(p.reward_model, 0.0),
            "reward_tokens_per_prompt": per_prompt("reward_tokens"),
            "reward_calls_per_prompt": per_prompt("reward_calls"),
            "llm_tokens_per_prompt": per_prompt("llm_prefill_tokens", "llm_decode_tokens"),
            "wall_s_per_prompt": per_prompt("wall_s"),
            # this point minus the reference: the negative of the reference minus it
            "gold_vs_reference": None if not diff or diff.get("mean") is None else {
                "diff": -diff["mean"], "se": diff["se"], "seeds": diff["seeds"], "prompts": diff["prompts"],
                "interval": None if diff["interval"] is None else [-diff["interval"][1], -diff["interval"][0]],
                "seed_diffs": [-d for d in diff["seed_diffs"]], "changes_sign": diff["changes_sign"]},
        })
    return rows


def reach(rows: list[dict]) -> list[dict]:
    """Per method: the first budget (in compute order) whose mean gold reaches the reference's."""
    ref = next((r for r in rows if r["label"] == REFERENCE), None)
    if ref is None:
        return []
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["rm_flops_per_prompt"])
        hit = next((r for r in mine if r["gold"]["mean"] >= ref["gold"]["mean"]), None)
        best = max(mine, key=lambda r: r["gold"]["mean"])
        out.append({"method": method, "reached": hit is not None, "budget": hit["budget"] if hit else None,
                    "rm_flops_per_prompt": hit["rm_flops_per_prompt"] if hit else None,
                    "wall_s_per_prompt": hit["wall_s_per_prompt"] if hit else None,
                    "gold_vs_reference": hit["gold_vs_reference"] if hit else None,
                    "best_budget": best["budget"], "best_gold": best["gold"]})
    return out


def _flops(x: float | None) -> str:
    return "—" if x is None else f"{x:.2e}"


def format_tables(result: dict) -> str:
    rows, ref = result["rows"], result["reference"]
    w = max(len(r["label"]) for r in rows) + 2
    lines = [f"{'run':<{w}}{'gold ± SE':>17}{'eval-RM ± SE':>17}{'RM FLOPs/prompt':>17}{'RM calls':>10}"
             f"{'tokens':>8}{'LLM tok':>9}{'wall s':>8}{'gold − BoN-16 [95% CI]':>26}"]
    for r in rows:
        d = r["gold_vs_reference"]
        diff = f"{d['diff']:+.3f} [{d['interval'][0]:+.3f}, {d['interval'][1]:+.3f}]" if d and d.get("interval") else "—"
        lines.append(f"{r['label']:<{w}}{r['gold']['mean']:>9.3f} ± {r['gold']['se']:.3f}"
                     f"{r['eval_rm']['mean']:>9.3f} ± {r['eval_rm']['se']:.3f}{_flops(r['rm_flops_per_prompt']):>17}"
                     f"{r['reward_calls_per_prompt']:>10.0f}{r['mean_tokens'] or 0:>8.1f}{r['llm_tokens_per_prompt']:>9.0f}"
                     f"{r['wall_s_per_prompt']:>8.3f}{diff:>26}")
    seeds = result.get("rm_seeds", 1)
    spread = (f"over {seeds} reward-model seeds and the prompts (crossed random effects), a point's costs the mean over "
              "its seeds' runs, its difference to BoN-16 paired on seed and prompt" if seeds > 1 else "over prompts")
    lines.append(f"(per prompt: {result['num_prompts']} held-out prompts, 1 response each, ≤ {result['max_new_tokens']} "
                 f"tokens; ± is the SE {spread}; RM FLOPs = 2 N_RM x tokens the guidance RM read; tokens = mean response length; LLM tok = prompt "
                 "tokens computed + tokens generated; wall s = the rows' shares of their micro-batches)")
    lines += ["", f"First budget at which each method's mean gold reaches {ref}'s "
                  f"({next(r for r in rows if r['label'] == ref)['gold']['mean']:.3f}):",
              f"{'method':<{w - 12}}{'budget':>12}{'RM FLOPs/prompt':>17}{'wall s/prompt':>15}{'gold − BoN-16 [95% CI]':>26}"
              f"{'   best (gold)':>22}"]
    for m in result["reach"]:
        d = m["gold_vs_reference"]
        diff = f"{d['diff']:+.3f} [{d['interval'][0]:+.3f}, {d['interval'][1]:+.3f}]" if d and d.get("interval") else "—"
        wall = "—" if m["wall_s_per_prompt"] is None else f"{m['wall_s_per_prompt']:.3f}"
        best = f"{m['best_budget']} ({m['best_gold']['mean']:.3f})"
        lines.append(f"{m['method']:<{w - 12}}{m['budget'] or 'not reached':>12}{_flops(m['rm_flops_per_prompt']):>17}"
                     f"{wall:>15}{diff:>26}{best:>22}")
    return "\n".join(lines)


def plot(rows: list[dict], out: Path) -> list[str]:
    """Mean gold (± SE over prompts) against RM FLOPs and against wall seconds per prompt, one curve
    a method, Best-of-16 as the reference line (compare's plot with the frontier's axes)."""
    from pargs_batch.comparison.tables import plot as compare_plot

    return compare_plot(rows, out, REFERENCE, axes=(
        ("rm_flops_per_prompt", "reward-model FLOPs per prompt", "gold_vs_rm_flops.png"),
        ("wall_s_per_prompt", "wall seconds per prompt (this CPU)", "gold_vs_wall_s.png")))
