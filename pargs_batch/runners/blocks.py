"""The block methods: vLLM writes blocks of ``decode.block_tokens`` tokens, the reward model judges
the response prefixes between blocks.

- ``blockwise`` / ``blockwise-greedy`` (the idea of blockwise controlled decoding, Mudgal et al.
  2024): at every block, K = ``decode.n_candidates`` continuations of the response so far are
  sampled from pi_ref (top-k, temperature) and one is kept. Both rules aim at the same tilted
  distribution the tokenwise rule samples, pi_ref(block) * exp(beta * r):
  ``blockwise`` draws one of the K samples with probability softmax(beta * r / T) (sampling
  importance resampling: the samples already follow pi_ref), ``blockwise-greedy`` keeps the sample
  with the highest log pi_ref(block) + beta * r (the mode among them). With one-token blocks and K
  large enough to draw every top-k token, they are ``pargs`` and ``pargs-greedy``; with one block as
  long as the response, ``blockwise-greedy`` at large beta is Best-of-K.
- ``early-rejection`` (the idea of Speculative Rejection, Sun et al. 2024): N = ``n_candidates``
  responses start together; every ``block_tokens`` tokens the reward model scores their partial
  responses and the worst ``decode.reject_fraction`` of those still alive is dropped (at least one
  kept); when every survivor has finished, the one with the best final reward is written.

Each block is one vLLM request per sequence, continuing its token ids under prefix caching; its
seed is keyed by (seed, prompt id, sample, block, candidate), and the choice's uniform by
(seed, prompt id, sample, tokens so far), so a row never depends on its batch. A row's ``rewards``
holds the reward of its response prefix at each block boundary (one per block, not per token).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from pargs_batch import decoding
from pargs_batch.io.batch import Cost, MicroBatchResult, Phases, PromptRow
from pargs_batch.config import DecodeConfig
from pargs_batch.runners.rows import RowMaker, first_stop, in_input_order, whole_request_jobs
from pargs_batch.rewards.factory import score_rows


@dataclass
class Track:
    """One candidate response, grown block by block."""

    ids: list[int] = field(default_factory=list)
    text: str = ""
    reason: str | None = None     # eos | stop | length once finished
    logprob: float = 0.0          # log pi_ref of its last block (blockwise-greedy's score)
    reward: float = float("nan")  # reward of its response so far
    rewards: list[float] = field(default_factory=list)  # its reward at each block boundary


@dataclass
class Job:
    """One (prompt, sample) of the micro-batch."""

    position: int
    prompt: PromptRow
    prompt_ids: list[int]
    sample_index: int
    id_hash: np.uint64
    tracks: list[Track]
    cost: Cost = field(default_factory=Cost)
    live: list[int] = field(default_factory=list)    # early rejection: the candidates still in the race
    checks: list[int] = field(default_factory=list)  # early rejection: how many were left after each check


class BlockRunner:
    """What the block methods share: growing tracks by a block through vLLM, and scoring them."""

    def __init__(self, engine, tokenizer, decode: DecodeConfig, rows: RowMaker, scorer):
        self.engine, self.tokenizer, self.decode, self.rows, self.scorer = engine, tokenizer, decode, rows, scorer
        self.n = decode.n_candidates or decode.top_k
        self.timings = Phases()
        self.tokens = 0

    def _jobs(self, prompts: list[PromptRow], tracks: int) -> tuple[list[Job], dict]:
        jobs, rows = whole_request_jobs(prompts, self.tokenizer, self.engine.max_model_len, self.rows)
        hashes = decoding.id_hashes([p.id for _, p, _, _ in jobs])
        return [Job(i, p, ids, s, h, [Track() for _ in range(tracks)], live=list(range(tracks)))
                for (i, p, ids, s), h in zip(jobs, hashes)], rows

    def _budget(self, job: Job, track: Track) -> int:
        """Tokens the track's next block may have: the block, capped by the response and context limits."""
        d = self.decode
        return min(d.block_tokens, d.max_new_tokens - len(track.ids),
                   self.engine.max_model_len - len(job.prompt_ids) - len(track.ids))

    def _grow(self, job: Job, track: Track, block: tuple) -> Track:
        """``track`` followed by ``block`` (token ids, text, vLLM's finish reason, log pi_ref): a new
        track, finished when the block ended on EOS or a stop string or a length limit is reached.
        vLLM finds stop strings inside a block; one that straddles the boundary is found here, and
        the ids end, as in the stepped loop, with the token that completes it."""
        d = self.decode
        ids, text, reason, logprob = block
        new = Track(ids=track.ids + list(ids), text=track.text + text, logprob=logprob, rewards=list(track.rewards))
        cut = first_stop(new.text, len(track.text), d.stop) if d.stop else -1
        if cut >= 0:
            new.text, new.reason = new.text[:cut], "stop"
            for j in range(1, len(ids) + 1):  # the first token whose text completes the stop string
                if first_stop(self.tokenizer.decode(track.ids + list(ids[:j]), skip_special_tokens=True),
                              len(track.text), d.stop) >= 0:
                    new.ids = track.ids + list(ids[:j])
                    break
        elif reason in ("eos", "stop"):
            new.reason = reason
        elif len(new.ids) >= d.max_new_tokens or len(job.prompt_ids) + len(new.ids) >= self.engine.max_model_len:
            new.reason = "length"
        return new

    def _generate(self, items: list[tuple[Job, Track, int, int]], n: int) -> list[list[Track]]:
        """For each (job, track, block index, candidate index): n continuations of the track by a block."""
        d, out = self.decode, [None] * len(items)
        groups: dict[int, list[int]] = defaultdict(list)  # one engine call per block budget
        for x, (job, track, _, _) in enumerate(items):
            groups[self._budget(job, track)].append(x)
        t0 = time.perf_counter()
        for budget, members in groups.items():
            sel = [items[x] for x in members]
            seeds = decoding.block_seeds(d.seed, np.array([j.id_hash for j, _, _, _ in sel], dtype=np.uint64),
                                         np.array([j.sample_index for j, _, _, _ in sel]),
                                         np.array([b for _, _, b, _ in sel]), np.array([c for _, _, _, c in sel]))
            prefill: list[int] = []
            blocks = self.engine.sample([j.prompt_ids + t.ids for j, t, _, _ in sel], n, seeds.tolist(), budget,
                                        d.top_k, d.temperature, d.stop, d.ignore_eos, prefill=prefill, logprob=True)
            for x, (job, track, _, _), cands, computed in zip(members, sel, blocks, prefill):
                made = sum(len(c[0]) for c in cands)
                job.cost.add(prefill=computed, decode=made)
                self.tokens += made
                out[x] = [self._grow(job, track, c) for c in cands]
        self.timings.engine += time.perf_counter() - t0
        return out

    def _score(self, pairs: list[tuple[Job, Track]]) -> None:
        """Set each track's reward (and append it to its rewards), charging its job."""
        if not pairs:
            return
        t0 = time.perf_counter()
        rewards, read, calls = score_rows(self.scorer, [j.prompt.context for j, _ in pairs],
                                          [t.text for _, t in pairs], [j.prompt.weights for j, _ in pairs], 1)
        for (job, track), r, tokens, c in zip(pairs, rewards[:, 0], read, calls):
            track.reward = float(r)
            track.rewards.append(float(r))
            job.cost.add(reward_tokens=tokens, reward_calls=c)
        self.timings.reward += time.perf_counter() - t0

    def _row(self, job: Job, track: Track, rows: dict, error: str | None = None) -> None:
        """The job's row: ``track``, or - with ``error`` - what it had before the failure."""
        p, s = job.prompt, job.sample_index
        row = self.rows.row(p.id, s, p.prompt, track.text, track.ids, "error" if error else track.reason,
                            track.rewards, error)
        rows[(job.position, s)] = row.charge(job.cost)

    def _result(self, prompts: list[PromptRow], rows: dict) -> MicroBatchResult:
        return MicroBatchResult(in_input_order(prompts, self.decode.num_samples, rows),
                                phase_s=self.timings, tokens=self.tokens)


