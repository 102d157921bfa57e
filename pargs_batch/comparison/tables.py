"""The comparison's table, its table over seeds and its plots, from the evaluation's report: per run,
rewards (mean ± SE over prompts), diversity, cost per prompt and the paired difference to the reference."""

from __future__ import annotations

from pathlib import Path

from pargs_batch.comparison.config import Run

def table_rows(runs: list[Run], done: dict) -> list[dict]:
    """Per run: rewards (mean ± SE over prompts), diversity, cost per prompt, the paired difference
    to the reference and the judge's win-tie rate of the reference against it."""
    report, summaries, reference = done["report"], done["summaries"], done["reference"]
    mine = {r.label for r in runs if r.group == reference}
    # a run without seeds is paired with every seed of the reference: its row shows the first pair
    paired = {p["b"]: p for p in reversed(report.get("paired", [])) if p["a"] in mine}
    judged = {p["b"]: p for p in reversed((report.get("judge") or {}).get("pairs", [])) if p["a"] in mine}
    rows = []
    for run in runs:
        r = report["runs"][run.label]
        prompts = max(r["rows"] / r["samples_per_prompt"], 1)
        cost = r.get("cost") or {}
        p, j = paired.get(run.label, {}), judged.get(run.label)
        rows.append({
            "label": run.label, "group": run.group, "method": run.method, "budget": run.budget, "seed": run.seed,
            "rows": r["rows"],
            "error_rows": r["error_rows"], "reward": r.get("reward"), "gold": r.get("gold"),
            "rouge_l": r["diversity"]["rouge_l"], "mean_tokens": r["mean_tokens"],
            # this invocation's speed; None for a run it only resumed (nothing left to make)
            "tokens_per_s": summaries[run.label].tokens_per_s if summaries[run.label].rows else None,
            "reward_tokens_per_prompt": cost.get("reward_tokens", 0) / prompts,
            "reward_calls_per_prompt": cost.get("reward_calls", 0) / prompts,
            "llm_tokens_per_prompt": (cost.get("llm_prefill_tokens", 0) + cost.get("llm_decode_tokens", 0)) / prompts,
            "wall_s_per_prompt": cost.get("wall_s", 0.0) / prompts,
            "reference_minus_this": {k: p[k] for k in ("reward", "gold") if k in p} or None,
            "judge_win_tie": None if j is None else {"rate": j["win_tie_rate"], "interval": j["win_tie_interval"]},
        })
    return rows


def _mean_se(stat: dict | None) -> str:
    if not stat or stat.get("mean") is None:
        return "—"
    return f"{stat['mean']:.3f} ± " + ("—" if stat.get("se") is None else f"{stat['se']:.3f}")  # one prompt: no SE


def _diff(d: dict | None) -> str:
    return "—" if not d or not d.get("interval") else \
        f"{d['diff']:+.3f} [{d['interval'][0]:+.3f}, {d['interval'][1]:+.3f}]"


def format_table(rows: list[dict], reference: str | None, note: str = "") -> str:
    """The comparison as text: one line a run."""
    gold = any(r["gold"] for r in rows)
    judge = any(r["judge_win_tie"] for r in rows)
    metric = "gold" if gold else "reward"
    w = max(8, *(len(r["label"]) for r in rows)) + 2
    diff_head = f"{reference or chr(8212)} − run ({metric}) [95% CI]"
    dw = max(28, len(diff_head)) + 2
    head = (f"{'run':<{w}}{'eval-RM ± SE':>17}" + (f"{'gold ± SE':>17}" if gold else "") +
            f"{'ROUGE-L':>9}{'tokens':>8}{'RM tok/prompt':>15}{'wall s/prompt':>15}{'tok/s':>8}"
            f"{diff_head:>{dw}}" + (f"{'judge: ref. win-tie %':>23}" if judge else ""))
    lines = [head]
    for r in rows:
        d = (r["reference_minus_this"] or {}).get(metric)
        jw = r["judge_win_tie"]
        jtext = "—" if not jw or jw["rate"] is None else \
            f"{100 * jw['rate']:.0f} [{100 * jw['interval'][0]:.0f}, {100 * jw['interval'][1]:.0f}]"
        rouge = "—" if r["rouge_l"] is None else f"{r['rouge_l']:.3f}"
        speed = "—" if r["tokens_per_s"] is None else f"{r['tokens_per_s']:.0f}"
        lines.append(f"{r['label']:<{w}}{_mean_se(r['reward']):>17}" + (f"{_mean_se(r['gold']):>17}" if gold else "") +
                     f"{rouge:>9}{r['mean_tokens'] or 0:>8.1f}{r['reward_tokens_per_prompt']:>15.0f}"
                     f"{r['wall_s_per_prompt']:>15.3f}{speed:>8}{_diff(d) if r['group'] != reference else 'reference':>{dw}}"
                     + (f"{jtext:>23}" if judge else ""))
    lines.append("(± is the standard error over prompts, each prompt's samples averaged first; ROUGE-L between a "
                 "prompt's samples, lower = more diverse; RM tok/prompt = tokens the guidance reward model read; "
                 "wall s/prompt = the rows' shares of their micro-batches; tok/s = this invocation's (— for a run it only "
                 "resumed); reference − run: the paired difference "
                 "over shared prompts, mean and 95% interval" + (f"; {note}" if note else "") + ")")
    return "\n".join(lines)


