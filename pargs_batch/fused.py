"""``engine.mode: fused``: reward guidance inside vLLM's continuous batch, as a V1 logits processor.

In ``stepped`` mode every token leaves the engine (one ``generate`` call with ``max_tokens=1``
per step). Here the whole response is one request, and ``PargsLogitsProcessor`` - loaded into the
engine's process, with the reward model beside it - rewrites each guided row's logits before
vLLM samples:

    logits[v] = log pi_ref(v | x, y) + beta * r(y.v | x)   for v in the top-k,  -inf elsewhere

so vLLM's own sampler draws from softmax(score / T) (``pargs``, ``topk`` with beta = 0) with the
request's seed - derived from (seed, prompt id, sample index), so a row never depends on its
batch. Greedy rows (``args``, ``pargs-greedy``) keep only the candidate ``decoding.greedy`` picks
and run at temperature 0. Candidates are ordered, scored and chosen by ``decoding``'s functions,
the same statement of the rule the stepped loop calls, so both modes break ties alike.

Per-request settings travel in ``SamplingParams.extra_args["pargs_batch"]``; each row's prompt
ids and live output ids arrive through ``BatchUpdate``. The processor lives in vLLM's worker
process (whatever the engine's process layout) and keeps each request's record - the reward of
every chosen token, its share of the guidance time - under the request's key; the driver fetches
and drops them with ``collective_rpc`` through ``RecordsExtension``, vLLM's worker-extension hook,
so the ``rewards`` column needs no second pass.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from vllm.v1.sample.logits_processor import (
    BatchUpdate,
    LogitsProcessor,
    MoveDirectionality,
)

from pargs_batch import decoding
from pargs_batch.batch import MicroBatchResult, PromptRow
from pargs_batch.config import DecodeConfig, RewardConfig
from pargs_batch.rows import RowMaker, in_input_order, whole_request_jobs

EXTRA_KEY = "pargs_batch"


@dataclass
class _Row:
    key: str
    k: int
    beta: float
    guided: bool
    greedy: bool
    prompt: str
    out_ids: list[int]            # vLLM's live list of the request's output tokens
    prompt_ids: list[int] = field(default_factory=list)
    detok: object = None          # DetokState (hf backend)
    alive: bool = True            # still in vLLM's batch
    in_session: bool = False      # its KV state is in the causal session (causal backend)
    seen: int = 0                 # output tokens already committed here
    rewards: list[float] = field(default_factory=list)
    pending: tuple | None = None  # (candidate ids, their rewards, their detok windows) of the last step
    timings: dict = field(default_factory=lambda: defaultdict(float))

    def reward_of(self, token: int) -> float | None:
        if self.pending is None:
            return None
        ids, rewards, _ = self.pending
        hit = np.nonzero(ids == token)[0]
        return float(rewards[hit[0]]) if len(hit) else None


class PargsLogitsProcessor(LogitsProcessor):
    """Replaces a guided row's logits by log pi_ref + beta * r on its top-k, -inf elsewhere."""

    def __init__(self, vllm_config, device, is_pin_memory: bool):
        cfg = (vllm_config.additional_config or {}).get(EXTRA_KEY)
        self.rows: dict[int, _Row] = {}  # vLLM's batch index -> row
        self.records: dict[str, _Row] = {}  # request key -> row, until the driver fetches it
        self.scorer = self.detok = self.tokenizer = None
        self.incremental = False
        self.session, self.order = None, []  # causal backend: the RM's KV state, and whose row is whose
        if cfg is None:
            return
        from transformers import AutoTokenizer

        from pargs_batch.detok import IncrementalDetokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(cfg["tokenizer"])
        self.detok = IncrementalDetokenizer(self.tokenizer)
        if cfg.get("reward"):
            from pargs_batch.scorers import make_scorer

            self.scorer = make_scorer(RewardConfig(**cfg["reward"]), len(self.tokenizer))
            self.incremental = getattr(self.scorer, "incremental", False)

    @classmethod
    def validate_params(cls, params):
        args = (params.extra_args or {}).get(EXTRA_KEY)
        if args is not None and not {"key", "k", "beta", "guided", "greedy"} <= set(args):
            raise ValueError(f"extra_args[{EXTRA_KEY!r}] needs key, k, beta, guided and greedy")

    def is_argmax_invariant(self) -> bool:
        return False  # it changes which token is the argmax

    # ------------------------------------------------------------ batch bookkeeping

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is not None:
            for index in batch_update.removed:
                self._retire(self.rows.pop(index, None))
            for index, params, prompt_ids, out_ids in batch_update.added:
                self._retire(self.rows.pop(index, None))
                args = (params.extra_args or {}).get(EXTRA_KEY) if params is not None else None
                if args is not None:
                    self.rows[index] = self._new_row(args, prompt_ids or [], out_ids)
            for a, b, direction in batch_update.moved:
                row_a, row_b = self.rows.pop(a, None), self.rows.pop(b, None)
                if row_a is not None:
                    self.rows[b] = row_a
                if direction == MoveDirectionality.SWAP and row_b is not None:
                    self.rows[a] = row_b
        if self.incremental:
            self._commit_session()
        for row in self.rows.values():
            self._sync(row)

    def _retire(self, row: _Row | None) -> None:
        if row is not None:
            row.alive = False
            if not self.incremental:
                self._sync(row)

    def _commit_session(self) -> None:
        """Causal backend: keep each row's chosen candidate in the RM's KV state; rows that left
        vLLM's batch (or did not advance by exactly one token) leave the session."""
        session = self.session
        if session is None or session.pending is None:
            return
        choice, kept = np.zeros(len(self.order), dtype=np.int64), []
        for i, row in enumerate(self.order):
            if row.alive and len(row.out_ids) - row.seen == 1 and row.pending is not None:
                hit = np.nonzero(row.pending[0] == int(row.out_ids[row.seen]))[0]
                if len(hit):
                    choice[i] = hit[0]
                    row.rewards.append(float(row.pending[1][hit[0]]))
                    row.seen += 1
                    kept.append(i)
                    continue
            row.in_session = False  # a live row is encoded afresh at its next step
        t0 = time.perf_counter()
        self.scorer.commit(session, choice)
        self.scorer.keep(session, kept)
        share = (time.perf_counter() - t0) / max(len(kept), 1)
        self.order = [self.order[i] for i in kept]
        for row in self.order:
            row.timings["reward"] += share

    def _new_row(self, args: dict, prompt_ids: list[int], out_ids: list[int]) -> _Row:
        guided = bool(args["guided"]) and self.scorer is not None
        row = _Row(key=args["key"], k=int(args["k"]), beta=float(args["beta"]), guided=guided,
                   greedy=bool(args["greedy"]), prompt=args.get("prompt", ""), out_ids=out_ids, prompt_ids=list(prompt_ids),
                   detok=self.detok.start(prompt_ids) if guided and not self.incremental else None)
        self.records[row.key] = row
        return row

    def _sync(self, row: _Row | None) -> None:
        """Commit the tokens vLLM sampled since the last step: their rewards and text."""
        if row is None or (self.incremental and row.guided):
            return  # the causal session commits its rows' tokens
        while row.seen < len(row.out_ids):
            token = int(row.out_ids[row.seen])
            if row.guided:
                t0 = time.perf_counter()
                window = None
                if row.pending is not None:
                    ids, _, windows = row.pending
                    hit = np.nonzero(ids == token)[0]
                    window = windows[hit[0]] if len(hit) else None
                    row.rewards.append(row.reward_of(token))
                if window is None:
                    window = self.detok.decode_with([row.detok], [[token]])[0]
                self.detok.commit([row.detok], [token], [window])
                row.timings["decode"] += time.perf_counter() - t0
            row.pending = None
            row.seen += 1

    # ------------------------------------------------------------ the guidance

    def apply(self, logits):
        import torch

        index = [i for i in self.rows if i < logits.shape[0]]
        if not index:
            return logits
        rows = [self.rows[i] for i in index]
        at = torch.tensor(index, device=logits.device)
        kmax = max(r.k for r in rows)
        logp = torch.log_softmax(logits[at].float(), dim=-1)
        ids_np, lp_np = top_candidates(logp, kmax)
        rewards = np.zeros(ids_np.shape, dtype=np.float32)
        guided = [n for n, r in enumerate(rows) if r.guided]
        t1 = time.perf_counter()
        windows: dict[int, list[str]] = {}
        if guided and self.incremental:
            rewards[guided] = self._score_causal([rows[n] for n in guided], ids_np[guided])
            t2, t3 = t1, time.perf_counter()
        elif guided:
            states = [rows[n].detok for n in guided]
            flat = self.detok.decode_with(states, ids_np[guided])
            texts, prompts = [], []
            for m, n in enumerate(guided):
                windows[n] = flat[m * kmax:(m + 1) * kmax]
                texts += [self.detok.extended_text(rows[n].detok, w) for w in windows[n]]
                prompts += [rows[n].prompt] * kmax
            t2 = time.perf_counter()
            rewards[guided] = self.scorer.score(prompts, texts).reshape(len(guided), kmax)
            t3 = time.perf_counter()
        else:
            t2 = t3 = t1
        score = guided_scores(lp_np, rewards, np.array([r.beta for r in rows]), np.array([r.k for r in rows]),
                              np.array([r.greedy for r in rows]))
        new = torch.full_like(logp, -float("inf"))
        new.scatter_(1, torch.as_tensor(ids_np, device=logits.device),
                     torch.as_tensor(score, dtype=new.dtype, device=logits.device))
        logits[at] = new.to(logits.dtype)
        for n, r in enumerate(rows):
            r.pending = (ids_np[n], rewards[n], windows.get(n))
        share = 1.0 / len(rows)
        for r in rows:  # per-row shares of this step's guidance time, for the run's phase split
            r.timings["decode"] += (t2 - t1) * share
            r.timings["reward"] += (t3 - t2) * share
        return logits

    def _score_causal(self, rows: list[_Row], cand: np.ndarray) -> np.ndarray:
        """Rewards (len(rows), k) from the causal session, encoding rows new to it first."""
        fresh = [r for r in rows if not r.in_session]
        if fresh:
            start = self.scorer.start([r.prompt_ids + list(r.out_ids[: r.seen]) for r in fresh])
            self.session = self.scorer.merge(self.session, start)
            self.order += fresh
            for r in fresh:
                r.in_session = True
        where = {id(r): i for i, r in enumerate(self.order)}
        ordered = np.full((len(self.order), cand.shape[1]), -1, dtype=np.int64)
        for r, c in zip(rows, cand):
            ordered[where[id(r)]] = c
        scores = self.scorer.score_candidates(self.session, ordered)
        return scores[[where[id(r)] for r in rows]]