class Blockwise(BlockRunner):
    """``blockwise`` and ``blockwise-greedy``: K samples per block, one kept."""

    def run(self, prompts: list[PromptRow]) -> MicroBatchResult:
        d = self.decode
        greedy = decoding.METHODS[d.method].greedy
        jobs, rows = self._jobs(prompts, 1)
        block, active = 0, jobs
        while active:
            grown = self._generate([(j, j.tracks[0], block, 0) for j in active], self.n)
            self._score([(j, t) for j, cands in zip(active, grown) for t in cands])
            t0 = time.perf_counter()
            r = np.array([[t.reward for t in cands] for cands in grown], dtype=np.float64)
            failed = decoding.unscorable(r)
            # the rule's scores; a candidate without a finite reward never wins, whatever beta
            base = np.array([[t.logprob for t in cands] for cands in grown]) if greedy else np.zeros_like(r)
            score = np.where(np.isfinite(r), decoding.scores(base, r, d.beta), -np.inf)
            score[failed] = 0.0  # no choice to make: the row ends as an error
            if greedy:
                choice = decoding.greedy(score)
            else:
                u = decoding.keyed_uniforms(d.seed, np.array([j.id_hash for j in active], dtype=np.uint64),
                                            np.array([j.sample_index for j in active]),
                                            np.array([len(j.tracks[0].ids) for j in active]))
                choice = decoding.sample(score, u, d.temperature)
            self.timings.decode += time.perf_counter() - t0
            still = []
            for j, cands, c, bad in zip(active, grown, choice, failed):
                if bad:
                    self._row(j, j.tracks[0], rows, self.rows.nonfinite_error(self.n, f"at block {block}"))
                    continue
                j.tracks[0] = cands[c]
                if j.tracks[0].reason is None:
                    still.append(j)
                else:
                    self._row(j, j.tracks[0], rows)
            active, block = still, block + 1
        return self._result(prompts, rows)


