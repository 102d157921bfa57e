"""``smc``: reward-guided sequential Monte Carlo over a micro-batch (the math is ``pargs_batch.smc``).

Every (prompt, sample) holds ``decode.n_particles`` partial responses. All prompts' live particles
step together a token at a time through the engine (one top-k request per distinct prefix: the
copies a resampling makes share one request, and vLLM's prefix cache serves the prefix they share)
and the reward model; each token is drawn by the proposal (``ref``: top-k sampling; ``guided``: the
PARGS rule) with a uniform keyed by (seed, prompt id, sample, particle slot, step), slot 0 keyed as
the tokenwise methods key a row, so one ``ref`` particle is top-k sampling's row. Every
``decode.block_tokens`` tokens (and when a (prompt, sample)'s last particle finishes) the
particles are weighted by the reward model's increment and, when the effective sample size is below
``decode.ess_threshold`` · N, resampled; a finished particle is kept and no longer extended. When
all have finished, one response is returned: drawn by final weight (``sample``) or the highest
final reward (``best``). With a reward model that keeps KV state (``causal``, ``autoregressive``)
a resampled particle's copies take its KV rows.

A row's ``rewards`` are its lineage's rewards where the reward model read it (every token, or - the
``ref`` proposal with the ``hf`` backend, which reads only at boundaries - every block); its cost
columns count every particle's tokens and reward calls; ``log_z``, ``resamples`` and ``ess`` say
what the population did. Each particle's final response is a candidate row
(``output.keep_all_candidates``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field

import numpy as np

from pargs_batch import decoding, smc
from pargs_batch.config import DecodeConfig
from pargs_batch.io.batch import CandidateRow, MicroBatchResult, Phases, PromptRow
from pargs_batch.models.detok import DetokState, IncrementalDetokenizer
from pargs_batch.rewards.factory import score_rows
from pargs_batch.runners.rows import RowMaker, Sequence, finish_reason, start_sequences


@dataclass(eq=False)
class Particle:
    prompt_ids: list[int]         # shared with its (prompt, sample): never copied
    detok: DetokState
    slot: int                     # its place among its (prompt, sample)'s particles: keys its draws
    token_ids: list[int] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    reason: str | None = None     # eos | stop | length once finished; error when it lost every candidate
    r_now: float = 0.0            # reward of its response so far (0 before its first token)
    r_last: float = 0.0           # ... at the last block boundary
    pending: float = 0.0          # Σ log π̃_ref − log q of its tokens since the last boundary
    logw: float = 0.0             # log-weight since the last resampling
    stale: bool = False           # its reward has not read its latest tokens (ref proposal, hf backend)
    row: int = -1                 # its row in the reward model's KV session (stateful backends)

    def copy(self) -> Particle:
        return dataclasses.replace(self, detok=own_detok(self.detok), token_ids=list(self.token_ids),
                                   rewards=list(self.rewards))


def own_detok(state: DetokState) -> DetokState:
    """A detokenisation state of its own (its token window not shared with ``state``'s)."""
    return dataclasses.replace(state, tokens=list(state.tokens))


@dataclass(eq=False)
class Job:
    """One (prompt, sample) and its particles."""

    seq: Sequence
    slots: np.ndarray             # the particle slots' keys (smc.particle_hashes)
    particles: list[Particle]
    log_z: float = 0.0
    resamples: int = 0
    prompt_key: int = 0           # equal for jobs with the same prompt ids (their prefixes share requests)
    context_key: int = 0          # equal for jobs the reward model reads alike (their texts share scores)
    fresh: bool = False           # resampled at the last boundary (its next requests measure the prefix cache)
    done: bool = False


class SMC:
    """Particles stepped through the engine and reward model; see the module docstring."""

    def __init__(self, engine, tokenizer, decode: DecodeConfig, rows: RowMaker, scorer):
        if scorer is None:
            raise ValueError("method smc needs a reward scorer")
        self.engine, self.tokenizer, self.decode, self.rows, self.scorer = engine, tokenizer, decode, rows, scorer
        self.detok = IncrementalDetokenizer(tokenizer)
        self.timings = Phases()
        self.tokens_generated = 0
        self.session = None
        self.guided = decode.smc_proposal == "guided"
        self.rule = "pargs" if self.guided else "topk"
        self.incremental = getattr(scorer, "incremental", False)
        # vLLM prefix-cache use: [prompt tokens, of them served from the cache, requests, particles] of
        # the steps right after a resampling and of every step
        self.cache = {"after_resample": [0, 0, 0, 0], "all": [0, 0, 0, 0]}

    # ------------------------------------------------------------------------------------------- steps
    def _topk(self, live: list[tuple[Job, Particle]]) -> tuple[np.ndarray, np.ndarray]:
        """The top-k of every live particle, one request per distinct (prompt, response) prefix."""
        index, unique, owner, at = {}, [], [], []
        for job, p in live:
            key = (job.prompt_key, tuple(p.token_ids))
            if key not in index:
                index[key] = len(unique)
                unique.append(p.prompt_ids + p.token_ids)
                owner.append(job)
            at.append(index[key])
        prefill: list[int] = []
        ids, lps = self.engine.topk(unique, self.decode.top_k, prefill=prefill)
        for job, prefix, computed in zip(owner, unique, prefill):
            job.seq.cost.add(prefill=computed)
            for name in ("all", "after_resample") if job.fresh else ("all",):
                self.cache[name][0] += len(prefix)
                self.cache[name][1] += len(prefix) - computed
                self.cache[name][2] += 1
        for job, _ in live:
            for name in ("all", "after_resample") if job.fresh else ("all",):
                self.cache[name][3] += 1
        for job, _ in live:
            job.fresh = False  # only the first step after a resampling counts as "after" it
        return ids[at], lps[at]

    def _candidate_rewards(self, live, cand_ids: np.ndarray) -> tuple[np.ndarray, list | None]:
        """Rewards (live, k) of every candidate (the guided proposal), and the detokenised windows."""
        k = self.decode.top_k
        if self.incremental:
            rewards = self.scorer.score_candidates(self.session, cand_ids)
            read = self.scorer.step_tokens(k)
            for job, _ in live:
                job.seq.cost.add(reward_tokens=read, reward_calls=read)
            return rewards, None
        windows = self.detok.decode_with([p.detok for _, p in live], cand_ids)
        texts = [self.detok.extended_text(p.detok, windows[b * k + j]) for b, (_, p) in enumerate(live) for j in range(k)]
        rewards = self._score_texts([job for job, _ in live for _ in range(k)], texts).reshape(len(live), k)
        return rewards, windows

    def _score_texts(self, jobs: list[Job], texts: list[str]) -> np.ndarray:
        """The reward of each (job, response text), each distinct pair scored once and charged to its job."""
        index, first = {}, []
        for x, (job, text) in enumerate(zip(jobs, texts)):
            if (job.context_key, text) not in index:
                index[(job.context_key, text)] = len(first)
                first.append(x)
        rewards, read, calls = score_rows(self.scorer, [jobs[x].seq.context for x in first], [texts[x] for x in first],
                                          [jobs[x].seq.weights for x in first], 1)
        for x, n, c in zip(first, read, calls):
            jobs[x].seq.cost.add(reward_tokens=n, reward_calls=c)
        return rewards[:, 0][[index[(job.context_key, text)] for job, text in zip(jobs, texts)]]

    def _step(self, live: list[tuple[Job, Particle]], t: int) -> None:
        """One token for every live particle, drawn by the proposal."""
        d, clock = self.decode, time.perf_counter
        t0 = clock()
        cand_ids, cand_lps = self._topk(live)
        for job, _ in live:
            job.seq.cost.add(decode=1)
        t1 = clock()
        self.timings.engine += t1 - t0
        rewards, windows = self._candidate_rewards(live, cand_ids) if self.guided else (None, None)
        t2 = clock()
        self.timings.reward += t2 - t1
        uniforms = decoding.keyed_uniforms(d.seed, np.array([job.slots[p.slot] for job, p in live], dtype=np.uint64),
                                           np.array([job.seq.sample_index for job, _ in live]), np.full(len(live), t))
        choice = decoding.choose(self.rule, cand_lps, rewards, d.beta, d.temperature, uniforms)
        rows = np.arange(len(live))
        tokens = cand_ids[rows, choice]
        correction = smc.proposal_correction(cand_lps, rewards, d.beta, d.temperature, choice)
        chosen = rewards[rows, choice] if rewards is not None else None
        t3 = clock()
        if self.incremental and not self.guided:  # the ref proposal still keeps the reward's KV state
            chosen = self.scorer.score_candidates(self.session, tokens[:, None])[:, 0]
            read = self.scorer.step_tokens(1)
            for job, _ in live:
                job.seq.cost.add(reward_tokens=read, reward_calls=read)
        if self.incremental:
            self.scorer.commit(self.session, choice if self.guided else np.zeros(len(live), dtype=np.int64))
        t4 = clock()
        self.timings.reward += t4 - t3
        states = [p.detok for _, p in live]
        if windows is not None:
            chosen_windows = [windows[b * d.top_k + j] for b, j in enumerate(choice)]
        else:
            chosen_windows = self.detok.decode_with(states, tokens[:, None])
        old_lens = [len(s.text) for s in states]
        self.detok.commit(states, tokens, chosen_windows)
        for b, (job, p) in enumerate(live):
            if chosen is not None and not np.isfinite(chosen[b]):  # no candidate the reward model could score
                p.reason, p.logw = "error", float("-inf")
                continue
            p.token_ids.append(int(tokens[b]))
            p.pending += float(correction[b])
            if chosen is not None:
                p.r_now = float(chosen[b])
                p.rewards.append(p.r_now)
            else:
                p.stale = True
            p.reason = finish_reason(p, int(tokens[b]), old_lens[b], d, self.engine.eos_ids, self.engine.max_model_len)
        self.tokens_generated += len(live)
        self.timings.decode += (t3 - t2) + (clock() - t4)

    # ------------------------------------------------------------------------------------ boundaries
    def _boundary(self, jobs: list[Job], t: int) -> None:
        """Weight the particles of ``jobs`` (each at a block boundary or with every particle finished),
        then resample those still growing whose ESS is below the threshold."""
        d = self.decode
        stale = [(job, p) for job in jobs for p in job.particles if p.stale]
        if stale:  # the ref proposal with a stateless reward model: read the responses now
            t0 = time.perf_counter()
            rewards = self._score_texts([job for job, _ in stale], [p.detok.text for _, p in stale])
            self.timings.reward += time.perf_counter() - t0
            for (_, p), r in zip(stale, rewards):
                p.stale = False
                if np.isfinite(r):
                    p.r_now = float(r)
                    p.rewards.append(p.r_now)
                else:
                    p.reason, p.logw = "error", float("-inf")
        for job in jobs:
            for p in job.particles:
                if np.isfinite(p.logw):
                    p.logw += d.beta * (p.r_now - p.r_last) + p.pending
                p.r_last, p.pending = p.r_now, 0.0
            logw = np.array([p.logw for p in job.particles])
            growing = any(p.reason is None for p in job.particles)
            if growing and smc.should_resample(logw, d.ess_threshold):
                job.log_z += smc.log_mean_exp(logw)
                u = smc.resample_uniforms(d.seed, job.slots, job.seq.sample_index, t, d.resampling)
                parents = smc.ancestors(logw, u, d.resampling)
                job.particles = [job.particles[a].copy() for a in parents]
                for slot, p in enumerate(job.particles):
                    p.logw, p.slot = 0.0, slot
                job.resamples += 1
                job.fresh = True

    def _keep_session(self, jobs: list[Job]) -> None:
        """The stateful reward model's rows for the particles still growing, in order (a resampled
        particle's copies each take its row)."""
        order = [p for job in jobs for p in job.particles if p.reason is None]
        self.scorer.keep(self.session, [p.row for p in order])
        for i, p in enumerate(order):
            p.row = i

    # ------------------------------------------------------------------------------------------- rows
    def _finish(self, job: Job, rows: dict, candidates: list) -> None:
        d, seq = self.decode, job.seq
        logw = np.array([p.logw for p in job.particles])
        job.log_z += smc.log_mean_exp(logw)
        final = np.array([p.r_now if p.reason != "error" else np.nan for p in job.particles])
        pick = smc.returned(logw, final, d.smc_return, smc.return_uniform(d.seed, seq.id_hash, seq.sample_index))
        p = job.particles[pick]
        if not np.isfinite(final).any() or not np.isfinite(logw).any():
            row = self.rows.row(seq.id, seq.sample_index, seq.prompt, "", [], "error", None,
                                self.rows.nonfinite_error(d.n_particles, "(every particle)"))
        else:
            row = self.rows.row(seq.id, seq.sample_index, seq.prompt, p.detok.text, p.token_ids, p.reason, p.rewards)
        row.log_z, row.resamples, row.ess = job.log_z, job.resamples, smc.ess(logw)
        rows[(seq.position, seq.sample_index)] = row.charge(seq.cost)
        candidates += [CandidateRow(id=seq.id, sample_index=seq.sample_index, candidate_index=i, response=c.detok.text,
                                    response_token_ids=c.token_ids, finish_reason=c.reason, reward=float(final[i]),
                                    selected=i == pick) for i, c in enumerate(job.particles)]
        job.done = True

    def run(self, prompts: list[PromptRow]) -> MicroBatchResult:
        """``num_samples`` rows per prompt, each SMC's returned response."""
        d, n = self.decode, self.decode.n_particles
        seqs, errors = start_sequences(prompts, self.tokenizer, self.engine.max_model_len, self.rows, self.detok)
        rows = dict(errors)
        jobs = [Job(s, smc.particle_hashes(s.id_hash, n),
                    [Particle(s.prompt_ids, own_detok(s.detok), i) for i in range(n)])
                for s in seqs]
        prompt_keys, context_keys = {}, {}
        for job in jobs:
            job.prompt_key = prompt_keys.setdefault(tuple(job.seq.prompt_ids), len(prompt_keys))
            context = (json.dumps(job.seq.context, sort_keys=True, default=str), json.dumps(job.seq.weights))
            job.context_key = context_keys.setdefault(context, len(context_keys))
        if self.incremental and jobs:
            t0 = time.perf_counter()
            self.session = self.scorer.start([s.prompt_ids for s in seqs])
            for s in seqs:
                s.cost.add(reward_tokens=len(s.prompt_ids))
            for j, job in enumerate(jobs):
                for p in job.particles:
                    p.row = j
            self._keep_session(jobs)  # each prompt's KV rows copied to its n particles
            self.timings.reward += time.perf_counter() - t0
        candidates: list[CandidateRow] = []
        t, active = 0, jobs
        while active:
            self._step([(job, p) for job in active for p in job.particles if p.reason is None], t)
            t += 1
            due = [job for job in active if t % d.block_tokens == 0 or all(p.reason is not None for p in job.particles)]
            if due:
                self._boundary(due, t)
            for job in due:
                if all(p.reason is not None for p in job.particles):
                    self._finish(job, rows, candidates)
            active = [job for job in active if not job.done]
            if self.incremental and active:
                t0 = time.perf_counter()
                self._keep_session(active)
                self.timings.reward += time.perf_counter() - t0
        self.session = None
        return MicroBatchResult([rows[key] for key in sorted(rows)], candidates=candidates, phase_s=self.timings,
                                tokens=self.tokens_generated)
