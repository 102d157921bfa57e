"""`pargs-batch demo`: the paper's Table 1 in miniature on the default world, offline.

An experiment on top of the library: ``pargs-batch compare`` (``pargs_batch.comparison.compare_runs``)
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
    DemoRun("best-of-n", "best-of-n", "rm_full"),
)
TRAINED_RUNS = (  # --with-trained-baselines: the same top-k sampler on the fine-tuned checkpoints
    DemoRun("dpo-trained", "topk", None, policy="dpo", name="DPO (trained)"),
    DemoRun("online-rl-trained", "topk", None, policy="online-rl", name="online RL (RLOO, trained)"),
)
DIAGNOSED = ("rm_full", "rm_partial", "rm_partial_causal")
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
             with_trained_baselines: bool = False) -> dict:
    from pargs_batch.comparison import compare_runs
    from pargs_batch.config import GenerateConfig
    from pargs_batch.configlib import build
    from pargs_batch.models import Models

    from experiments.world.default import DefaultWorldSpec, built_world, ensure_world, fingerprint_note

    start = time.perf_counter()
    spec = DefaultWorldSpec.reduced() if reduced_world else DefaultWorldSpec()
    reused = built_world(Path(world_dir), spec) is not None
    world = ensure_world(world_dir, reduced_world)
    world_s = time.perf_counter() - start  # seconds spent on the world: building it, or reading world.json
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
    console.say(f"demo: pargs-batch compare on the world: {num_prompts} prompts x {num_samples} samples with "
                f"{len(runs)} methods ({engines}; an engine takes about a minute to start), then one evaluation "
                "(evaluation RM, gold reward, ROUGE-L, gold judge on localhost)")
    with judge_server(judge_noise) as judge:
        done = compare_runs(base, compare_plan(world, runs, policies), evaluation(world, judge), out,
                            reference=PARGS.label, overwrite=True, models=models)
    report, summaries = done["report"], done["summaries"]
    generate_s = world_s + (policies and sum(p["seconds"] for p in policies.values()) or 0) + done["generate_seconds"]
    rows = table_rows(report, summaries, runs, policies)
    console.show("\n" + format_table(rows, beta, num_samples))
    console.show("\n" + format_judge_table(report, {r.label: r.name for r in runs if r.name}))
    console.say("demo: diagnosing the guidance RMs on held-out prefix pairs")
    diagnosis = diagnose_guidance(world, out)
    result = {"world": {k: world[k] for k in ("llm_heldout_perplexity", "build_seconds", "reward_models")},
              "beta": beta, "num_prompts": num_prompts, "num_samples": num_samples, "table": rows,
              "judge": report["judge"], "paired": report["paired"],
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


def compare_plan(world: dict, runs, policies: dict):
    """The demo's runs as ``pargs-batch compare`` runs: each a method with its guidance RM (and backend),
    the fine-tuned baselines with their checkpoint as the LLM."""
    from pargs_batch.comparison import Run

    plan = []
    for r in runs:
        overrides = {"decode": {"method": r.method},
                     "reward": {"path": world[r.reward_model] if r.reward_model else "", "backend": r.backend}}
        if r.policy:
            overrides["model"] = {"path": policies[r.policy]["path"]}
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


def table_rows(report: dict, summaries: dict, runs=DEMO_RUNS, policies: dict | None = None) -> list[dict]:
    by_label, rows = {run.label: run for run in runs}, []
    for label, r in report["runs"].items():
        run = by_label[label]
        trained = (policies or {}).get(run.policy)
        rows.append({"method": label, "name": run.name or label, "llm_frozen": trained is None,
                     "train_seconds": trained["seconds"] if trained else None,
                     "single_response": r["method"] != "best-of-n",
                     "rows": r["rows"], "mean_tokens": r["mean_tokens"], "gold": r["gold"], "eval_rm": r["reward"],
                     "rouge_l": r["diversity"]["rouge_l"], "tokens_per_s": summaries[label].tokens_per_s})
    return rows


def format_judge_table(report: dict, names: dict | None = None) -> str:
    """Table 2's shape: PARGS against each method, by the gold judge, and the paired gold difference."""
    if not report.get("judge"):
        return ""
    paired = {(p["a"], p["b"]): p.get("gold") for p in report.get("paired", [])}
    names = names or {}
    width = max(17, *(len(names.get(p["b"], p["b"])) + 2 for p in report["judge"]["pairs"]))
    lines = [f"{'pargs vs':<{width}}{'win':>6}{'tie':>6}{'loss':>6}{'win-tie % [95% CI]':>22}{'gold diff [95% CI]':>26}"]
    for p in report["judge"]["pairs"]:
        lo, hi = p["win_tie_interval"] or (0.0, 0.0)
        rate = f"{100 * p['win_tie_rate']:.0f} [{100 * lo:.0f}, {100 * hi:.0f}]" if p["win_tie_rate"] is not None else "—"
        g = paired.get((p["a"], p["b"]))
        diff = f"{g['diff']:+.3f} [{g['interval'][0]:+.3f}, {g['interval'][1]:+.3f}]" if g and g["interval"] else "—"
        lines.append(f"{names.get(p['b'], p['b']):<{width}}{p['win']:>6}{p['tie']:>6}{p['loss']:>6}{rate:>22}{diff:>26}")
    lines.append(f"(gold judge: the world's gold reward + N(0, noise) per reply, graded 1-10 - not an LLM; "
                 f"{report['judge']['pairs'][0]['prompts']} prompts, first sample each; Wilson intervals; "
                 "gold diff = pargs minus the other, per prompt, mean ± 1.96 SE)")
    return "\n".join(lines)