def _worst_first(track: Track) -> float:
    return track.reward if np.isfinite(track.reward) else -np.inf


class EarlyRejection(BlockRunner):
    """``early-rejection``: N candidates, the worst share dropped at every check, the best survivor kept.
    ``checks`` (after ``run``) maps each (id, sample) to the candidates left after each of its checks."""

    def run(self, prompts: list[PromptRow]) -> MicroBatchResult:
        frac = self.decode.reject_fraction
        jobs, rows = self._jobs(prompts, self.n)
        block = 0
        while True:
            items = [(j, j.tracks[c], block, c) for j in jobs for c in j.live if j.tracks[c].reason is None]
            if not items:
                break
            grown = self._generate(items, 1)
            for (j, _, _, c), (track,) in zip(items, grown):
                j.tracks[c] = track
            self._score([(j, j.tracks[c]) for j, _, _, c in items])
            for j in jobs:
                if all(j.tracks[c].reason is not None for c in j.live):
                    continue  # all finished: nothing left to save by rejecting
                drop = min(int(frac * len(j.live)), len(j.live) - 1)
                # the worst first (a non-finite reward is the worst); among equals the later candidate goes
                order = sorted(j.live, key=lambda c: (_worst_first(j.tracks[c]), -c))
                j.live = sorted(order[drop:])
                j.checks.append(len(j.live))
            block += 1
        self.checks = {(j.prompt.id, j.sample_index): j.checks for j in jobs}
        for j in jobs:
            best = j.tracks[max(j.live, key=lambda c: (_worst_first(j.tracks[c]), -c))]
            error = None if np.isfinite(best.reward) else self.rows.nonfinite_error(self.n, "(partial responses)")
            self._row(j, best, rows, error)
        return self._result(prompts, rows)