def top_candidates(logp, kmax: int) -> tuple[np.ndarray, np.ndarray]:
    """The kmax most likely tokens of each row of a (B, vocab) torch log-softmax, as (ids, logprobs)
    numpy arrays in ``decoding.order_candidates``' order (the order the stepped engine reports)."""
    top_lp, top_ids = logp.topk(kmax, dim=-1)
    return decoding.order_candidates(top_ids.cpu().numpy().astype(np.int64),
                                     top_lp.cpu().numpy().astype(np.float64), kmax)


def guided_scores(logprobs: np.ndarray, rewards: np.ndarray, beta: np.ndarray, k: np.ndarray,
                  greedy: np.ndarray) -> np.ndarray:
    """What a row's candidates' logits become: ``decoding.scores`` on the first k of each row,
    -inf beyond k; a greedy row keeps only ``decoding.greedy``'s choice finite, so vLLM's argmax
    at temperature 0 takes the same token the stepped loop would."""
    score = decoding.scores(logprobs, rewards, beta)
    score[np.arange(score.shape[1])[None, :] >= np.asarray(k)[:, None]] = -np.inf
    rows = np.nonzero(greedy)[0]
    if len(rows):
        keep = decoding.greedy(score[rows])
        chosen = score[rows, keep]
        score[rows] = -np.inf
        score[rows, keep] = chosen
    return score


