"""`pargs-batch bench` (= `make bench`): how fast guided decoding runs, against what bounds it.

For each model set - the default world's (LLM + DeBERTa partial RM + causal GPT-2 RM), a
"paper ratio" pair with random weights (LLM about 20x the reward model's parameters, as
Llama-2-7B to DeBERTa-v3-large) and SmolLM2-135M-Instruct (a real 49,152-token vocabulary, with a
random reward head over its tokenizer) - and each batch size B, with k = 10 and a fixed number of new
tokens (EOS ignored, so every configuration makes the same tokens), it times:

- ``plain``: one vLLM call sampling the same tokens without guidance (the ceiling);
- ``pargs`` in ``stepped`` mode with the ``hf`` and ``causal`` reward backends and in ``fused``
  mode (``hf``), through the same ``run_generate`` path `pargs-batch generate` uses;
- ``reference``: the published code's structure - one prompt at a time, the LLM through
  transformers with its KV cache, one reward-model forward per candidate on the whole text.

Each row reports tokens/s, its ratio to ``plain`` and to ``reference``, the step split
(engine / reward / decode-and-glue) and the Section 5.3 FLOP bound per token
(C_forward + k * C_RM, C = 2N + 2 n_layers n_ctx d_model) at the machine's measured matmul rate.
A correctness guard reruns the timed ``pargs`` configurations through a config loaded like the
CLI's, at another micro-batch size, and requires identical rows. The reward-vs-prefix curve
times one reward step of each backend at growing prefix lengths, and the step-cost table one step
of the hf, causal and autoregressive backends at k = 2, 10 and the whole vocabulary.
"""

from __future__ import annotations

import json
from pathlib import Path

from experiments.bench.curve import plot_reward_vs_prefix, reward_vs_prefix
from experiments.bench.flops import K, machine_flops
from experiments.bench.models import ModelSet, curve_model, paper_ratio_set, smollm2_set, world_set
from experiments.bench.report import format_startup, format_table, fused_targets, targets
from experiments.bench.runs import generate_config, run_model_set, write_prompts
from experiments.bench.smc_cache import format_smc_cache, smc_prefix_cache
from experiments.bench.startup import measure_startup
from experiments.bench.step_cost import flat_in_k, format_step_costs, reward_step_costs
from pargs_batch.console import console


