"""`pargs-batch demo`: the paper's Table 1 in miniature on the default world, offline.

An experiment on top of the library: ``pargs-batch compare`` (``pargs_batch.comparison.run.compare_runs``)
applied to the world, then ``diagnose_models`` and a beta sweep, like any caller.

Builds (or reuses) the default world, generates for its held-out prompts with every method - one
vLLM engine and one scorer per reward model shared by all runs - evaluates the runs in one
evaluation job (separate evaluation RM, gold reward, ROUGE-L diversity, and the world's gold judge
server on localhost through the real ``openai`` client: PARGS against each other method), checks
the guidance RMs on held-out prefix pairs (`diagnose-rm`), and prints the tables. Everything lands
in ``out_dir``.
"""

from __future__ import annotations

import contextlib
import json
import re
from statistics import fmean
import time
from dataclasses import dataclass
from pathlib import Path

from pargs_batch.console import console


@dataclass(frozen=True)
class DemoRun:
    label: str
    method: str
    reward_model: str | None  # key in world.json
    backend: str = "hf"
    policy: str | None = None  # a fine-tuned baseline (experiments.world.policies): its merged checkpoint
    name: str | None = None    # what the table prints, when not the label


PARGS = DemoRun("pargs", "pargs", "rm_partial")  # also the run the beta sweep repeats
DEMO_RUNS = (
    DemoRun("topk", "topk", None),
    DemoRun("args", "args", "rm_full"),
    DemoRun("pargs-greedy", "pargs-greedy", "rm_partial"),
    PARGS,
    DemoRun("pargs-causal-rm", "pargs", "rm_partial_causal", backend="causal"),  # the KV-keeping path
    DemoRun("pargs-ar", "pargs", "rm_autoregressive", backend="autoregressive"),  # one RM token a step
    DemoRun("best-of-n", "best-of-n", "rm_full"),
)
TRAINED_RUNS = (  # --with-trained-baselines: the same top-k sampler on the fine-tuned checkpoints
    DemoRun("dpo-trained", "topk", None, policy="dpo", name="DPO (trained)"),
    DemoRun("online-rl-trained", "topk", None, policy="online-rl", name="online RL (RLOO, trained)"),
)
DIAGNOSED = ("rm_full", "rm_partial", "rm_partial_causal", "rm_autoregressive")
WORLD_DIR = "outputs/world"


def demo_config(world: dict, run: DemoRun, out_dir: Path, num_prompts: int, beta: float,
                max_new_tokens: int, num_samples: int, policies: dict | None = None) -> dict:
    """The generate config of one demo run, as a plain dict (what a YAML file would hold)."""
    return {
        "model": {"path": policies[run.policy]["path"] if run.policy else world["llm"], "dtype": "float32", "max_model_len": 256,
                  "kv_cache_memory_bytes": 128 << 20},
        "reward": {"path": world[run.reward_model] if run.reward_model else "", "template": world["template"],
                   "batch_size": 512, "max_length": 128, "backend": run.backend},
        "decode": {"method": run.method, "beta": beta, "top_k": 10, "max_new_tokens": max_new_tokens,
                   "num_samples": num_samples, "seed": 0, "micro_batch_size": 128},  # best-of-n: N = k = 10
        "data": {"source": world["prompts"], "id_column": "id", "limit": num_prompts},
        "output": {"path": str(out_dir / run.label), "overwrite": True},
        "ray": {"enabled": False},  # one process shares one engine across the runs
    }


