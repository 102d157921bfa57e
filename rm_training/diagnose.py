"""Does a reward model rank *partial* responses the way it ranks whole ones? (the paper's Theorem 1)

Held-out pairwise accuracy on whole responses and on prefix pairs, bucketed by how far into the
longer response the prefix goes. A full-sequence reward model may be near chance on early
prefixes; a partial-sequence one should not be. Used at the end of training, by the demo, and
as `pargs-batch diagnose-rm` (added to the CLI through the ``pargs_batch.commands`` entry point).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rm_training.prefixes import prefix_pairs

BUCKETS = ((0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))


def bucket_name(lo: float, hi: float) -> str:
    return f"{int(lo * 100)}-{int(hi * 100)}%"


def whole_accuracy(scorer, triples) -> float:
    prompts = [t.prompt for t in triples]
    return float(np.mean(scorer.score(prompts, [t.chosen for t in triples])
                         > scorer.score(prompts, [t.rejected for t in triples])))


def prefix_accuracy(scorer, triples) -> dict:
    """Accuracy and pair count per prefix-length bucket, over every prefix length of each triple."""
    groups = {bucket_name(lo, hi): ([], [], []) for lo, hi in BUCKETS}
    for t in triples:
        for pair in prefix_pairs(t.chosen, t.rejected, scorer.tokenizer, "every")[0]:
            lo, hi = next(b for b in BUCKETS if pair.fraction <= b[1])
            prompts, chosen, rejected = groups[bucket_name(lo, hi)]
            prompts.append(t.prompt)
            chosen.append(pair.chosen)
            rejected.append(pair.rejected)
    return {name: {"accuracy": float(np.mean(scorer.score(p, c) > scorer.score(p, r))), "pairs": len(p)}
            for name, (p, c, r) in groups.items() if p}


def diagnose(scorer, triples) -> dict:
    return {"pairwise_accuracy": whole_accuracy(scorer, triples), "triples": len(triples),
            "prefix_accuracy": prefix_accuracy(scorer, triples)}


def table(result: dict, name: str) -> str:
    lines = [f"reward model {name}: {result['triples']} preference triples",
             f"  {'responses':<18}{'accuracy':>9}{'pairs':>8}",
             f"  {'whole':<18}{result['pairwise_accuracy']:>9.3f}{result['triples']:>8}"]
    for bucket, b in result["prefix_accuracy"].items():
        lines.append(f"  {'prefix ' + bucket:<18}{b['accuracy']:>9.3f}{b['pairs']:>8}")
    return "\n".join(lines)


def plot(results: dict[str, dict], path: Path) -> None:
    """Accuracy by prefix bucket, one line per reward model, chance marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for name, result in results.items():
        buckets = list(result["prefix_accuracy"])
        ax.plot(buckets + ["whole"], [result["prefix_accuracy"][b]["accuracy"] for b in buckets]
                + [result["pairwise_accuracy"]], marker="o", label=name)
    ax.axhline(0.5, color="grey", linestyle=":", label="chance")
    ax.set_ylim(0, 1)
    ax.set_xlabel("prefix length (share of the longer response)")
    ax.set_ylabel("held-out pairwise accuracy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def diagnose_models(reward_models: dict, pairs_file: str, out: str | Path, fmt: str = "generic",
                    limit: int | None = None, log=print) -> dict:
    """``diagnose`` each named reward model (name -> ``pargs_batch.config.RewardConfig``) on the
    preference triples of ``pairs_file``; prints a table each, writes ``diagnose.json`` and
    ``prefix_accuracy.png`` to ``out``, returns name -> result."""
    from pargs_batch.reward import HFRewardScorer
    from rm_training import data as prefs

    rows, _ = prefs.read_rows(pairs_file)
    columns = {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"}
    triples, report = prefs.to_triples(rows, fmt, columns, limit)
    results = {}
    for name, reward in reward_models.items():
        results[name] = diagnose(HFRewardScorer(reward), triples)
        log(table(results[name], name))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "diagnose.json").write_text(json.dumps({"pairs_file": pairs_file, "data": report.to_dict(),
                                                   "reward_models": results}, indent=2))
    plot(results, out / "prefix_accuracy.png")
    return results


def add_command(sub) -> None:
    """`pargs-batch diagnose-rm` (the ``pargs_batch.commands`` entry point)."""
    cmd = sub.add_parser("diagnose-rm", help="does a reward model rank partial responses like whole ones?")
    cmd.add_argument("--reward-model", action="append", required=True, help="checkpoint (repeat to compare)")
    cmd.add_argument("--pairs", required=True, help=".jsonl/.parquet preference triples (held out)")
    cmd.add_argument("--format", default="generic", choices=["generic", "hh", "tldr"])
    cmd.add_argument("--template", default="{prompt}{response}", help="as reward.template")
    cmd.add_argument("--limit", type=int, default=None, help="use the first N rows")
    cmd.add_argument("--out", default="outputs/diagnose", help="where diagnose.json and the plot go")
    cmd.set_defaults(func=_diagnose_command)


def _diagnose_command(args) -> int:
    from pargs_batch.config import RewardConfig

    models = {path: RewardConfig(path=path, template=args.template) for path in args.reward_model}
    diagnose_models(models, args.pairs, args.out, args.format, args.limit)
    out = Path(args.out)
    print(f"written: {out / 'diagnose.json'}, {out / 'prefix_accuracy.png'}")
    return 0