def run_bench(out_dir: str = "outputs/bench", world_dir: str = "outputs/world", batch_sizes=(1, 64, 256),
              tokens: int = 64, reference_prompts: int = 2, prefix_lengths=(32, 64, 128, 256, 512),
              reduced_world: bool = False, model_sets=("world", "paper-ratio", "smollm2"), repeats: int = 3,
              startup_modes=("fused", "stepped")) -> dict:
    from experiments.world.default import ensure_world

    out = Path(out_dir)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    world = ensure_world(world_dir, reduced_world)
    flops = machine_flops()
    console.show(f"machine: {flops / 1e9:.1f} GFLOP/s sustained float32 matmul (the FLOP bound's rate)")
    chosen = {"world": lambda: world_set(world), "paper-ratio": lambda: paper_ratio_set(out / "paper-ratio", world),
              "smollm2": lambda: smollm2_set(out / "smollm2")}
    rows, shapes, guards, sets = [], {}, {}, {}
    for name in model_sets:
        ms = sets[name] = chosen[name]()
        console.show(f"models {ms.name}: {ms.note}")
        set_rows, shapes[ms.name], guards[ms.name] = run_model_set(ms, world, out, list(batch_sizes), tokens,
                                                                   reference_prompts, flops, repeats)
        rows += set_rows
    # start-up of a one-prompt, one-token run on the world's models (LLM and partial RM), each mode
    prompts = write_prompts(world, out / "prompts-startup.jsonl", 1)
    startup = {mode: measure_startup(startup_config(world, prompts, out / "runs" / f"startup-{mode}", mode), repeats)
               for mode in startup_modes}
    if "smollm2" in sets:  # the same run on SmolLM2 as `generate` starts it: the library's defaults
        startup.update({f"smollm2 {mode}": measure_startup(defaults_startup_config(
            sets["smollm2"], prompts, out / "runs" / f"startup-smollm2-{mode}", mode), repeats) for mode in startup_modes})
    first = sets[model_sets[0]]
    smc_cache = {"model_set": first.name, **smc_prefix_cache(first, write_prompts(world, out / "prompts-smc.jsonl", 64),
                                                              out, min(64, max(batch_sizes)))}
    curve = reward_vs_prefix(curve_model(out / "curve-rm", world), list(prefix_lengths))
    plot_reward_vs_prefix(curve, out / "reward_vs_prefix.png")
    step_costs = reward_step_costs(world, max(batch_sizes))
    other_step_costs = {name: reward_step_costs(world, max(batch_sizes), backends={
        "hf": ms.rm_hf, "causal": ms.rm_causal, "autoregressive": ms.rm_autoregressive})
        for name, ms in sets.items() if ms.rm_autoregressive}
    goals = targets(rows, curve, max(batch_sizes)) + fused_targets(rows, list(batch_sizes)) + [flat_in_k(step_costs)]
    console.show("\n" + format_table(rows))
    console.show(f"\nstart-up, seconds (median and range over {repeats} fresh processes; one prompt, one token; "
                 "world models eager, smollm2 with the library's defaults):\n" + format_startup(startup))
    console.show("\n" + format_smc_cache(smc_cache))
    console.show(f"\nreward step of {curve['model']} (d_model {curve['shape']['d_model']}), B={curve['b']}, k={K}, "
                 f"ms by prefix length:\n  {'prefix':<8}" + "".join(f"{x:>9}" for x in curve["hf"]))
    for backend in ("hf", "causal"):
        console.show(f"  {backend:<8}" + "".join(f"{1000 * curve[backend][x]:>9.1f}" for x in curve[backend]))
    console.show("\n" + format_step_costs(step_costs))
    for name, costs in other_step_costs.items():
        console.show(f"{name}: " + format_step_costs(costs))
    console.show("\ntargets:")
    for g in goals:
        console.show(f"  [{'met' if g['met'] else 'NOT met'}] {g['target']}: {g['measured']:.3g}"
                     + (f" ({g['config']})" if "config" in g else ""))
    result = {"k": K, "new_tokens": tokens, "batch_sizes": list(batch_sizes), "machine_flops": flops,
              "repeats": repeats, "startup": startup, "models": shapes, "rows": rows, "reward_vs_prefix": curve, "reward_step_by_k": step_costs,
              "reward_step_by_k_by_models": other_step_costs, "smc_prefix_cache": smc_cache, "targets": goals, "guard": guards}
    (out / "bench.json").write_text(json.dumps(result, indent=2, default=str))
    console.show(f"\nwritten: {out / 'bench.json'}, {out / 'reward_vs_prefix.png'}")
    return result


def startup_config(world: dict, prompts: str, out: Path, mode: str) -> dict:
    """A one-prompt, one-token run on the world's models, eager in both modes (the timed rows compile;
    a start that compiles adds 11-25 s on CPU)."""
    config = generate_config(world_set(world), prompts, out, 1, mode, "hf", 1)
    config["model"]["enforce_eager"] = True
    return config


def defaults_startup_config(models: ModelSet, prompts: str, out: Path, mode: str) -> dict:
    """A one-prompt, one-token run on ``models`` with the library's defaults for the LLM (its
    checkpoint's dtype; a stepped engine compiled - once per machine, its later starts served from
    the compile cache - a fused one eager), as `pargs-batch generate` starts it."""
    config = generate_config(models, prompts, out, 1, mode, "hf", 1)
    config["model"] = {"path": models.llm}
    return config