def run_demo(out_dir: str = "outputs/demo", world_dir: str = WORLD_DIR, num_prompts: int = 256,
             beta: float = 2.0, max_new_tokens: int = 48, num_samples: int = 2,
             sweep_beta: list[float] | None = None, reduced_world: bool = False, judge_noise: float = 0.5,
             with_trained_baselines: bool = False, rm_seeds: int | None = None) -> dict:
    from pargs_batch.comparison.run import compare_runs
    from pargs_batch.comparison.tables import judge_seed_rows, seed_rows
    from pargs_batch.config import GenerateConfig
    from pargs_batch.configlib import build
    from pargs_batch.models.loading import Models

    from experiments.world.default import (DefaultWorldSpec, built_world, check_seed_count, ensure_world,
                                            fingerprint_note)

    start = time.perf_counter()
    spec = DefaultWorldSpec.reduced() if reduced_world else DefaultWorldSpec()
    check_seed_count(spec, rm_seeds)  # before the world is built
    reused = built_world(Path(world_dir), spec) is not None
    world = ensure_world(world_dir, reduced_world)
    world_s = time.perf_counter() - start  # seconds spent on the world: building it, or reading world.json
    seeds = len(world["rm_seeds"]["rm_full"]) if rm_seeds is None else rm_seeds
    out = Path(out_dir)
    runs, policies = DEMO_RUNS, {}
    if with_trained_baselines:
        from experiments.world.policies import train_policies

        console.say("demo: fine-tuning the baselines from the world's LM: DPO, then online RL (RLOO) against rm_full "
                    "(LoRA, merged)")
        policies = train_policies(world, out / "policies", reduced_world, log=console.say)
        runs = DEMO_RUNS + TRAINED_RUNS
    base = build(GenerateConfig, demo_config(world, PARGS, out, num_prompts, beta, max_new_tokens, num_samples))
    models = Models()  # one engine for every run, one scorer per reward model and backend
    engines = "one vLLM engine for the frozen LM" + (", one per fine-tuned policy" if policies else " for all")
    plan = compare_plan(world, runs, policies, seeds)
    console.say(f"demo: pargs-batch compare on the world: {num_prompts} prompts x {num_samples} samples with "
                f"{len(runs)} methods, each guided one once per reward-model seed ({seeds}): {len(plan)} runs "
                f"({engines}; an engine takes about a minute to start), then one evaluation "
                "(evaluation RM, gold reward, ROUGE-L, gold judge on localhost)")
    with judge_server(judge_noise) as judge:
        done = compare_runs(base, plan, evaluation(world, judge), out, reference=PARGS.label, overwrite=True,
                            models=models)
    report, summaries = done["report"], done["summaries"]
    generate_s = world_s + (policies and sum(p["seconds"] for p in policies.values()) or 0) + done["generate_seconds"]
    over = {metric: {r["group"]: r for r in seed_rows(plan, out / "report", PARGS.label, metric)}
            for metric in ("gold", "reward")}
    judged = judge_seed_rows(plan, out / "report", PARGS.label)
    documented = documented_intervals(world, seeds)
    rows = table_rows(report, summaries, plan, over, runs, policies, documented)
    console.show("\n" + format_table(rows, beta, num_samples, seeds, documented is not None))
    console.show("\n" + format_judge_table(rows, judged, seeds))
    ordered = orderings(plan, out / "report", runs)
    console.show("\n" + format_orderings(ordered, seeds))
    console.say("demo: diagnosing the guidance RMs on held-out prefix pairs")
    diagnosis = diagnose_guidance(world, out, seeds)
    result = {"world": {k: world[k] for k in ("llm_heldout_perplexity", "build_seconds", "reward_models")},
              "beta": beta, "num_prompts": num_prompts, "num_samples": num_samples, "rm_seeds": seeds, "table": rows,
              "judge": report["judge"], "judge_over_seeds": judged, "paired": report["paired"], "orderings": ordered,
              "diagnose": diagnosis, "generate_seconds": round(generate_s, 1)}
    if policies:
        result["policies"] = policies
    if sweep_beta:
        result["sweep"] = sweep(world, out, models, num_prompts, sweep_beta, max_new_tokens)
    models.close()
    result["seconds"] = round(time.perf_counter() - start, 1)
    result["world_seconds"] = round(world_s, 1)
    result["world_reused"] = reused
    (out / "demo.json").write_text(json.dumps(result, indent=2))
    what = "reused, built earlier" if reused else "built now"
    console.show(f"\ndemo done in {result['seconds']} s, of which {result['world_seconds']} s for the world "
                 f"({what}); table, report, plots and runs in {out}/\nworld: {fingerprint_note(world)}")
    return result


JUDGE_KEY_ENV = "PARGS_DEMO_JUDGE_KEY"


