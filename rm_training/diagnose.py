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


RESAMPLES = 2000  # cluster-bootstrap resamples behind each 95 % interval


def cluster_interval(correct, prompts, resamples: int = RESAMPLES, seed: int = 0) -> list[float] | None:
    """95 % percentile interval of an accuracy when prompts, not pairs, are resampled (seeded):
    the pairs of one prompt (its two triples, every prefix of them) are not independent."""
    correct = np.asarray(correct, dtype=np.float64)
    if len(correct) == 0:
        return None
    _, cluster = np.unique(np.asarray(prompts, dtype=object).astype(str), return_inverse=True)
    hits, sizes = np.bincount(cluster, weights=correct), np.bincount(cluster).astype(np.float64)
    draws = np.random.default_rng(seed).integers(0, len(sizes), size=(resamples, len(sizes)))
    rates = hits[draws].sum(axis=1) / sizes[draws].sum(axis=1)
    return [float(np.percentile(rates, 2.5)), float(np.percentile(rates, 97.5))]


def whole_accuracy(scorer, triples) -> dict:
    prompts = [t.prompt for t in triples]
    correct = scorer.score(prompts, [t.chosen for t in triples]) > scorer.score(prompts, [t.rejected for t in triples])
    return {"accuracy": float(np.mean(correct)), "interval": cluster_interval(correct, prompts)}


def bucketed_prefixes(triples, tokenizer, stride: int = 1) -> dict[str, tuple[list, list, list]]:
    """(prompts, chosen prefixes, rejected prefixes) per prefix-length bucket, every prefix length
    of each triple (every ``stride``-th, and the whole) (the pairs Eq. 5 labels with the whole
    responses' preference)."""
    groups = {bucket_name(lo, hi): ([], [], []) for lo, hi in BUCKETS}
    for t in triples:
        pairs = prefix_pairs(t.chosen, t.rejected, tokenizer, "every" if stride == 1 else "stride", stride=stride)[0]
        for pair in pairs:
            lo, hi = next(b for b in BUCKETS if pair.fraction <= b[1])
            prompts, chosen, rejected = groups[bucket_name(lo, hi)]
            prompts.append(t.prompt)
            chosen.append(pair.chosen)
            rejected.append(pair.rejected)
    return groups


def prefix_accuracy(scorer, triples, stride: int = 1) -> dict:
    """Accuracy, its 95 % cluster-bootstrap interval and the pair count per prefix-length bucket."""
    out = {}
    for name, (p, c, r) in bucketed_prefixes(triples, scorer.tokenizer, stride).items():
        if p:
            correct = scorer.score(p, c) > scorer.score(p, r)
            out[name] = {"accuracy": float(np.mean(correct)), "interval": cluster_interval(correct, p), "pairs": len(p)}
    return out


def label_accuracy(triples, tokenizer, gold) -> dict:
    """How often Eq. 5's label (the whole responses' preference, given to every prefix pair) agrees
    with a known reward's order of the two prefixes, per bucket: the noise the partial-sequence
    loss trains on. ``gold(prompts, responses) -> floats``; equal gold values are ties (counted
    apart, excluded from the accuracy). "whole" is the label against the whole responses' gold."""
    out = {}
    groups = bucketed_prefixes(triples, tokenizer)
    groups["whole"] = ([t.prompt for t in triples], [t.chosen for t in triples], [t.rejected for t in triples])
    for name, (p, c, r) in groups.items():
        if not p:
            continue
        gc, gr = np.asarray(gold(p, c), dtype=np.float64), np.asarray(gold(p, r), dtype=np.float64)
        decided = gc != gr
        agree = (gc > gr)[decided]
        kept = [x for x, d in zip(p, decided) if d]
        out[name] = {"accuracy": float(np.mean(agree)) if len(agree) else None,
                     "interval": cluster_interval(agree, kept), "pairs": len(p), "ties": int((~decided).sum())}
    return out


def diagnose(scorer, triples) -> dict:
    whole = whole_accuracy(scorer, triples)
    return {"pairwise_accuracy": whole["accuracy"], "pairwise_interval": whole["interval"], "triples": len(triples),
            "prefix_accuracy": prefix_accuracy(scorer, triples)}


def _ci(interval) -> str:
    return f"[{interval[0]:.3f}, {interval[1]:.3f}]" if interval else ""


def table(result: dict, name: str) -> str:
    lines = [f"reward model {name}: {result['triples']} preference triples (95 % intervals: prompts resampled)",
             f"  {'responses':<18}{'accuracy':>9}{'95% interval':>17}{'pairs':>8}",
             f"  {'whole':<18}{result['pairwise_accuracy']:>9.3f}{_ci(result.get('pairwise_interval')):>17}"
             f"{result['triples']:>8}"]
    for bucket, b in result["prefix_accuracy"].items():
        lines.append(f"  {'prefix ' + bucket:<18}{b['accuracy']:>9.3f}{_ci(b.get('interval')):>17}{b['pairs']:>8}")
    return "\n".join(lines)


