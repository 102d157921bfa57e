"""``engine.mode: fused``, the driver's side: a micro-batch as whole vLLM requests, guided inside the
engine by ``in_engine``'s logits processor; rows like the stepped loop's.

Each request carries its guidance (a ``guidance.GuideArgs``) in ``SamplingParams.extra_args`` and a seed derived
from (seed, prompt id, sample index), so a row never depends on its batch. After the requests
finish, the processor's records (the reward of every chosen token, the guidance seconds) are
fetched as ``guidance.GuideRecord``s through ``in_engine.records.RecordsExtension``, so the ``rewards``
column needs no second pass.
"""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np

from pargs_batch import decoding
from pargs_batch.io.batch import Cost, MicroBatchResult, Phases, PromptRow
from pargs_batch.config import DecodeConfig
from pargs_batch.guidance import GuideArgs, GuideRecord
from pargs_batch.runners.rows import RowMaker, in_input_order, whole_request_jobs


class FusedRunner:
    """A micro-batch as whole vLLM requests guided in-engine; rows like ``Stepper``'s."""

    def __init__(self, engine, tokenizer, decode: DecodeConfig, rows: RowMaker):
        self.engine, self.tokenizer, self.decode, self.rows = engine, tokenizer, decode, rows
        self.method = decoding.METHODS[decode.method]

    def run(self, prompts: list[PromptRow]) -> MicroBatchResult:
        d, method = self.decode, self.method
        jobs, rows = whole_request_jobs(prompts, self.tokenizer, self.engine.max_model_len, self.rows)
        result = MicroBatchResult([])
        if jobs:
            seeds = decoding.request_seed(d.seed, decoding.id_hashes([p.id for _, p, _, _ in jobs]),
                                          np.array([s for _, _, _, s in jobs]))
            keys = [f"{id(self)}/{i}/{s}" for i, _, _, s in jobs]
            extra = [GuideArgs(key=key, k=d.top_k, beta=d.beta if method.uses_reward else 0.0, guided=method.uses_reward,
                               greedy=method.greedy, prompt=p.context, weights=p.weights).to_wire()
                     for key, (_, p, _, _) in zip(keys, jobs)]
            t0 = time.perf_counter()
            prefill: list[int] = []
            outputs = self.engine.guided([ids for _, _, ids, _ in jobs], seeds.tolist(), extra, d.max_new_tokens,
                                         0.0 if method.greedy else d.temperature, d.stop, d.ignore_eos,
                                         prefill=prefill)
            records = self.engine.fused_records(keys, [ids[-1] if ids else -1 for ids, _, _ in outputs])
            wall = time.perf_counter() - t0
            inside = defaultdict(float)
            for key, (i, p, _, s), (token_ids, text, reason), computed in zip(keys, jobs, outputs, prefill):
                record = records.get(key)
                seen = record or GuideRecord()
                cost = Cost()
                cost.add(computed, len(token_ids), seen.reward_tokens, seen.reward_calls)
                rewards = seen.rewards_for(token_ids) if method.uses_reward and record is not None else None
                for name, value in seen.timings.items():
                    inside[name] += value
                if seen.failed_at is not None:
                    n = seen.failed_at
                    rows[(i, s)] = self.rows.row(
                        p.id, s, p.prompt, self.tokenizer.decode(token_ids[:n], skip_special_tokens=True),
                        token_ids[:n], "error", rewards[:n] if rewards else None,
                        self.rows.nonfinite_error(d.top_k, f"at step {n}")).charge(cost)
                else:
                    rows[(i, s)] = self.rows.row(p.id, s, p.prompt, text, token_ids, reason, rewards).charge(cost)
                result.tokens += len(token_ids)
            result.phase_s = Phases(reward=inside["reward"], decode=inside["decode"],
                                    engine=wall - inside["reward"] - inside["decode"])
        result.rows = in_input_order(prompts, d.num_samples, rows)
        return result