def engine_kwargs(reward: RewardConfig | None, tokenizer: str) -> dict:
    """What ``vllm.LLM`` needs to load the processor (and its reward model) into the engine."""
    from dataclasses import asdict

    return {"logits_processors": [PargsLogitsProcessor],
            "worker_extension_cls": f"{__name__}.RecordsExtension",
            "additional_config": {EXTRA_KEY: {"reward": asdict(reward) if reward and reward.path else None,
                                              "tokenizer": tokenizer}}}


class RecordsExtension:
    """Mixed into vLLM's worker class (``worker_extension_cls``): the driver's way to the records of
    the processor in this worker, through ``LLM.collective_rpc``."""

    def pargs_batch_records(self, keys: list[str]) -> dict[str, dict]:
        """Pop the records of ``keys`` from this worker's processor: the reward of each chosen token,
        the last step's [candidate token, reward] pairs, and the row's guidance seconds."""
        found = {}
        for processor in self.model_runner.input_batch.logitsprocs.all:
            if isinstance(processor, PargsLogitsProcessor):
                for key in keys:
                    row = processor.records.pop(key, None)
                    if row is not None:
                        last = [] if row.pending is None else \
                            [[int(t), float(r)] for t, r in zip(row.pending[0], row.pending[1])]
                        found[key] = {"rewards": [None if r is None else float(r) for r in row.rewards],
                                      "last_token_rewards": last, "timings": dict(row.timings)}
        return found


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
            seeds = decoding.request_seed(d.seed, decoding.id_hashes([p.id for p, _, _ in jobs]),
                                          np.array([s for _, _, s in jobs]))
            keys = [f"{id(self)}/{p.id}/{s}" for p, _, s in jobs]
            extra = [{EXTRA_KEY: {"key": key, "k": d.top_k, "beta": d.beta if method.uses_reward else 0.0,
                                  "guided": method.uses_reward, "greedy": method.greedy, "prompt": p.prompt}}
                     for key, (p, _, _) in zip(keys, jobs)]
            t0 = time.perf_counter()
            outputs = self.engine.guided([ids for _, ids, _ in jobs], seeds.tolist(), extra, d.max_new_tokens,
                                         0.0 if method.greedy else d.temperature, d.stop, d.ignore_eos)
            records = self.engine.fused_records(keys)
            wall = time.perf_counter() - t0
            inside = defaultdict(float)
            for key, (p, _, s), (token_ids, text, reason) in zip(keys, jobs, outputs):
                record = records.get(key)
                rewards = None
                if method.uses_reward and record is not None:
                    rewards = list(record["rewards"][: len(token_ids)])
                    if len(rewards) < len(token_ids):
                        rewards.append(dict(map(tuple, record["last_token_rewards"])).get(token_ids[-1]))
                if record is not None:
                    for name, value in record["timings"].items():
                        inside[name] += value
                rows[(p.id, s)] = self.rows.row(p.id, s, p.prompt, text, token_ids, reason, rewards)
                result.tokens += len(token_ids)
            result.phase_s = {"reward": inside["reward"], "decode": inside["decode"],
                              "engine": wall - inside["reward"] - inside["decode"]}
        result.rows = in_input_order(prompts, d.num_samples, rows)
        return result