def format_table(rows: list[dict], beta: float, num_samples: int) -> str:
    width = max(17, *(len(r.get("name") or r["method"]) + 2 for r in rows))
    trained = any(not r["llm_frozen"] for r in rows)
    head = (f"{'method':<{width}}{'LLM frozen':>11}{'single resp.':>13}{'gold reward ± SE':>20}"
            f"{'eval-RM reward ± SE':>22}{'ROUGE-L':>9}{'tokens':>8}{'tok/s':>7}" + (f"{'train s':>9}" if trained else ""))
    lines = [head]
    for r in rows:
        gold = f"{r['gold']['mean']:.3f} ± {r['gold']['se']:.3f}"
        rm = f"{r['eval_rm']['mean']:.3f} ± {r['eval_rm']['se']:.3f}"
        rouge = "—" if r["rouge_l"] is None else f"{r['rouge_l']:.3f}"
        train_s = "—" if r.get("train_seconds") is None else f"{r['train_seconds']:.0f}"
        lines.append(f"{r.get('name') or r['method']:<{width}}{'yes' if r['llm_frozen'] else 'no':>11}"
                     f"{'yes' if r['single_response'] else 'no':>13}{gold:>20}{rm:>22}{rouge:>9}"
                     f"{r['mean_tokens']:>8.1f}{r['tokens_per_s']:>7.0f}" + (f"{train_s:>9}" if trained else ""))
    lines.append(f"(β = {beta:g}, k = 10, best-of-n N = 10; {rows[0]['rows']} rows per method = prompts × "
                 f"{num_samples} samples; ± is the standard error over prompts, each prompt's samples "
                 "averaged first; ROUGE-L between a prompt's samples, lower = more diverse; "
                 "tok/s counts best-of-n's N candidates"
                 + ("; trained rows: top-k sampling (k = 10) from the fine-tuned checkpoint, "
                    "train s = the fine-tuning's wall time)" if trained else ")"))
    return "\n".join(lines)


def diagnose_guidance(world: dict, out: Path) -> dict:
    """`diagnose-rm` for the guidance reward models on the held-out preference pairs, and the
    accuracy of Eq. 5's labels against the gold order of each prefix pair (rm_partial's tokens)."""
    from pargs_batch.config import RewardConfig
    from rm_training.diagnose import diagnose_models

    models = {key: RewardConfig(path=world[key], template=world["template"], max_length=128, batch_size=512)
              for key in DIAGNOSED}
    from pargs_batch.evaluation.scoring import import_callable

    gold = import_callable(world["gold_reward"])
    return diagnose_models(models, world["preferences"]["heldout"], out / "diagnose", log=lambda t: console.show("\n" + t),
                           gold=gold, labels_with="rm_partial")



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