def seed_rows(runs: list[Run], report_dir: Path, reference: str | None, metric: str) -> list[dict]:
    """Per method (at its budget): ``metric`` over seeds and prompts (``metrics.over_seeds_and_prompts``
    on the prompts every seed answered), and the reference minus it paired on seed and prompt (a method
    with one run - no reward model - is paired with every seed of the other)."""
    import numpy as np
    import pyarrow.parquet as pq

    from pargs_batch.evaluation.metrics import over_seeds_and_prompts

    values: dict[str, dict[str, float]] = {}
    for row in pq.read_table(report_dir / "prompts.parquet", columns=["run", "id", metric]).to_pylist():
        if row[metric] is not None:
            values.setdefault(row["run"], {})[row["id"]] = row[metric]
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.group, []).append(run)

    def matrix(labels: list[str], ids: list[str]):
        return np.array([[values[label][i] for i in ids] for label in labels])

    def shared(labels: list[str]) -> list[str]:
        sets = [set(values.get(label, {})) for label in labels]
        return sorted(set.intersection(*sets)) if sets else []

    ref = [r.label for r in groups.get(reference, [])]
    rows = []
    for group, members in groups.items():
        labels = [r.label for r in members]
        ids = shared(labels)
        row = {"group": group, "method": members[0].method, "budget": members[0].budget, "seeds": len(labels),
               metric: over_seeds_and_prompts(matrix(labels, ids)) if ids else None, "reference_minus_this": None}
        if ref and group != reference and (len(ref) == len(labels) or 1 in (len(ref), len(labels))):
            n = max(len(ref), len(labels))
            a = [ref[i % len(ref)] for i in range(n)]
            b = [labels[i % len(labels)] for i in range(n)]
            ids = shared(a + b)
            if ids:
                d = matrix(a, ids) - matrix(b, ids)
                diff = over_seeds_and_prompts(d)
                per_seed = [float(v) for v in d.mean(axis=1)]
                row["reference_minus_this"] = {**diff, "seed_diffs": per_seed,
                                               "changes_sign": min(per_seed) < 0 < max(per_seed)}
        rows.append(row)
    return rows


def judge_seed_rows(runs: list[Run], report_dir: Path, reference: str | None) -> dict[str, dict]:
    """Per method judged against the reference: win/tie/loss summed over its seed pairs, and the
    win-tie rate over seeds and prompts (``metrics.over_seeds_and_prompts`` on a 1/0 outcome per
    seed and prompt, the prompts every pair judged validly)."""
    import pyarrow.parquet as pq

    from pargs_batch.evaluation.metrics import over_seeds_and_prompts

    path = report_dir / "judge.parquet"
    if not path.exists():
        return {}
    outcomes: dict[tuple[str, str], dict[str, str]] = {}
    for row in pq.read_table(path, columns=["a", "b", "id", "outcome"]).to_pylist():
        outcomes.setdefault((row["a"], row["b"]), {})[row["id"]] = row["outcome"]
    group_of = {r.label: r.group for r in runs}
    by_group: dict[str, list[dict[str, str]]] = {}
    for (a, b), judged in outcomes.items():
        if group_of.get(a) == reference and group_of.get(b) not in (None, reference):
            by_group.setdefault(group_of[b], []).append(judged)
    rows = {}
    for group, pairs in by_group.items():
        every = [o for judged in pairs for o in judged.values()]
        ids = sorted(set.intersection(*({i for i, o in judged.items() if o != "invalid"} for judged in pairs)))
        table = [[1.0 if judged[i] in ("win", "tie") else 0.0 for i in ids] for judged in pairs]
        rows[group] = {**{k: every.count(k) for k in ("win", "tie", "loss", "invalid")}, "seeds": len(pairs),
                       "win_tie": over_seeds_and_prompts(table) if ids else None}
    return rows


def group_points(rows: list[dict], over_seeds: list[dict] | None, metric: str) -> list[dict]:
    """What the plots show: each run, or over seeds each method at its budget (its mean and SE over
    seeds and prompts, its runs' mean cost)."""
    if not over_seeds:
        return rows
    members: dict[str, list[dict]] = {}
    for r in rows:
        members.setdefault(r["group"], []).append(r)
    points = []
    for g in over_seeds:
        mine, stat = members[g["group"]], g[metric] or {}
        points.append({"label": g["group"], "group": g["group"], "method": g["method"], "budget": g["budget"],
                       metric: {"mean": stat.get("mean"), "se": stat.get("se")},
                       **{k: sum(m[k] for m in mine) / len(mine) for k, _, _ in AXES}})
    return points


