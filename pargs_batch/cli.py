"""`pargs-batch generate | evaluate | demo | diagnose-rm | world build`: the command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path


def _generate(args) -> int:
    from pargs_batch.config import GenerateConfig, load_config
    from pargs_batch.generate import run_generate

    overrides = args.overrides + (["output.overwrite=true"] if args.overwrite else [])
    config = load_config(GenerateConfig, args.config, overrides)
    summary = run_generate(config, progress=not args.no_progress)
    print("summary: " + json.dumps(summary))
    return 0


def _evaluate(args) -> int:
    from pargs_batch.config import load_config
    from pargs_batch.evaluation.config import EvalConfig
    from pargs_batch.evaluation.judge import JudgeError
    from pargs_batch.evaluation.run import run_evaluate

    config = load_config(EvalConfig, args.config, args.overrides)
    try:
        report = run_evaluate(config, progress=not args.no_progress)
    except JudgeError as e:
        print(f"judge error: {e} (answers already received are kept in the cache)", file=sys.stderr)
        return 1
    print((Path(config.output_dir) / "report.md").read_text())
    judged = report["judge"]["pairs"] if report["judge"] else []
    print("summary: " + json.dumps({"runs": len(report["runs"]), "judge_requests": sum(p["requests"] for p in judged),
                                    "output": config.output_dir}))
    return 0


def _diagnose_rm(args) -> int:
    from pargs_batch.config import RewardConfig
    from pargs_batch.reward import HFRewardScorer
    from rm_training import data as prefs
    from rm_training.diagnose import diagnose, plot, table

    rows, _ = prefs.read_rows(args.pairs)
    columns = {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"}
    triples, report = prefs.to_triples(rows, args.format, columns, args.limit)
    results = {}
    for path in args.reward_model:
        scorer = HFRewardScorer(RewardConfig(path=path, template=args.template))
        results[path] = diagnose(scorer, triples)
        print(table(results[path], path))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "diagnose.json").write_text(json.dumps({"pairs_file": args.pairs, "data": report.to_dict(),
                                                   "reward_models": results}, indent=2))
    plot(results, out / "prefix_accuracy.png")
    print(f"written: {out / 'diagnose.json'}, {out / 'prefix_accuracy.png'}")
    return 0


def _world(args) -> int:
    import time

    t0 = time.perf_counter()
    if args.kind == "tiny":
        from pargs_batch.world.tiny import TinyWorldSpec, build_tiny_world

        world = build_tiny_world(args.out, TinyWorldSpec(seed=args.seed))
    else:
        from pargs_batch.world.default import DefaultWorldSpec, build_default_world

        spec = DefaultWorldSpec.reduced(args.seed) if args.kind == "reduced" else DefaultWorldSpec(seed=args.seed)
        with contextlib.redirect_stdout(sys.stderr):  # training logs; stdout carries only world.json
            world = build_default_world(args.out, spec)
    print(json.dumps(world, indent=2))
    print(f"world ready in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


def _demo(args) -> int:
    from pargs_batch.demo import run_demo

    sweep = [float(b) for b in args.sweep_beta.split(",")] if args.sweep_beta else None
    run_demo(out_dir=args.out, world_dir=args.world_dir, num_prompts=args.num_prompts, beta=args.beta,
             max_new_tokens=args.max_new_tokens, num_samples=args.num_samples, sweep_beta=sweep,
             reduced_world=args.reduced_world)
    return 0


def _bench(args) -> int:
    from pargs_batch.bench import run_bench

    result = run_bench(out_dir=args.out, world_dir=args.world_dir, reduced_world=args.reduced_world,
                       batch_sizes=[int(b) for b in args.batch_sizes.split(",")], tokens=args.new_tokens,
                       reference_prompts=args.reference_prompts,
                       prefix_lengths=[int(x) for x in args.prefix_lengths.split(",")],
                       pairs=args.pairs.split(","))
    return 0 if all(all(g.values()) for g in result["guard"].values()) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pargs-batch", description="Batch reward-guided text generation (PARGS, ARGS, top-k).")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="generate responses for a prompt set into Parquet")
    gen.add_argument("--config", help="YAML config file (see jobs/configs/)")
    gen.add_argument("overrides", nargs="*", metavar="key=value",
                     help="dotted overrides, e.g. decode.beta=2.0 output.path=outputs/x")
    gen.add_argument("--overwrite", action="store_true",
                     help="replace the output directory (otherwise a rerun resumes it)")
    gen.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    gen.set_defaults(func=_generate)

    ev = sub.add_parser("evaluate", help="reward ± SE, LLM-judge win-tie and ROUGE-L diversity of runs")
    ev.add_argument("--config", help="YAML config file (see jobs/configs/eval.yaml)")
    ev.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. judge.seed=1")
    ev.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    ev.set_defaults(func=_evaluate)

    diag = sub.add_parser("diagnose-rm", help="does a reward model rank partial responses like whole ones?")
    diag.add_argument("--reward-model", action="append", required=True, help="checkpoint (repeat to compare)")
    diag.add_argument("--pairs", required=True, help=".jsonl/.parquet preference triples (held out)")
    diag.add_argument("--format", default="generic", choices=["generic", "hh", "tldr"])
    diag.add_argument("--template", default="{prompt}{response}", help="as reward.template")
    diag.add_argument("--limit", type=int, default=None, help="use the first N rows")
    diag.add_argument("--out", default="outputs/diagnose", help="where diagnose.json and the plot go")
    diag.set_defaults(func=_diagnose_rm)

    world = sub.add_parser("world", help="the offline worlds (LM, reward models, gold reward, prompts)")
    world_sub = world.add_subparsers(dest="world_command", required=True)
    build = world_sub.add_parser("build", help="build (or reuse) a world")
    build.add_argument("--kind", default="default", choices=["default", "reduced", "tiny"],
                       help="default: the demo's trained world; reduced: its test-sized twin; "
                            "tiny: the unit tests' fixed world")
    build.add_argument("--out", default="outputs/world")
    build.add_argument("--seed", type=int, default=0)
    build.set_defaults(func=_world)

    demo = sub.add_parser("demo", help="build the default world and compare the methods on it (Table 1)")
    demo.add_argument("--out", default="outputs/demo", help="where the runs, report and plots are written")
    demo.add_argument("--world-dir", default="outputs/world", help="where the world is cached")
    demo.add_argument("--reduced-world", action="store_true", help="the test-sized world (a minute to build)")
    demo.add_argument("--num-prompts", type=int, default=256, help="held-out prompts per method")
    demo.add_argument("--num-samples", type=int, default=2, help="responses per prompt (ROUGE-L needs 2+)")
    demo.add_argument("--beta", type=float, default=2.0)
    demo.add_argument("--max-new-tokens", type=int, default=48)
    demo.add_argument("--sweep-beta", metavar="B1,B2,...",
                      help="also run pargs at each beta (e.g. 0.5,1,1.5,2,2.5,3): Table 4 and its plot")
    demo.set_defaults(func=_demo)
    bench = sub.add_parser("bench", help="tokens/s of plain, stepped, fused and the reference loop (make bench)")
    bench.add_argument("--out", default="outputs/bench", help="where bench.json and the plots go")
    bench.add_argument("--world-dir", default="outputs/world")
    bench.add_argument("--reduced-world", action="store_true", help="the test-sized world")
    bench.add_argument("--batch-sizes", default="1,64,256", metavar="B1,B2,...")
    bench.add_argument("--new-tokens", type=int, default=64, help="tokens per response (EOS ignored)")
    bench.add_argument("--reference-prompts", type=int, default=2, help="prompts the one-at-a-time loop runs")
    bench.add_argument("--prefix-lengths", default="32,64,128,256,512", metavar="L1,L2,...",
                       help="prefix lengths of the reward-vs-prefix curve")
    bench.add_argument("--pairs", default="world,paper-ratio", help="model pairs: world, paper-ratio")
    bench.set_defaults(func=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    from pargs_batch.config import ConfigError

    args = build_parser().parse_args(argv)
    # vLLM's per-request INFO lines drown the progress bar; VLLM_LOGGING_LEVEL=INFO brings them back
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    try:
        return args.func(args)
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