def compare_plan(world: dict, runs, policies: dict, seeds: int = 1):
    """The demo's runs as ``pargs-batch compare`` runs: each a method with its guidance RM (and
    backend), once per reward-model seed (``label seed=i``) when there are several; the fine-tuned
    baselines with their checkpoint as the LLM."""
    from experiments.world.default import reward_seed_paths
    from pargs_batch.comparison.config import Run

    plan = []
    for r in runs:
        paths = reward_seed_paths(world, r.reward_model, seeds)
        for i, path in enumerate(paths):
            overrides = {"decode": {"method": r.method}, "reward": {"path": path, "backend": r.backend}}
            if r.policy:
                overrides["model"] = {"path": policies[r.policy]["path"]}
            if len(paths) > 1:
                plan.append(Run(f"{r.label} seed={i}", r.method, "", overrides, i, r.label))
            else:
                plan.append(Run(r.label, r.method, "", overrides))
    return plan


@contextlib.contextmanager
def judge_server(noise: float):
    """The world's gold judge on localhost (an OpenAI-compatible server), its key in JUDGE_KEY_ENV."""
    import os
    import secrets

    from experiments.world.judge_server import GoldJudgeServer

    os.environ[JUDGE_KEY_ENV] = key = secrets.token_hex(8)
    with GoldJudgeServer(noise=noise, api_key=key) as server:
        yield {"base_url": server.url, "api_key_env": JUDGE_KEY_ENV,
               "model": f"gold-judge-noise{noise:g}"}  # the cache tells noise levels apart


def evaluation(world: dict, judge: dict) -> dict:
    """The evaluation job's keys: evaluation RM (never a guidance one), gold reward, ROUGE-L, paired
    differences and the gold judge - PARGS against each other method (the pairs compare fills in)."""
    return {"gold_reward": world["gold_reward"], "judge": judge,
            "reward": {"path": world["rm_eval"], "template": world["template"], "batch_size": 512, "max_length": 128}}


def table_rows(report: dict, summaries: dict, plan, over: dict, runs=DEMO_RUNS, policies: dict | None = None,
               documented: dict | None = None) -> list[dict]:
    """A row a method: its rewards over seeds and prompts (``over``: metric -> method -> ``seed_rows``
    row), the means of its runs' diversity, length and speed, and whether its gold mean falls in the
    documented interval."""
    rows = []
    for run in runs:
        members = [p.label for p in plan if p.group == run.label]
        trained = (policies or {}).get(run.policy)
        first = report["runs"][members[0]]
        rouge = [report["runs"][m]["diversity"]["rouge_l"] for m in members]
        gold, eval_rm = over["gold"][run.label], over["reward"][run.label]
        row = {"method": run.label, "name": run.name or run.label, "llm_frozen": trained is None,
               "train_seconds": trained["seconds"] if trained else None,
               "single_response": first["method"] != "best-of-n", "seeds": len(members), "runs": members,
               "rows": first["rows"], "mean_tokens": fmean(report["runs"][m]["mean_tokens"] for m in members),
               "gold": gold["gold"], "eval_rm": eval_rm["reward"],
               "pargs_minus_this": gold["reference_minus_this"],
               "rouge_l": None if None in rouge else fmean(rouge),
               "tokens_per_s": fmean(summaries[m].tokens_per_s for m in members)}
        if documented and run.label in documented:
            lo, hi = documented[run.label]
            row["documented_interval"] = [lo, hi]
            row["inside_documented"] = lo <= row["gold"]["mean"] <= hi
        rows.append(row)
    return rows


WORLD_DOCS = Path(__file__).resolve().parents[1] / "docs" / "world.md"
_GOLD_HEADER = "gold mean [95% CI]"
_GOLD_CELL = re.compile(r"\s(-?\d+\.\d+) \[(-?\d+\.\d+), (-?\d+\.\d+)\]")