def seed_spread(per_seed: list[dict]) -> dict:
    """One reward model's seeds (each a :func:`diagnose` result): per bucket and for whole replies,
    each seed's accuracy, their mean, min, max and standard deviation."""
    import statistics

    buckets = ["whole"] + list(per_seed[0]["prefix_accuracy"])
    out = {}
    for bucket in buckets:
        values = [r["pairwise_accuracy"] if bucket == "whole" else r["prefix_accuracy"][bucket]["accuracy"]
                  for r in per_seed]
        out[bucket] = {"per_seed": values, "mean": statistics.fmean(values), "min": min(values), "max": max(values),
                       "sd": statistics.stdev(values) if len(values) > 1 else None}
    return out


def seeds_table(spreads: dict[str, dict], triples: int) -> str:
    """Accuracy by bucket across seeds, a column a reward model: the mean over seeds [min, max]."""
    names = list(spreads)
    seeds = len(next(iter(spreads.values()))["whole"]["per_seed"])
    w = max(24, *(len(n) + 2 for n in names))
    lines = [f"reward models on {triples} held-out preference triples: accuracy, mean over {seeds} seeds [min, max]",
             f"  {'responses':<18}" + "".join(f"{n:>{w}}" for n in names)]
    for bucket in next(iter(spreads.values())):
        cells = [f"{s[bucket]['mean']:.3f} [{s[bucket]['min']:.3f}, {s[bucket]['max']:.3f}]" for s in spreads.values()]
        lines.append(f"  {(bucket if bucket == 'whole' else 'prefix ' + bucket):<18}" + "".join(f"{c:>{w}}" for c in cells))
    return "\n".join(lines)


def label_table(result: dict) -> str:
    lines = ["Eq. 5's labels against the known reward's order of each prefix pair (ties excluded)",
             f"  {'pairs':<18}{'agree':>9}{'95% interval':>17}{'pairs':>8}{'ties':>7}"]
    for bucket, b in result.items():
        name = bucket if bucket == "whole" else "prefix " + bucket
        acc = "—" if b["accuracy"] is None else f"{b['accuracy']:.3f}"
        lines.append(f"  {name:<18}{acc:>9}{_ci(b['interval']):>17}{b['pairs']:>8}{b['ties']:>7}")
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
                    limit: int | None = None, log=None, gold=None, labels_with: str | None = None) -> dict:
    """``diagnose`` each named reward model (name -> ``pargs_batch.config.RewardConfig``) on the
    preference triples of ``pairs_file``; prints a table each, writes ``diagnose.json`` and
    ``prefix_accuracy.png`` to ``out``, returns name -> result. With a known reward ``gold``
    (prompts, responses -> floats), also the accuracy of Eq. 5's labels per bucket, under the
    key ``"labels"`` (prefixes cut with the tokenizer of model ``labels_with``, default the last)."""
    from pargs_batch.console import console
    from pargs_batch.rewards.factory import make_scorer
    from rm_training import data as prefs

    log = log or console.show
    rows, _ = prefs.read_rows(pairs_file)
    columns = {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"}
    triples, report = prefs.to_triples(rows, fmt, columns, limit)
    results, tokenizers = {}, {}
    for name, reward in reward_models.items():
        scorer = make_scorer(reward)
        tokenizers[name] = scorer.tokenizer
        results[name] = diagnose(scorer, triples)
        log(table(results[name], name))
    labels = None
    if gold is not None and tokenizers:
        labels = label_accuracy(triples, tokenizers[labels_with or name], gold)
    if labels:
        log(label_table(labels))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "diagnose.json").write_text(json.dumps({"pairs_file": pairs_file, "data": report.to_dict(),
                                                   "reward_models": results, "labels": labels}, indent=2))
    plot(results, out / "prefix_accuracy.png")
    return {**results, "labels": labels} if labels else results


def add_command(sub) -> None:
    """`pargs-batch diagnose-rm` (the ``pargs_batch.commands`` entry point)."""
    cmd = sub.add_parser("diagnose-rm", help="does a reward model rank partial responses like whole ones?")
    cmd.add_argument("--reward-model", action="append", required=True, help="checkpoint (repeat to compare)")
    cmd.add_argument("--pairs", required=True, help=".jsonl/.parquet preference triples (held out)")
    cmd.add_argument("--format", default="generic", choices=["generic", "hh", "tldr"],
                     help="how the pairs file is laid out (rm_training's data.format)")
    cmd.add_argument("--template", default="{prompt}{response}", help="as reward.template")
    cmd.add_argument("--limit", type=int, default=None, help="use the first N rows")
    cmd.add_argument("--out", default="outputs/diagnose", help="where diagnose.json and the plot go")
    cmd.set_defaults(func=_diagnose_command, log_default=lambda a: f"{a.out}/diagnose-rm.log")


def _diagnose_command(args) -> int:
    from pargs_batch.config import RewardConfig
    from pargs_batch.console import console

    from pargs_batch.rewards.factory import trained_backend

    # an autoregressive reward model (rm_training mode autoregressive) is scored as generation scores it
    models = {path: RewardConfig(path=path, template=args.template, backend=trained_backend(path))
              for path in args.reward_model}
    diagnose_models(models, args.pairs, args.out, args.format, args.limit)
    out = Path(args.out)
    console.show(f"written: {out / 'diagnose.json'}, {out / 'prefix_accuracy.png'}")
    return 0
