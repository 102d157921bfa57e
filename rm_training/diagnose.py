"""Does a reward model rank *partial* responses the way it ranks whole ones? (the paper's Theorem 1)

Held-out pairwise accuracy on whole responses and on prefix pairs, bucketed by how far into the
longer response the prefix goes. A full-sequence reward model may be near chance on early
prefixes; a partial-sequence one should not be. Used at the end of training and by
`pargs-batch diagnose-rm`.
"""

from __future__ import annotations

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