def documented_gold(text: str) -> dict[str, tuple[float, float]]:
    """The gold intervals the demo tables in ``text`` (docs/world.md) print, by method: each table whose
    header has a "gold mean [95% CI]" column, each row's first "mean [lo, hi]" cell. A method printed
    by several tables must have the same interval in each (they are the same documented world); a
    ValueError names one that does not."""
    out: dict[str, tuple[float, float]] = {}
    in_table = False
    for line in text.splitlines():
        if line.startswith("method") and _GOLD_HEADER in line:
            in_table = True
            continue
        if not in_table or not line.strip() or line.startswith("("):
            in_table = False
            continue
        cell = _GOLD_CELL.search(line)
        if cell is None:
            in_table = False
            continue
        method, interval = line.split()[0], (float(cell[2]), float(cell[3]))
        if out.setdefault(method, interval) != interval:
            raise ValueError(f"docs/world.md prints two gold intervals for {method}: {out[method]} and {interval}")
    return out


# the documented world's gold means over its three reward-model seeds, 95 % intervals over seeds and
# prompts, read from the tables docs/world.md prints (`make demo` on the world with
# DOCUMENTED_FINGERPRINT's spec): a run on another CPU builds other reward models, and its means
# should fall inside these. Empty where the docs are not beside the package (an install from a wheel).
DOCUMENTED_GOLD = documented_gold(WORLD_DOCS.read_text()) if WORLD_DOCS.exists() else {}


def documented_intervals(world: dict, seeds: int) -> dict | None:
    """The documented gold intervals when this run is comparable with them (the default spec, all
    three seeds), else None."""
    from dataclasses import asdict

    from experiments.world.default import DefaultWorldSpec

    if not DOCUMENTED_GOLD or world.get("spec") != asdict(DefaultWorldSpec()) or seeds != DefaultWorldSpec().rm_seeds:
        return None
    return DOCUMENTED_GOLD


def _interval(stat: dict | None, scale: float = 1.0, signed: bool = False) -> str:
    if not stat or stat.get("mean") is None:
        return "—"
    f = "+.3f" if signed else ".3f"
    iv = stat.get("interval")
    return f"{scale * stat['mean']:{f}}" + (f" [{scale * iv[0]:{f}}, {scale * iv[1]:{f}}]" if iv else "")


def format_table(rows: list[dict], beta: float, num_samples: int, seeds: int = 1, documented: bool = False) -> str:
    width = max(17, *(len(r.get("name") or r["method"]) + 2 for r in rows))
    trained = any(not r["llm_frozen"] for r in rows)
    head = (f"{'method':<{width}}{'LLM frozen':>11}{'single resp.':>13}{'gold mean [95% CI]':>26}"
            + (f"{'gold per seed':>22}" if seeds > 1 else "") + f"{'eval-RM mean [95% CI]':>26}{'ROUGE-L':>9}"
            f"{'tokens':>8}{'tok/s':>7}" + (f"{'in docs CI':>12}" if documented else "")
            + (f"{'train s':>9}" if trained else ""))
    lines = [head]
    for r in rows:
        per_seed = ", ".join(f"{v:.2f}" for v in r["gold"]["seed_means"]) if r["seeds"] > 1 else "—"
        rouge = "—" if r["rouge_l"] is None else f"{r['rouge_l']:.3f}"
        train_s = "—" if r.get("train_seconds") is None else f"{r['train_seconds']:.0f}"
        inside = "—" if "inside_documented" not in r else ("yes" if r["inside_documented"] else "NO")
        lines.append(f"{r.get('name') or r['method']:<{width}}{'yes' if r['llm_frozen'] else 'no':>11}"
                     f"{'yes' if r['single_response'] else 'no':>13}{_interval(r['gold']):>26}"
                     + (f"{per_seed:>22}" if seeds > 1 else "") + f"{_interval(r['eval_rm']):>26}{rouge:>9}"
                     f"{r['mean_tokens']:>8.1f}{r['tokens_per_s']:>7.0f}" + (f"{inside:>12}" if documented else "")
                     + (f"{train_s:>9}" if trained else ""))
    over = (f"over {seeds} reward-model seeds and the prompts: a crossed random-effects interval (seeds x prompts, "
            "method of moments, Satterthwaite's t); a method without a reward model has one run"
            if seeds > 1 else "one reward-model seed: over prompts only (mean ± 1.96 SE)")
    lines.append(f"(β = {beta:g}, k = 10, best-of-n N = 10; {rows[0]['rows']} rows per run = prompts × "
                 f"{num_samples} samples; 95% intervals {over}; each prompt's samples averaged first; ROUGE-L "
                 "between a prompt's samples, lower = more diverse; tokens, ROUGE-L and tok/s are means over a "
                 "method's runs; tok/s counts best-of-n's N candidates"
                 + ("; in docs CI: whether the gold mean falls in the interval docs/world.md documents" if documented else "")
                 + ("; trained rows: top-k sampling (k = 10) from the fine-tuned checkpoint, "
                    "train s = the fine-tuning's wall time)" if trained else ")"))
    return "\n".join(lines)


