"""Best-of-N: N whole responses of pi_ref per prompt in one vLLM call, the reward model keeps the best.

Each (prompt, sample) is one request with ``n = n_candidates`` and its own seed, derived from
(decode.seed, prompt id, sample index), so the candidates never depend on the batch. All
candidates of a micro-batch are scored whole in one reward batch; ties go to the lower index.
"""

from __future__ import annotations

import time

import numpy as np

from pargs_batch import decoding
from pargs_batch.io.batch import CandidateRow, Cost, MicroBatchResult, Phases, PromptRow
from pargs_batch.config import DecodeConfig
from pargs_batch.runners.rows import RowMaker, in_input_order, whole_request_jobs
from pargs_batch.rewards.factory import score_rows


class BestOfN:
    def __init__(self, engine, tokenizer, decode: DecodeConfig, rows: RowMaker, scorer):
        self.engine, self.tokenizer, self.decode, self.rows, self.scorer = engine, tokenizer, decode, rows, scorer
        self.n = decode.n_candidates or decode.top_k

    def run(self, prompts: list[PromptRow]) -> MicroBatchResult:
        """One row per (prompt, sample) with the best candidate, and every candidate."""
        d, clock = self.decode, time.perf_counter
        jobs, rows = whole_request_jobs(prompts, self.tokenizer, self.engine.max_model_len, self.rows)
        result = MicroBatchResult([])
        if jobs:
            t0 = clock()
            seeds = decoding.request_seed(d.seed, decoding.id_hashes([p.id for _, p, _, _ in jobs]),
                                          np.array([s for _, _, _, s in jobs]))
            prefill: list[int] = []
            samples = self.engine.sample([ids for _, _, ids, _ in jobs], self.n, seeds.tolist(), d.max_new_tokens,
                                         d.top_k, d.temperature, d.stop, d.ignore_eos, prefill=prefill)
            t1 = clock()
            flat = [(job, c) for job, cands in zip(jobs, samples) for c in cands]
            rewards, read, calls = score_rows(self.scorer, [job[1].context for job, _ in flat], [c[1] for _, c in flat],
                                              [job[1].weights for job, _ in flat], self.n)
            t2 = clock()
            best = decoding.greedy(np.where(np.isfinite(rewards), rewards, -np.inf))  # non-finite never wins
            failed = decoding.unscorable(rewards)
            for j, ((i, p, _, s), cands) in enumerate(zip(jobs, samples)):
                ids, text, reason = cands[best[j]]
                if failed[j]:
                    rows[(i, s)] = self.rows.row(p.id, s, p.prompt, "", [], "error", None, self.rows.nonfinite_error(self.n, "(whole responses)"))
                else:
                    rows[(i, s)] = self.rows.row(p.id, s, p.prompt, text, ids, reason, [float(rewards[j, best[j]])])
                cost = Cost()
                cost.add(prefill[j], sum(len(c[0]) for c in cands), read[j], calls[j])
                rows[(i, s)].charge(cost)
                result.tokens += cost.llm_decode_tokens
                result.candidates += [CandidateRow(id=p.id, sample_index=s, candidate_index=c_i, response=c[1],
                                                   response_token_ids=c[0], finish_reason=c[2],
                                                   reward=float(rewards[j, c_i]), selected=bool(c_i == best[j]))
                                      for c_i, c in enumerate(cands)]
            result.phase_s = Phases(engine=t1 - t0, reward=t2 - t1, decode=clock() - t2)
        result.rows = in_input_order(prompts, d.num_samples, rows)
        return result