def format_seed_table(rows: list[dict], reference: str | None, metric: str) -> str:
    """The comparison over reward-model seeds: a line a method (at its budget)."""
    w = max(8, *(len(r["group"]) for r in rows)) + 2
    name = "gold" if metric == "gold" else "eval-RM"
    judge = any(r.get("judge") for r in rows)
    lines = [f"{'method':<{w}}{'seeds':>6}{f'{name} mean [95% CI]':>28}{'seed means':>22}"
             + (f"{'judge: ref. win-tie %':>23}" if judge else "") + f"{f'{reference or chr(8212)} − method [95% CI]':>34}"
             "  per seed"]
    for r in rows:
        m = r[metric] or {}
        lo_hi = m.get("interval")
        mean = "—" if m.get("mean") is None else f"{m['mean']:.3f}" + (
            f" [{lo_hi[0]:.3f}, {lo_hi[1]:.3f}]" if lo_hi else "")
        seeds = ", ".join(f"{v:.2f}" for v in m.get("seed_means", [])) if r["seeds"] > 1 else "—"
        d = r["reference_minus_this"]
        if r["group"] == reference:
            diff, per_seed = "reference", ""
        elif not d or d.get("mean") is None:
            diff, per_seed = "—", ""
        else:
            iv = d.get("interval")
            diff = f"{d['mean']:+.3f}" + (f" [{iv[0]:+.3f}, {iv[1]:+.3f}]" if iv else "")
            per_seed = ", ".join(f"{v:+.2f}" for v in d["seed_diffs"]) + (" (sign changes)" if d["changes_sign"] else "")
        lines.append(f"{r['group']:<{w}}{r['seeds']:>6}{mean:>28}{seeds:>22}"
                     + (f"{win_tie_text(r.get('judge')):>23}" if judge else "") + f"{diff:>34}  {per_seed}")
    lines.append("(over reward-model seeds and prompts: per seed a prompt's samples are averaged, then the mean "
                 "over seeds and prompts with a 95% interval from a crossed random-effects model - seeds x "
                 "prompts, method of moments, Satterthwaite's t; a method without a reward model has one seed "
                 "and is paired with every seed of the reference; an ordering holds where its interval "
                 "excludes 0" + ("; the judge's win-tie rate likewise over seed-paired prompts" if judge else "") + ")")
    return "\n".join(lines)


def win_tie_text(judged: dict | None) -> str:
    """The judge's win-tie rate over seeds and prompts as a percentage with its 95 % interval."""
    stat = (judged or {}).get("win_tie") or {}
    if stat.get("mean") is None:
        return "—"
    iv = stat.get("interval")
    return f"{100 * stat['mean']:.0f}" + (f" [{100 * max(iv[0], 0):.0f}, {100 * min(iv[1], 1):.0f}]" if iv else "")


AXES = (("reward_tokens_per_prompt", "reward-model tokens read per prompt", "reward_vs_rm_tokens.png"),
        ("wall_s_per_prompt", "wall seconds per prompt", "reward_vs_wall_s.png"))


def plot(rows: list[dict], out: Path, reference: str | None, axes=AXES, title: str = "Reward per unit of compute"
         ) -> list[str]:
    """Mean reward (gold when given, else the evaluation RM's; ± SE) against each of ``axes``' cost
    per prompt ((row key, label, file name), x log): a curve a method, its budgets as points; a
    method that costs nothing on an axis (top-k reads no reward model) as a level to beat, and the
    reference run as a dashed one. Returns the files written under ``out/plots``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = "gold" if any(r.get("gold") for r in rows) else "reward"
    usable = [r for r in rows if r.get(metric) and r[metric].get("mean") is not None]
    ref = next((r for r in usable if r["label"] == reference or r.get("group") == reference), None)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    names = []
    methods = list(dict.fromkeys(r["method"] for r in usable))
    # alike in every plot; past ten curves the colours repeat, so the markers change with each ten
    colors = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    markers = {m: "os^Dv"[(i // 10) % 5] for i, m in enumerate(methods)}
    for key, xlabel, name in axes:
        fig, ax = plt.subplots(figsize=(7.5, 5))
        for method in colors:
            mine = sorted((r for r in usable if r["method"] == method), key=lambda r: r[key])
            if all(r[key] > 0 for r in mine):
                ax.errorbar([r[key] for r in mine], [r[metric]["mean"] for r in mine],
                            yerr=[r[metric]["se"] or 0.0 for r in mine], marker=markers[method], capsize=3, label=method,
                            color=colors[method])
                for r in mine:
                    if r["budget"]:
                        ax.annotate(r["budget"], (r[key], r[metric]["mean"]), fontsize=7, xytext=(3, 3),
                                    textcoords="offset points")
            else:
                ax.axhline(mine[0][metric]["mean"], color=colors[method], lw=1, ls=":", label=f"{method} (no RM)")
        if ref is not None:
            ax.axhline(ref[metric]["mean"], color="black", lw=1, ls="--", label=f"{reference} (reference)")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"mean {'gold reward' if metric == 'gold' else 'evaluation-RM reward'} (± SE over prompts)")
        ax.set_title(title)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "plots" / name, dpi=120)
        plt.close(fig)
        names.append(name)
    return names
