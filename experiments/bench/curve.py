"""The reward-vs-prefix curve: one reward step of each backend as the prefix grows."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from experiments.bench.flops import K, count_params, forward_flops


def reward_vs_prefix(model: str, lengths: list[int], b: int = 64, steps: int = 3) -> dict:
    """Seconds of one reward step (B sequences x k candidates) per backend, by prefix length, on the
    same causal reward model, with the Section 5.3 FLOP count of each step."""
    from pargs_batch.config import RewardConfig
    from pargs_batch.rewards.factory import make_scorer

    causal = make_scorer(RewardConfig(path=model, batch_size=1024, backend="causal"))
    hf = make_scorer(RewardConfig(path=model, batch_size=1024, max_length=2048))
    shape = count_params(model)
    vocab = causal.model.config.vocab_size
    rng = np.random.default_rng(0)
    out = {"hf": {}, "causal": {}, "b": b, "k": K, "model": model, "shape": shape, "flops": {"hf": {}, "causal": {}}}
    for length in lengths:
        out["flops"]["causal"][length] = b * K * forward_flops(shape, length)  # one new token per candidate
        # every candidate re-encoded: length + 1 tokens at a mean context of half the length
        out["flops"]["hf"][length] = b * K * (length + 1) * forward_flops(shape, length / 2)
        seqs = [list(map(int, rng.integers(1, vocab, length))) for _ in range(b)]
        cands = rng.integers(1, vocab, (b, K))
        session = causal.start(seqs)
        causal.score_candidates(session, cands)  # warm-up at this shape
        causal.commit(session, np.zeros(b, dtype=int))
        t0 = time.perf_counter()
        for _ in range(steps):
            causal.score_candidates(session, cands)
            causal.commit(session, np.zeros(b, dtype=int))
        out["causal"][length] = (time.perf_counter() - t0) / steps
        # the hf backend scores every candidate's whole text (the same GPT-2 reward model)
        texts = [causal.tokenizer.decode(s + [int(c)]) for s, row in zip(seqs, cands) for c in row]
        if length == lengths[0]:
            hf.score([""] * len(texts), texts)  # warm-up
        t0 = time.perf_counter()
        hf.score([""] * len(texts), texts)
        out["hf"][length] = time.perf_counter() - t0
        del session
    return out


def plot_reward_vs_prefix(curve: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for (backend, marker), color in zip((("hf", "o"), ("causal", "s")), ("tab:red", "tab:blue")):
        xs = sorted(curve[backend])
        ax.plot(xs, [1000 * curve[backend][x] for x in xs], marker=marker, color=color, label=f"{backend} backend")
        flops = curve["flops"][backend]  # Section 5.3's count, scaled to the first measured point
        scale = 1000 * curve[backend][xs[0]] / flops[xs[0]]
        ax.plot(xs, [scale * flops[x] for x in xs], linestyle=":", color=color, label=f"{backend}: FLOP count")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("prefix length (tokens)")
    ax.set_ylabel(f"reward time per step (ms), B={curve['b']}, k={curve['k']}")
    ax.set_title("reward cost per step against prefix length")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