def format_judge_table(rows: list[dict], judged: dict, seeds: int = 1) -> str:
    """Table 2's shape: PARGS against each method, by the gold judge (win/tie/loss summed over the seed
    pairs; the win-tie rate over seeds and prompts), and the paired gold difference likewise."""
    from pargs_batch.comparison.tables import win_tie_text

    if not judged:
        return ""
    others = [r for r in rows if r["method"] in judged]
    width = max(17, *(len(r["name"]) + 2 for r in others))
    lines = [f"{'pargs vs':<{width}}{'win':>6}{'tie':>6}{'loss':>6}{'win-tie % [95% CI]':>22}"
             f"{'gold diff [95% CI]':>28}" + ("  per seed" if seeds > 1 else "")]
    for r in others:
        j, d = judged[r["method"]], r["pargs_minus_this"]
        per_seed = "" if not d else ", ".join(f"{v:+.2f}" for v in d["seed_diffs"]) + (
            " (sign changes)" if d["changes_sign"] else "")
        lines.append(f"{r['name']:<{width}}{j['win']:>6}{j['tie']:>6}{j['loss']:>6}{win_tie_text(j):>22}"
                     f"{_interval(d, signed=True):>28}" + (f"  {per_seed}" if seeds > 1 else ""))
    lines.append("(gold judge: the world's gold reward + N(0, noise) per reply, graded 1-10 - not an LLM; first sample "
                 "of each prompt; " + ("pargs and each method paired on seed and prompt (a method without a reward "
                                       "model against every pargs seed), win/tie/loss summed over seeds; "
                                       if seeds > 1 else "") +
                 "95% intervals as in the table above; gold diff = pargs minus the other; an ordering holds where "
                 "its interval excludes 0)")
    return "\n".join(lines)


def orderings(plan, report_dir: Path, runs=DEMO_RUNS, metric: str = "gold") -> list[dict]:
    """Every pair of methods, the higher first: the gold difference paired on seed and prompt (a
    method without a reward model against every seed of the other), its 95 % interval over seeds
    and prompts, each seed's difference, and whether the ordering holds (the interval excludes 0)
    or changes sign between seeds."""
    from pargs_batch.comparison.tables import seed_rows

    labels = [r.label for r in runs]
    out = []
    for i, a in enumerate(labels):
        against = {r["group"]: r["reference_minus_this"] for r in seed_rows(plan, report_dir, a, metric)}
        for b in labels[i + 1:]:
            d = against.get(b)
            if not d or d.get("mean") is None:
                continue
            sign = 1 if d["mean"] >= 0 else -1
            lo, hi = d["interval"] or (None, None)
            out.append({"higher": a if sign > 0 else b, "lower": b if sign > 0 else a, "diff": sign * d["mean"],
                        "interval": None if lo is None else sorted([sign * lo, sign * hi]),
                        "seed_diffs": [sign * v for v in d["seed_diffs"]], "changes_sign": d["changes_sign"],
                        "holds": lo is not None and (lo > 0 or hi < 0)})
    return out


def format_orderings(ordered: list[dict], seeds: int) -> str:
    width = max(len(f"{o['higher']} > {o['lower']}") for o in ordered) + 4
    lines = [f"{'ordering by gold':<{width}}{'difference [95% CI]':>26}  verdict" + ("      per seed" if seeds > 1 else "")]
    for o in ordered:
        iv = o["interval"]
        diff = f"{o['diff']:+.3f}" + (f" [{iv[0]:+.3f}, {iv[1]:+.3f}]" if iv else "")
        verdict = "holds" if o["holds"] else "not settled"
        per_seed = ", ".join(f"{v:+.2f}" for v in o["seed_diffs"]) + (" (sign changes)" if o["changes_sign"] else "")
        lines.append(f"  {o['higher'] + ' > ' + o['lower']:<{width - 2}}{diff:>26}  {verdict:<12}"
                     + (per_seed if seeds > 1 else ""))
    lines.append("(every pair of methods, paired on seed and prompt; an ordering holds where its interval excludes 0"
                 + ("; the docs state only those that hold" if seeds > 1 else "; one reward-model seed: the intervals "
                    "cover the prompts, not the reward models' training") + ")")
    return "\n".join(lines)


