"""`pargs-batch world compare-rms`: the world's full- and partial-sequence RMs at matched compute.

The world's build trains ``rm_full`` and ``rm_partial`` with this recipe at the rates this tool
chose (``DefaultWorldSpec.rm_lr_*``); run it again to check that choice or to see the spread over
seeds. Both start from the same untrained DeBERTa (``rm_init``) and get:

- the same number of optimiser steps (``steps``), warm-up share and linear decay;
- the same tokens per step: the partial model's batch is the full model's times the ratio of their
  mean example lengths (prefix pairs are shorter), so both see about the same tokens in all;
- each its own learning rate from one grid, chosen on the world's **evaluation** split (disjoint
  prompts from training and from the demo): the mean accuracy over whole replies and the four
  prefix buckets, the quantity PARGS relies on;
- then, at the chosen rate, several seeds, each diagnosed on the held-out pairs with intervals.

Nothing about the world's gold reward is tuned. Results go to ``out/compare.json`` and a table.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

BUCKETS = ("whole", "0-25%", "25-50%", "50-75%", "75-100%")


def accuracies(path: str, template: str, triples) -> dict:
    """Accuracy (and interval) on whole replies and per prefix bucket."""
    from pargs_batch.config import RewardConfig
    from pargs_batch.rewards.factory import make_scorer
    from rm_training.diagnose import diagnose

    result = diagnose(make_scorer(RewardConfig(path=path, template=template, max_length=128, batch_size=512)),
                      triples)
    out = {"whole": {"accuracy": result["pairwise_accuracy"], "interval": result["pairwise_interval"]}}
    out.update({k: {"accuracy": v["accuracy"], "interval": v["interval"]} for k, v in result["prefix_accuracy"].items()})
    return out


def train_one(world: dict, mode: str, lr: float, seed: int, steps: int, batch: int, out: Path) -> dict:
    from experiments.world.default import DefaultWorldSpec, matched_rm_config
    from pargs_batch.configlib import build
    from rm_training.config import TrainConfig
    from rm_training.train import train

    cfg = matched_rm_config(DefaultWorldSpec(**world["spec"]), mode, world["rm_init"], world["preferences"]["guidance"],
                            world["preferences"]["heldout"], str(out), lr, seed, steps, batch)
    summary = train(build(TrainConfig, cfg))
    return {"steps": summary["steps"], "train_seconds": summary["train_seconds"], "train_pairs": summary["train_pairs"]}


def compare_rms(world_dir: str, out_dir: str, steps: int = 1500, lrs=(1e-3, 3e-3, 1e-2), seeds=(0, 1, 2),
                select_limit: int = 600, base_batch: int = 32, log=None) -> dict:
    from experiments.world.default import TEMPLATE, matched_batches, read_triples
    from pargs_batch.console import console

    log = log or console.say

    start = time.perf_counter()
    world = json.loads((Path(world_dir) / "world.json").read_text())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    selection = read_triples(world["preferences"]["evaluation"], select_limit)
    heldout = read_triples(world["preferences"]["heldout"])
    batches, tokens = matched_batches(world["rm_init"], world["preferences"]["guidance"], base_batch)
    log(f"compare-rms: {steps} steps each; tokens per example full {tokens['full']:.1f}, partial "
        f"{tokens['partial']:.1f} -> batches {batches}")

    grid = {}
    for mode in ("full", "partial"):
        for lr in lrs:
            path = out / f"{mode}-lr{lr:g}-seed{seeds[0]}"
            run = train_one(world, mode, lr, seeds[0], steps, batches[mode], path)
            acc = accuracies(str(path), TEMPLATE, selection)
            score = statistics.fmean(acc[b]["accuracy"] for b in BUCKETS if b in acc)
            grid[f"{mode} {lr:g}"] = {"mode": mode, "lr": lr, "selection_score": score, **run}
            log(f"compare-rms: {mode} lr {lr:g}: evaluation-split mean accuracy {score:.3f}")
    chosen = {mode: max((g for g in grid.values() if g["mode"] == mode), key=lambda g: g["selection_score"])["lr"]
              for mode in ("full", "partial")}

    results = {}
    for mode in ("full", "partial"):
        per_seed = []
        for seed in seeds:
            path = out / f"{mode}-lr{chosen[mode]:g}-seed{seed}"
            if not (path / "training_summary.json").exists():
                train_one(world, mode, chosen[mode], seed, steps, batches[mode], path)
            per_seed.append(accuracies(str(path), TEMPLATE, heldout))
        results[mode] = {
            "lr": chosen[mode], "batch": batches[mode], "tokens_per_step": batches[mode] * tokens[mode],
            "per_seed": per_seed,
            "mean": {b: statistics.fmean(s[b]["accuracy"] for s in per_seed) for b in BUCKETS},
            "range": {b: [min(s[b]["accuracy"] for s in per_seed), max(s[b]["accuracy"] for s in per_seed)]
                      for b in BUCKETS}}
    report = {"steps": steps, "lrs": list(lrs), "seeds": list(seeds), "tokens_per_example": tokens,
              "grid": grid, "results": results, "seconds": round(time.perf_counter() - start, 1)}
    (out / "compare.json").write_text(json.dumps(report, indent=2))
    return report


def table(report: dict) -> str:
    r = report["results"]
    lines = [f"held-out accuracy at matched compute ({report['steps']} steps, ~"
             f"{r['full']['tokens_per_step']:.0f} / {r['partial']['tokens_per_step']:.0f} tokens a step; "
             f"mean over seeds {report['seeds']} [min, max]; lr full {r['full']['lr']:g}, partial {r['partial']['lr']:g})",
             f"  {'responses':<16}{'full':>24}{'partial':>24}"]
    for b in BUCKETS:
        cells = [f"{r[m]['mean'][b]:.3f} [{r[m]['range'][b][0]:.3f}, {r[m]['range'][b][1]:.3f}]" for m in ("full", "partial")]
        lines.append(f"  {b:<16}{cells[0]:>24}{cells[1]:>24}")
    return "\n".join(lines)
