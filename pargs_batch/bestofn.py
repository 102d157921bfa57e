"""Best-of-N: N whole responses of pi_ref per prompt in one vLLM call, the reward model keeps the best.

Each (prompt, sample) is one request with ``n = n_candidates`` and its own seed, derived from
(decode.seed, prompt id, sample index), so the candidates never depend on the batch. All
candidates of a micro-batch are scored whole in one reward batch; ties go to the lower index.
"""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np

from pargs_batch import decoding
from pargs_batch.batch import PromptRow, ResponseRow
from pargs_batch.config import DecodeConfig
from pargs_batch.stepper import response_row, whole_request_jobs


def request_seed(seed: int, id_hash: np.ndarray, sample_index: np.ndarray) -> np.ndarray:
    """A 63-bit seed per (prompt, sample): the keyed hash at step -1 (never a decode step)."""
    u = decoding.keyed_uniforms(seed, id_hash, sample_index, np.full(len(id_hash), 2**64 - 1, dtype=np.uint64))
    return (u * 2**63).astype(np.int64)


class BestOfN:
    def __init__(self, engine, scorer, tokenizer, decode: DecodeConfig, llm_name: str, reward_name: str | None):
        self.engine, self.scorer, self.tokenizer, self.decode = engine, scorer, tokenizer, decode
        self.llm_name, self.reward_name = llm_name, reward_name
        self.n = decode.n_candidates or decode.top_k
        self.timings: dict[str, float] = defaultdict(float)
        self.tokens_generated = 0

    def run(self, prompts: list[PromptRow]) -> tuple[list[ResponseRow], list[dict]]:
        """One row per (prompt, sample) with the best candidate, and every candidate as a dict."""
        d, clock = self.decode, time.perf_counter
        jobs, rows = whole_request_jobs(prompts, self.tokenizer, self.engine.max_model_len, d.num_samples,
                                        lambda p, s, e: self._row(p, s, "", [], "error", None, e))
        candidates: list[dict] = []
        if jobs:
            t0 = clock()
            seeds = request_seed(d.seed, decoding.id_hashes([p.id for p, _, _ in jobs]),
                                 np.array([s for _, _, s in jobs]))
            samples = self.engine.sample([ids for _, ids, _ in jobs], self.n, seeds.tolist(), d.max_new_tokens,
                                         d.top_k, d.temperature, d.stop, d.ignore_eos)
            t1 = clock()
            flat = [(job, c) for job, cands in zip(jobs, samples) for c in cands]
            rewards = self.scorer.score([job[0].prompt for job, _ in flat], [c[1] for _, c in flat])
            t2 = clock()
            rewards = rewards.reshape(len(jobs), self.n)
            best = np.argmax(rewards, axis=1)
            for j, ((p, _, s), cands) in enumerate(zip(jobs, samples)):
                ids, text, reason = cands[best[j]]
                rows[(p.id, s)] = self._row(p, s, text, ids, reason, [float(rewards[j, best[j]])])
                self.tokens_generated += sum(len(c[0]) for c in cands)
                candidates += [{"id": p.id, "sample_index": s, "candidate_index": i, "response": c[1],
                                "response_token_ids": c[0], "finish_reason": c[2],
                                "reward": float(rewards[j, i]), "selected": i == best[j]}
                               for i, c in enumerate(cands)]
            self.timings["engine"] += t1 - t0
            self.timings["reward"] += t2 - t1
            self.timings["decode"] += clock() - t2
        ordered = [rows[(p.id, s)] for p in prompts for s in range(d.num_samples)]
        return ordered, candidates

    def _row(self, p: PromptRow, s: int, text: str, ids: list[int], reason: str, rewards, error=None):
        return response_row(self.decode, self.llm_name, self.reward_name, p.id, s, p.prompt, text, ids, reason,
                            rewards, error)