def diagnose_guidance(world: dict, out: Path, seeds: int = 1) -> dict:
    """`diagnose-rm` for the guidance reward models (each of their first ``seeds`` seeds) on the
    held-out preference pairs, and the accuracy of Eq. 5's labels against the gold order of each
    prefix pair (rm_partial's tokens). With several seeds the terminal gets each model's accuracy
    over seeds [min, max] (``over_seeds``); each seed's own table goes to the log."""
    import logging

    from experiments.world.default import seed_key
    from pargs_batch.config import RewardConfig
    from pargs_batch.evaluation.scoring import import_callable
    from pargs_batch.rewards.factory import trained_backend
    from rm_training.diagnose import diagnose_models, label_table, seed_spread, seeds_table

    models = {seed_key(key, i): RewardConfig(path=world["rm_seeds"][key][i], template=world["template"],
                                             max_length=128, batch_size=512,
                                             backend=trained_backend(world["rm_seeds"][key][i]))
              for key in DIAGNOSED for i in range(seeds)}
    show = lambda t: console.show("\n" + t)  # noqa: E731
    log = show if seeds == 1 else logging.getLogger(__name__).info
    result = diagnose_models(models, world["preferences"]["heldout"], out / "diagnose", log=log,
                             gold=import_callable(world["gold_reward"]), labels_with="rm_partial")
    if seeds > 1:
        result["over_seeds"] = {key: seed_spread([result[seed_key(key, i)] for i in range(seeds)]) for key in DIAGNOSED}
        show(seeds_table(result["over_seeds"], result["rm_full"]["triples"]))
        show(label_table(result["labels"]))
    return result


def sweep(world: dict, out: Path, models, num_prompts: int, betas: list[float],
          max_new_tokens: int) -> dict:
    """The paper's Table 4: pargs at each beta, evaluation RM and gold reward, with a plot."""
    from pargs_batch.config import GenerateConfig
    from pargs_batch.configlib import build
    from pargs_batch.evaluation.config import EvalConfig
    from pargs_batch.evaluation.run import run_evaluate
    from pargs_batch.generation import run_generate

    console.say(f"demo: sweeping beta over {', '.join(f'{b:g}' for b in betas)} (pargs, partial RM, 1 sample a prompt)")
    runs = []
    for beta in betas:
        cfg = demo_config(world, PARGS, out / "sweep", num_prompts, beta, max_new_tokens, 1)
        cfg["output"]["path"] = str(out / "sweep" / f"pargs-beta{beta:g}")
        config = build(GenerateConfig, cfg)
        run_generate(config, models=models.for_config(config))
        runs.append(cfg["output"]["path"])
    report = run_evaluate(build(EvalConfig, {
        "runs": runs, "output_dir": str(out / "sweep" / "report"), "gold_reward": world["gold_reward"],
        "reward": {"path": world["rm_eval"], "template": world["template"], "max_length": 128}}), progress=False)
    console.show(f"\n{'beta':>6}{'gold reward ± SE':>22}{'eval-RM reward ± SE':>24}")
    table = []
    for label in report["beta_groups"][0]:
        r = report["runs"][label]
        table.append({"beta": r["beta"], "gold": r["gold"], "eval_rm": r["reward"]})
        console.show(f"{r['beta']:>6g}{r['gold']['mean']:>14.3f} ± {r['gold']['se']:.3f}"
                     f"{r['reward']['mean']:>16.3f} ± {r['reward']['se']:.3f}")
    console.show(f"(pargs with the partial RM, {num_prompts} prompts; table and plot in {out / 'sweep' / 'report'}/)")
    return {"table": table}
