"""The token-at-a-time loop of Algorithm 1 over a micro-batch of prompts.

Each step makes one engine call for the top-k of every active sequence, one reward batch for
all B x k candidate prefixes, and one vectorised decode-rule call. Sequences leave on EOS, a stop
string, ``max_new_tokens`` or the LLM's context length, and come out as ``ResponseRow``s.
"""

from __future__ import annotations

import time

import numpy as np

from pargs_batch import decoding
from pargs_batch.io.batch import MicroBatchResult, Phases, PromptRow, ResponseRow
from pargs_batch.config import DecodeConfig
from pargs_batch.models.detok import IncrementalDetokenizer
from pargs_batch.runners.rows import RowMaker, Sequence, finish_reason, start_sequences
from pargs_batch.rewards.factory import score_rows


class Stepper:
    """Steps micro-batches through an ``Engine`` and (for guided methods) a reward scorer."""

    def __init__(self, engine, tokenizer, decode: DecodeConfig, rows: RowMaker, scorer=None):
        self.engine, self.tokenizer, self.decode, self.rows, self.scorer = engine, tokenizer, decode, rows, scorer
        self.method = decoding.METHODS[decode.method]
        if self.method.uses_reward and scorer is None:
            raise ValueError(f"method {decode.method} needs a reward scorer")
        self.detok = IncrementalDetokenizer(tokenizer)
        self.eos_ids = engine.eos_ids  # the tokenizer's EOS and generation_config's, as vLLM's requests use
        self.timings = Phases()
        self.tokens_generated = 0
        # a causal reward backend scores candidate token ids against its kept KV state
        self.incremental = self.method.uses_reward and getattr(scorer, "incremental", False)
        self.session = None

    def _start(self, prompts: list[PromptRow]) -> tuple[list[Sequence], list[tuple[tuple[int, int], ResponseRow]]]:
        return start_sequences(prompts, self.tokenizer, self.engine.max_model_len, self.rows, self.detok)

    def _finish_reason(self, seq: Sequence, token: int, old_len: int) -> str | None:
        return finish_reason(seq, token, old_len, self.decode, self.eos_ids, self.engine.max_model_len)

    def _step(self, active: list[Sequence]) -> tuple[np.ndarray, np.ndarray]:
        """One token for every active sequence; returns the chosen token ids, and which rows had no
        candidate with a finite reward (their token is meaningless: they end as errors)."""
        d, k, clock = self.decode, self.decode.top_k, time.perf_counter
        t0 = clock()
        prefill: list[int] = []
        cand_ids, cand_lps = self.engine.topk([s.prompt_ids + s.token_ids for s in active], k, prefill=prefill)
        t1 = clock()
        for s, n in zip(active, prefill):
            s.cost.add(prefill=n, decode=1)
        rewards, windows = None, None
        if self.incremental:
            rewards = self.scorer.score_candidates(self.session, cand_ids)
            self.timings.reward += clock() - t1
            read = self.scorer.step_tokens(k)  # causal: each candidate's token; autoregressive: the chosen one
            for s in active:
                s.cost.add(reward_tokens=read, reward_calls=read)
        elif self.method.uses_reward:
            windows = self.detok.decode_with([s.detok for s in active], cand_ids)
            texts = [self.detok.extended_text(s.detok, windows[b * k + j])
                     for b, s in enumerate(active) for j in range(k)]
            prompts = [s.context for s in active for _ in range(k)]
            t_text = clock()
            rewards, read, calls = score_rows(self.scorer, prompts, texts, [s.weights for s in active for _ in range(k)], k)
            self.timings.reward += clock() - t_text
            for s, n, c in zip(active, read, calls):
                s.cost.add(reward_tokens=n, reward_calls=c)
            self.timings.decode += t_text - t1
        t2 = clock()
        uniforms = decoding.keyed_uniforms(
            d.seed, np.array([s.id_hash for s in active], dtype=np.uint64),
            np.array([s.sample_index for s in active]), np.array([len(s.token_ids) for s in active]))
        choice = decoding.choose(d.method, cand_lps, rewards, d.beta, d.temperature, uniforms)
        rows = np.arange(len(active))
        tokens = cand_ids[rows, choice]
        if rewards is not None:
            for s, r in zip(active, rewards[rows, choice]):
                s.rewards.append(float(r))
        if windows is not None:
            chosen_windows = [windows[b * k + j] for b, j in enumerate(choice)]
        else:
            chosen_windows = self.detok.decode_with([s.detok for s in active], tokens[:, None])
        self.detok.commit([s.detok for s in active], tokens, chosen_windows)
        self.timings.engine += t1 - t0
        self.timings.decode += clock() - t2
        if self.incremental:
            t3 = clock()
            self.scorer.commit(self.session, choice)
            self.timings.reward += clock() - t3
        failed = decoding.unscorable(rewards) if rewards is not None else np.zeros(len(active), dtype=bool)
        return tokens, failed

    def run(self, prompts: list[PromptRow]) -> MicroBatchResult:
        """Generate ``num_samples`` responses for each prompt; one row per (prompt, sample)."""
        active, done = self._start(prompts)
        if self.incremental and active:
            t0 = time.perf_counter()
            self.session = self.scorer.start([s.prompt_ids for s in active])
            for s in active:
                s.cost.add(reward_tokens=len(s.prompt_ids))
            self.timings.reward += time.perf_counter() - t0
        while active:
            old_lens = [len(s.detok.text) for s in active]
            tokens, failed = self._step(active)
            still, kept = [], []
            for i, (seq, token, old_len) in enumerate(zip(active, tokens, old_lens)):
                if failed[i]:
                    done.append(((seq.position, seq.sample_index), self.rows.row(
                        seq.id, seq.sample_index, seq.prompt, seq.detok.text[:old_len], seq.token_ids, "error",
                        seq.rewards[:-1], self.rows.nonfinite_error(self.decode.top_k, f"at step {len(seq.token_ids)}")
                    ).charge(seq.cost)))
                    continue
                seq.token_ids.append(int(token))
                reason = self._finish_reason(seq, int(token), old_len)
                if reason is None:
                    still.append(seq)
                    kept.append(i)
                else:
                    done.append(((seq.position, seq.sample_index), self.rows.row(
                        seq.id, seq.sample_index, seq.prompt, seq.detok.text, seq.token_ids, reason,
                        seq.rewards if self.method.uses_reward else None).charge(seq.cost)))
            self.tokens_generated += len(active)
            if self.incremental and still:
                self.scorer.keep(self.session, kept)
            active = still
        self.session = None
        rows = [row for _, row in sorted(done, key=lambda keyed: keyed[0])]  # input order, repeated ids too
        return MicroBatchResult(rows, phase_s=self.timings, tokens=self.tokens_generated)
