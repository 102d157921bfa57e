"""The bench's table and its targets."""

from __future__ import annotations


def phase_shares(phases: dict) -> dict:
    """Each phase's share of the step: engine (with queueing for it), reward, decode-and-glue."""
    parts = {"engine": phases.get("engine", 0.0) + phases.get("engine_wait", 0.0),
             "reward": phases.get("reward", 0.0), "decode": phases.get("decode", 0.0)}
    total = sum(parts.values()) or 1.0
    return {name: round(v / total, 3) for name, v in parts.items()}


def format_table(rows: list[dict]) -> str:
    """tok/s is the median over the rounds, min-max their range."""
    head = (f"{'models':<12}{'method':<10}{'mode':<9}{'backend':<8}{'B':>4}{'tok/s':>9}{'min-max':>13}{'×plain':>8}"
            f"{'×ref':>8}{'engine':>8}{'reward':>8}{'decode':>8}{'bound ms/tok':>13}{'meas/bound':>11}")
    lines = [head]
    for r in rows:
        plain = "—" if r["vs_plain"] is None else f"{r['vs_plain']:.2f}"
        spread = f"{r['tokens_per_s_min']:.0f}-{r['tokens_per_s_max']:.0f}" if r.get("repeats", 1) > 1 else "—"
        s = r["split"]
        lines.append(f"{r['model_set']:<12}{r['method']:<10}{r['mode']:<9}{r['backend']:<8}{r['B']:>4}"
                     f"{r['tokens_per_s']:>9.0f}{spread:>13}{plain:>8}{r['vs_reference']:>8.1f}{s['engine']:>8.0%}"
                     f"{s['reward']:>8.0%}{s['decode']:>8.0%}{1000 * r['bound_s_per_token']:>13.4f}"
                     f"{r['measured_over_bound']:>11.0f}")
    return "\n".join(lines)


def format_startup(startup: dict) -> str:
    """Seconds of each start-up phase per line (mode, or model set and mode): median (min-max) over fresh
    processes."""
    phases = ("imports_s", "engine_s", "reward_model_s", "first_step_s", "total_s", "shutdown_s")
    lines = [f"{'mode':<16}" + "".join(f"{p[:-2].replace('_', ' '):>20}" for p in phases)]
    for mode, figures in startup.items():
        lines.append(f"{mode:<16}" + "".join(
            f"{figures[p]['median']:>8.1f} ({figures[p]['min']:.1f}-{figures[p]['max']:.1f})".rjust(20) for p in phases))
    return "\n".join(lines)


def fused_targets(rows: list[dict], batch_sizes: list[int]) -> list[dict]:
    """Fused mode is the fast guided mode: at least stepped's speed for each backend and B > 1 (medians),
    fused/hf at least 0.04 of plain on the world set and fused/causal 0.9 on the paper-ratio set."""
    out = []
    pargs = {(r["model_set"], r["mode"], r["backend"], r["B"]): r for r in rows if r["method"] == "pargs"}
    for (model_set, mode, backend, b), r in sorted(pargs.items()):
        stepped = pargs.get((model_set, "stepped", backend, b))
        if mode == "fused" and b > 1 and stepped:
            ratio = r["tokens_per_s"] / stepped["tokens_per_s"]
            out.append({"target": f"fused >= stepped ({model_set}, {backend}, B={b})", "measured": ratio,
                        "met": ratio >= 1.0})
    b_max = max(batch_sizes)
    for model_set, backend, bar in (("world", "hf", 0.04), ("paper-ratio", "causal", 0.9)):
        r = pargs.get((model_set, "fused", backend, b_max))
        if r:
            out.append({"target": f"fused/{backend} >= {bar} x plain at B={b_max} ({model_set})",
                        "measured": r["vs_plain"], "met": r["vs_plain"] >= bar})
    return out


def targets(rows: list[dict], curve: dict, b_max: int) -> list[dict]:
    def best(model_set):
        return max((r for r in rows if r["model_set"] == model_set and r["method"] == "pargs" and r["B"] == b_max),
                   key=lambda r: r["tokens_per_s"], default=None)

    out = []
    w = best("world")
    if w:
        out.append({"target": f"best pargs at B={b_max} >= 50x reference on the same models (world)",
                    "measured": w["vs_reference"],
                    "met": w["vs_reference"] >= 50, "config": f"{w['mode']}/{w['backend']}"})
    p = best("paper-ratio")
    if p:
        out.append({"target": f"best pargs >= 1/3 of plain at B={b_max} (paper-ratio)", "measured": p["vs_plain"],
                    "met": p["vs_plain"] >= 1 / 3, "config": f"{p['mode']}/{p['backend']}"})
    lo, hi = min(curve["causal"]), max(curve["causal"])
    ratio = curve["causal"][hi] / curve["causal"][lo]
    out.append({"target": f"causal reward step at prefix {hi} <= 1.5x prefix {lo}", "measured": ratio,
                "met": ratio <= 1.5, "hf_ratio": curve["hf"][hi] / curve["hf"][lo],
                "flop_ratio_causal": curve["flops"]["causal"][hi] / curve["flops"]["causal"][lo],
                "flop_ratio_hf": curve["flops"]["hf"][hi] / curve["flops"]["hf"][lo]})
    dec = [r["split"]["decode"] for r in rows if r["mode"] == "stepped" and r["B"] == b_max]
    if dec:
        out.append({"target": f"decode-and-glue <= 15% of step time at B={b_max} (stepped)",
                    "measured": max(dec), "met": max(dec) <= 0.15})
    return out
