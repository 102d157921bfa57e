"""report.md (the tables to paste), report.json (the aggregates) and plots/*.png.

Per-row scores are not in the report: they are in ``scores.parquet`` beside it, which the
distribution plots read (its number columns only).
"""

from __future__ import annotations

import json
from pathlib import Path


def _pm(stat: dict | None, digits: int = 3) -> str:
    if not stat or stat.get("mean") is None:
        return "—"
    se = f" ± {stat['se']:.{digits}f}" if stat.get("se") is not None else ""
    return f"{stat['mean']:.{digits}f}{se}"


def _pct_interval(rate: float | None, interval: list[float] | None) -> str:
    if rate is None:
        return "—"
    return f"{100 * rate:.0f}% [{100 * interval[0]:.0f}, {100 * interval[1]:.0f}]"


def _diff(stat: dict | None, digits: int = 3) -> str:
    if not stat or stat.get("diff") is None:
        return "—"
    if stat.get("interval") is None:
        return f"{stat['diff']:+.{digits}f}"
    lo, hi = stat["interval"]
    return f"{stat['diff']:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def markdown(report: dict) -> str:
    lines = ["# Evaluation report", ""]
    if report["evaluation_model"]:
        lines.append(f"Rewards scored by `{report['evaluation_model']}` (not a guidance model"
                     " unless allow_same_model was set).")
    if report["gold_reward"]:
        lines.append(f"Gold reward: `{report['gold_reward']}`.")
    lines += ["", "## Average reward ± standard error over prompts (Table 1)", "",
              "| run | method | β | rows | errors | prompts × samples | mean tokens | reward ± SE | gold ± SE | "
              "ROUGE-L ↓ |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for label, r in report["runs"].items():
        div = r["diversity"]["rouge_l"]
        stat = r.get("reward") or r.get("gold") or {}
        lines.append(f"| {label} | {r['method']} | {r['beta']:g} | {r['rows']} | {r['error_rows']} | "
                     f"{stat.get('prompts', 0)} × {r['samples_per_prompt']} | {r['mean_tokens'] or 0:.1f} | "
                     f"{_pm(r.get('reward'))} | {_pm(r.get('gold'))} | {'—' if div is None else f'{div:.4f}'} |")
    lines += ["", "Each prompt's samples are averaged first; ± is the standard error across prompts "
              "(samples of one prompt are not independent)."]
    costed = {label: r for label, r in report["runs"].items() if r.get("cost")}
    if costed:
        lines += ["", "## Compute spent (sums over the run's rows)", "",
                  "| run | method | LLM prefill tokens | LLM decode tokens | reward tokens | reward calls | "
                  "wall s (row shares) | reward tokens / prompt |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for label, r in costed.items():
            c, prompts = r["cost"], r["rows"] / max(r["samples_per_prompt"], 1)
            lines.append(f"| {label} | {r['method']} | {c['llm_prefill_tokens']:,} | {c['llm_decode_tokens']:,} | "
                         f"{c['reward_tokens']:,} | {c['reward_calls']:,} | {c['wall_s']:.1f} | "
                         f"{c['reward_tokens'] / prompts if prompts else 0:,.0f} |")
        lines += ["", "Counted per row as it was generated: prompt tokens vLLM computed (not served from its prefix "
                  "cache), tokens it generated (kept or not), tokens the reward model(s) read and inputs they scored; "
                  "wall s is each row's share of its micro-batch's seconds."]
    if report.get("paired"):
        lines += ["", "## Paired differences A − B over shared prompts", "",
                  "| A | B | prompts | reward A − B [95 % CI] | gold A − B [95 % CI] |", "| --- | --- | --- | --- | --- |"]
        for p in report["paired"]:
            n = (p.get("reward") or p.get("gold") or {}).get("prompts", 0)
            lines.append(f"| {p['a']} | {p['b']} | {n} | {_diff(p.get('reward'))} | {_diff(p.get('gold'))} |")
        lines += ["", "Per prompt, A's mean minus B's mean; the mean difference ± 1.96 SE across prompts "
                  "(normal approximation). An interval that excludes 0 says which run scores higher."]
    if report["judge"]:
        j = report["judge"]
        lines += ["", f"## LLM judge: win-tie of A against B (Table 2) — `{j['model']}`, template "
                  f"`{j['template']}`", "",
                  "| A | B | prompts | win | tie | loss | invalid | win % [95 % CI] | win-tie % [95 % CI] |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for p in j["pairs"]:
            lines.append(f"| {p['a']} | {p['b']} | {p['prompts']} | {p['win']} | {p['tie']} | {p['loss']} | "
                         f"{p['invalid']} | {_pct_interval(p['win_rate'], p['win_interval'])} | "
                         f"{_pct_interval(p['win_tie_rate'], p['win_tie_interval'])} |")
        lines.append("")
        lines.append(f"Response order shuffled per prompt with seed {j['pairs'][0]['seed']}; rates are over valid "
                     "judgements (one per prompt, its first sample), with 95 % Wilson score intervals.")
    for group in report["beta_groups"]:
        lines += ["", "## Reward against β (Table 4)", "", "| β | reward ± SE | gold ± SE |", "| --- | --- | --- |"]
        for label in group:
            r = report["runs"][label]
            lines.append(f"| {r['beta']:g} | {_pm(r.get('reward'))} | {_pm(r.get('gold'))} |")
    lines += ["", "Plots: " + ", ".join(f"`plots/{p}`" for p in report.get("plots", [])), ""]
    return "\n".join(lines)


def plots(report: dict, out: Path, scores: Path | None = None) -> list[str]:
    import matplotlib
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    out.mkdir(parents=True, exist_ok=True)
    runs = report["runs"]
    table = pq.read_table(scores, columns=["run", "reward", "gold"]) if scores and scores.exists() else None
    for key, title in (("reward", "evaluation reward"), ("gold", "gold reward")):
        data = {}
        for label in runs:
            if table is None:
                break
            values = table.filter(pc.equal(table["run"], label))[key].drop_null().to_numpy()
            if len(values):
                data[label] = values
        if not data:
            continue
        fig, ax = plt.subplots(figsize=(1.6 * len(data) + 2, 4))
        ax.boxplot(list(data.values()), showmeans=True, showfliers=max(map(len, data.values())) <= 10_000)
        ax.set_xticks(range(1, len(data) + 1), list(data), rotation=20, ha="right")
        ax.set_ylabel(title)
        ax.set_title(f"{title} per run")
        fig.tight_layout()
        name = f"{key}_distribution.png"
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        made.append(name)
    if report["judge"]:
        pairs = report["judge"]["pairs"]
        fig, ax = plt.subplots(figsize=(7, 0.6 * len(pairs) + 1.5))
        left = [0.0] * len(pairs)
        names = [f"{p['a']} vs {p['b']}" for p in pairs]
        for outcome, color in (("win", "#2e7d32"), ("tie", "#9e9e9e"), ("loss", "#c62828"), ("invalid", "#ffb300")):
            widths = [p[outcome] / max(1, p["prompts"]) for p in pairs]
            ax.barh(names, widths, left=left, color=color, label=outcome)
            left = [a + b for a, b in zip(left, widths)]
        for y, p in enumerate(pairs):  # the win-tie rate's 95 % interval, over valid judgements
            if p["win_tie_interval"]:
                share = p["valid"] / max(1, p["prompts"])
                lo, hi = (share * x for x in p["win_tie_interval"])
                mid = (p["win"] + p["tie"]) / max(1, p["prompts"])
                ax.errorbar([mid], [y], xerr=[[max(0.0, mid - lo)], [max(0.0, hi - mid)]], color="black", capsize=4, lw=1.2)
        ax.set_xlim(0, 1)
        ax.set_xlabel("share of prompts (bar: win-tie rate's 95 % Wilson interval)")
        ax.legend(loc="lower right", ncols=4, fontsize=8)
        ax.set_title("LLM judge: A against B")
        fig.tight_layout()
        fig.savefig(out / "win_tie.png", dpi=120)
        plt.close(fig)
        made.append("win_tie.png")
    for i, group in enumerate(report["beta_groups"]):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for key, label in (("reward", "evaluation reward"), ("gold", "gold reward")):
            stats = [runs[g].get(key) for g in group]
            if all(stats):
                ax.errorbar([runs[g]["beta"] for g in group], [s["mean"] for s in stats],
                            yerr=[s["se"] or 0 for s in stats], marker="o", capsize=3, label=label)
        ax.set_xlabel("β")
        ax.set_ylabel("mean reward ± SE")
        ax.set_title(f"reward against β ({runs[group[0]]['method']})")
        ax.legend()
        fig.tight_layout()
        name = f"reward_vs_beta_{i}.png"
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        made.append(name)
    return made


def write_report(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    report["plots"] = plots(report, out / "plots", out / "scores.parquet")
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(markdown(report))
