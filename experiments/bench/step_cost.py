"""A guided step's reward cost by backend and k: what one step of the reward model costs for B
sequences at k = 2, 10 and the whole vocabulary, for the ``hf``, ``causal`` and ``autoregressive``
backends on the default world's models (the partial DeBERTa RM, the causal GPT-2 RM and - as the
autoregressive π_r - a causal LM of the LLM's size over its tokenizer).

``hf`` re-reads every candidate's whole prefix (B·k texts a step), ``causal`` reads k new tokens per
sequence against its kept KV state, ``autoregressive`` reads one (the chosen token) whatever k is,
and only it can score the whole vocabulary (k = 0 here)."""

from __future__ import annotations

import time

import numpy as np

WHOLE = 0


def reward_step_costs(world: dict, b: int, ks=(2, 10, WHOLE), prefix: int = 32, steps: int = 3,
                      backends: dict | None = None) -> dict:
    """Seconds of one guided reward step, per backend and k (None where a backend cannot); ``backends``
    (backend: model path) replaces the world's models."""
    from pargs_batch.config import RewardConfig
    from pargs_batch.rewards.factory import make_scorer

    backends = backends or {"hf": world["rm_partial"], "causal": world["rm_partial_causal"],
                            "autoregressive": world["rm_autoregressive"]}
    rng = np.random.default_rng(0)
    out = {"b": b, "prefix": prefix, "ks": list(ks), "models": backends, "seconds": {}}
    for backend, path in backends.items():
        scorer = make_scorer(RewardConfig(path=path, backend=backend, batch_size=1024))
        vocab = len(scorer.tokenizer)
        seqs = [list(map(int, rng.integers(1, vocab, prefix))) for _ in range(b)]
        out["seconds"][backend] = {}
        for k in ks:
            if k == WHOLE and backend != "autoregressive":
                out["seconds"][backend][str(k)] = None
                continue
            out["seconds"][backend][str(k)] = _time(scorer, backend, seqs, k, vocab, rng, steps)
    return out


def _time(scorer, backend: str, seqs: list[list[int]], k: int, vocab: int, rng, steps: int) -> float:
    b = len(seqs)
    if backend == "hf":  # every candidate's whole text
        cands = rng.integers(1, vocab, (b, k))
        texts = [scorer.tokenizer.decode(s + [int(c)]) for s, row in zip(seqs, cands) for c in row]
        scorer.score([""] * len(texts), texts)  # warm-up at this shape
        t0 = time.perf_counter()
        for _ in range(steps):
            scorer.score([""] * len(texts), texts)
        return (time.perf_counter() - t0) / steps
    session = scorer.start(seqs)

    def step():
        if k == WHOLE:  # every next token's reward, then the chosen one's forward at the next read
            logp = scorer.next_logprobs(session)
            tokens = logp.argmax(-1).cpu().numpy()
            scorer.commit_tokens(session, tokens, session.last + logp.max(-1).values.cpu().numpy())
        else:
            scorer.score_candidates(session, rng.integers(1, vocab, (b, k)))
            scorer.commit(session, np.zeros(b, dtype=int))

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):  # an autoregressive step's forward is the one its next read runs: n of them here
        step()
    return (time.perf_counter() - t0) / steps


def format_step_costs(costs: dict) -> str:
    ks = costs["ks"]
    names = ["whole vocab" if k == WHOLE else f"k={k}" for k in ks]
    lines = [f"reward step by backend and k, B={costs['b']}, prefix {costs['prefix']} tokens, ms:",
             f"  {'backend':<16}" + "".join(f"{n:>13}" for n in names)]
    for backend, row in costs["seconds"].items():
        cells = ["-" if row[str(k)] is None else f"{1000 * row[str(k)]:.1f}" for k in ks]
        lines.append(f"  {backend:<16}" + "".join(f"{c:>13}" for c in cells))
    return "\n".join(lines)


def flat_in_k(costs: dict) -> dict:
    """The target: the autoregressive step costs the same at k = 10 as at k = 2 (within 1.5x)."""
    row = costs["seconds"]["autoregressive"]
    ratio = row["10"] / row["2"]
    return {"target": "autoregressive reward step flat in k (k=10 / k=2 <= 1.5)", "measured": ratio, "met": ratio <= 1.5}
