"""The guidance as it runs inside vLLM's worker process, whatever vLLM's runner: ``Guide``.

``engine.mode: fused`` makes a whole response one vLLM request; a logits processor (``v1`` or ``v2``,
whichever interface the runner takes) maps vLLM's batch layout onto a ``Guide``, which rewrites each
guided row's logits before vLLM samples:

    logits[v] = log pi_ref(v | x, y) + beta * r(y.v | x)   for v in the top-k,  -inf elsewhere

so vLLM's own sampler draws from softmax(score / T) (``pargs``, ``topk`` with beta = 0) with the
request's seed. Greedy rows (``args``, ``pargs-greedy``) keep only the candidate ``decoding.greedy``
picks and run at temperature 0. Candidates are ordered, scored and chosen by ``decoding``'s
functions, the same statement of the rule the stepped loop calls, so both modes break ties alike.

Per-request settings arrive as a ``guidance.GuideArgs`` in ``SamplingParams.extra_args``. Each
request's record - the reward of every chosen token, its share of the guidance time - is kept under
the request's own key until the driver fetches it as a ``guidance.GuideRecord``
(``records.RecordsExtension``). This module imports no vLLM, so the
guidance can be driven and timed where vLLM cannot be installed (``jobs/gpu_check.py``).
"""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np

from pargs_batch import decoding
from pargs_batch.config import RewardConfig
from pargs_batch.guidance import GuideArgs, GuideInfo, GuideSetup
from pargs_batch.in_engine.rule import guided_scores, top_candidates
from pargs_batch.in_engine.state import Row
from pargs_batch.rewards.factory import score_rows

SPECULATIVE_REFUSAL = ("engine.mode=fused does not support speculative decoding (vLLM would hand the guidance one "
                       "logits row per draft token): remove the engine's speculative_config")


class Guide:
    """The guidance, whatever vLLM's runner: per-request rows keyed by the request's own key (so a
    request vLLM preempts and adds back continues its row), the reward scorer (and, for the causal
    backend, its KV session), and the rewrite of logits by ``decoding``'s rule. ``v1`` and ``v2``
    only map vLLM's batch layout onto it."""

    def __init__(self, vllm_config):
        if getattr(vllm_config, "speculative_config", None) is not None:
            raise ValueError(SPECULATIVE_REFUSAL)  # at engine build, not at the first step with drafts
        setup = GuideSetup.from_config(vllm_config.additional_config)
        self.records: dict[str, Row] = {}  # request key -> row, until the driver fetches it
        self.scorer = self.detok = self.tokenizer = None
        self.incremental = False
        self.session, self.order = None, []  # causal backend: the RM's KV state, and whose row is whose
        self.last_step = None  # (candidate ids, rewards, row -> its line in them) of the last step
        self.reservation, self.load_s = None, 0.0
        self.stats = defaultdict(float)  # since start: steps, guided row-steps, candidates scored, seconds
        if setup is None:
            return
        from transformers import AutoTokenizer

        from pargs_batch.models.detok import IncrementalDetokenizer

        t0 = time.perf_counter()
        self.tokenizer = AutoTokenizer.from_pretrained(setup.tokenizer)
        self.detok = IncrementalDetokenizer(self.tokenizer)
        if setup.reward:
            from pargs_batch.in_engine.memory import LargestStep, Reservation
            from pargs_batch.rewards.factory import make_scorer

            self.scorer = make_scorer(RewardConfig(**setup.reward), len(self.tokenizer))
            self.incremental = getattr(self.scorer, "incremental", False)
            if getattr(vllm_config, "scheduler_config", None) is not None:
                self.reservation = Reservation(self.scorer, LargestStep.of(vllm_config))
        self.load_s = time.perf_counter() - t0

    def info(self) -> GuideInfo:
        """What the driver's summary reports of the guidance in this worker: seconds to load its
        tokenizer and reward model, and the device memory reserved for the reward model's largest
        step (0 on CPU)."""
        return GuideInfo(reward_load_s=round(self.load_s, 3),
                         reserved_bytes=self.reservation.bytes if self.reservation else 0,
                         largest_step=None if self.reservation is None else dict(vars(self.reservation.step)))

    @staticmethod
    def check(params) -> None:
        """Refuse a request whose guidance arguments are malformed (``GuideArgs.from_params`` raises)."""
        GuideArgs.from_params(params)

    def row_for(self, args: GuideArgs, prompt_ids: list[int] | None, out_ids: list[int] | None) -> Row:
        """A new row, or - for a request vLLM preempted and now adds back with its output so far -
        the row it had, following vLLM's output from where it left off (None: the caller reads
        the prompt and the output later and calls ``set_prompt`` and ``resume`` itself)."""
        if self.reservation is not None:
            self.reservation.release()  # a real request: vLLM has sized its KV cache
        row = self.records.get(args.key)
        if row is not None:
            row.alive, row.in_session = True, False
            if out_ids is not None:
                self.resume(row, out_ids)
            return row
        row = Row(key=args.key, k=int(args.k), beta=float(args.beta), guided=bool(args.guided) and self.scorer is not None,
                  greedy=bool(args.greedy), prompt=args.prompt, out_ids=[] if out_ids is None else out_ids,
                  weights=args.weights, keep=bool(args.keep))
        if prompt_ids is not None:
            self.set_prompt(row, prompt_ids)
        self.records[row.key] = row
        return row

    def leave(self, row: Row | None) -> None:
        """A row's request left vLLM's batch (finished, aborted or preempted). A row nobody will
        fetch (``keep`` false: a served request) is dropped now; a request vLLM adds back after a
        preemption then starts a new row from its prompt and output so far."""
        if row is None:
            return
        row.alive = False
        if not row.keep and self.records.get(row.key) is row:
            del self.records[row.key]

    def counters(self) -> dict:
        """Totals since start, for a server's metrics: guided steps, row-steps and candidates scored,
        the reward model's and the detokeniser's seconds; and the rows held now (vLLM tells a logits
        processor that a request left at its next step, so a finished request's row is freed then)."""
        return {**{name: float(self.stats[name]) for name in ("steps", "rows", "candidates", "reward_s", "decode_s")},
                "rows_held": len(self.records)}

    def set_prompt(self, row: Row, prompt_ids: list[int]) -> None:
        row.prompt_ids = list(prompt_ids)
        if row.guided and not self.incremental:
            row.detok = self.detok.start(row.prompt_ids)

    def resume(self, row: Row, out_ids: list[int]) -> None:
        """A request back in vLLM's batch with ``out_ids``, its output so far. vLLM may bring it back
        with fewer tokens than the row committed (tokens dropped on resume, e.g. when KV blocks could
        not be restored): the row is cut back to the tokens both hold - rewards, text and, for the
        causal backend, its KV state (re-encoded at the next step) - and guides on from there."""
        n = min(row.seen, len(out_ids))
        differ = np.nonzero(np.asarray(out_ids[:n], dtype=np.int64) != np.asarray(row.committed[:n], dtype=np.int64))[0]
        keep = int(differ[0]) if len(differ) else n
        row.out_ids = out_ids
        if keep == row.seen:
            return
        row.seen, row.pending = keep, None
        del row.committed[keep:], row.rewards[keep:]
        if row.failed_at is not None and row.failed_at >= keep:
            row.failed_at = None  # the forced stop was dropped too
        if row.guided and not self.incremental:  # the text of what is kept
            row.detok = self.detok.start(row.prompt_ids)
            for token in row.committed:
                self.detok.commit([row.detok], [token], self.detok.decode_with([row.detok], [[token]]))

    def commit(self, rows) -> None:
        """Record the tokens vLLM sampled since the last step (their rewards, text, KV state)."""
        if self.incremental:
            self._commit_session()
        for row in rows:
            self._sync(row)

    def _commit_session(self) -> None:
        """Causal and autoregressive backends: keep each row's chosen token in the RM's KV state and
        record its reward; rows that left vLLM's batch, or did not advance by exactly one token, leave
        the session (a live one is encoded afresh, with everything it has, at its next step)."""
        session = self.session
        if session is None or session.pending is None:
            return
        order = self.order
        ids, rewards, position = self.last_step if self.last_step is not None else (None, None, {})
        token = np.array([row.out_ids[row.seen] if len(row.out_ids) == row.seen + 1 and row.pending is not None
                          else -1 for row in order], dtype=np.int64)
        took = np.zeros(len(order), dtype=bool)
        choice = np.zeros(len(order), dtype=np.int64)
        reward = np.zeros(len(order), dtype=np.float32)
        # which of the last step's candidates each top-k row took: one comparison for the whole session
        at = np.array([position.get(id(row), -1) for row in order], dtype=np.int64)
        if ids is not None:
            match = (ids[at] == token[:, None]) & ((at >= 0) & (token >= 0))[:, None]
            took, choice = match.any(1), match.argmax(1)
            reward = rewards[at, choice].astype(np.float32)
        for i, row in enumerate(order):  # whole-vocabulary rows: the token is its own candidate
            if row.pending is not None and row.pending[0] is None and token[i] >= 0:
                value = row.reward_of(int(token[i]))
                took[i], reward[i] = value is not None, value if value is not None else 0.0
        kept = []
        for i, row in enumerate(order):
            if took[i]:
                row.rewards.append(float(reward[i]))
                row.committed.append(int(token[i]))
                row.seen += 1
                row.pending = None
                if row.alive and row.in_session:
                    kept.append(i)
                    continue
            row.in_session = False
        t0 = time.perf_counter()
        if hasattr(self.scorer, "commit_tokens"):
            self.scorer.commit_tokens(session, np.where(took, token, 0), reward)
        else:
            self.scorer.commit(session, np.where(took, choice, 0))
        self.scorer.keep(session, kept)
        share = (time.perf_counter() - t0) / max(len(kept), 1)
        self.order = [self.order[i] for i in kept]
        for row in self.order:
            row.timings["reward"] += share


    def _sync(self, row: Row | None) -> None:
        """Commit the tokens vLLM sampled since the last step: their rewards and text (the reward of
        the first from the last step's candidates; later ones - missed while the row was out of
        the batch - have none)."""
        if row is None or (self.incremental and row.guided and row.in_session):
            return  # the causal session commits its rows' tokens
        while row.seen < len(row.out_ids) and row.out_ids[row.seen] != -1:
            token = int(row.out_ids[row.seen])
            row.committed.append(token)
            if self.incremental and row.guided:  # out of the session: catch up before re-encoding
                row.rewards.append(row.reward_of(token))
                row.pending = None
                row.seen += 1
                continue
            if row.guided:
                t0 = time.perf_counter()
                window = None
                row.rewards.append(row.reward_of(token))
                if row.pending is not None:
                    ids, _, windows = row.pending
                    hit = np.nonzero(ids == token)[0]
                    window = windows[hit[0]] if len(hit) else None
                if window is None:
                    window = self.detok.decode_with([row.detok], [[token]])[0]
                self.detok.commit([row.detok], [token], [window])
                row.timings["decode"] += time.perf_counter() - t0
            row.pending = None
            row.seen += 1

    # ------------------------------------------------------------ the guidance


    def guide(self, logits, index: list[int], rows: list[Row]):
        """Rewrite the logits rows ``index`` (belonging to ``rows``) by the rule; the rest stay."""
        import torch

        if not index:
            return logits
        self.last_step = None
        vocab_rows = [n for n, r in enumerate(rows) if r.k == 0]  # k = 0: the whole vocabulary
        if vocab_rows:
            self._guide_whole(logits, [index[n] for n in vocab_rows], [rows[n] for n in vocab_rows])
            if len(vocab_rows) == len(rows):
                return logits
            keep = [n for n, r in enumerate(rows) if r.k != 0]
            index, rows = [index[n] for n in keep], [rows[n] for n in keep]
        # every row of the batch, in order (the usual case): rewritten in place, no gather and no copy back
        whole = len(index) == logits.shape[0] and all(i == n for n, i in enumerate(index))
        at = None if whole else torch.tensor(index, device=logits.device)
        kmax = max(r.k for r in rows)
        logp = torch.log_softmax((logits if whole else logits[at]).float(), dim=-1)
        ids_np, lp_np = top_candidates(logp, kmax)
        rewards = np.zeros(ids_np.shape, dtype=np.float32)
        guided = [n for n, r in enumerate(rows) if r.guided]
        t1 = time.perf_counter()
        windows: dict[int, list[str]] = {}
        if guided and self.incremental:
            rewards[guided] = self._score_causal([rows[n] for n in guided], ids_np[guided])
            t2, t3 = t1, time.perf_counter()
            read = self.scorer.step_tokens(kmax)  # causal: each candidate's token; autoregressive: the chosen one
            for n in guided:
                rows[n].reward_tokens += read
                rows[n].reward_calls += read
        elif guided:
            states = [rows[n].detok for n in guided]
            flat = self.detok.decode_with(states, ids_np[guided])
            texts, prompts = [], []
            for m, n in enumerate(guided):
                windows[n] = flat[m * kmax:(m + 1) * kmax]
                texts += [self.detok.extended_text(rows[n].detok, w) for w in windows[n]]
                prompts += [rows[n].prompt] * kmax
            t2 = time.perf_counter()
            scored, read, calls = score_rows(self.scorer, prompts, texts,
                                             [rows[n].weights for n in guided for _ in range(kmax)], kmax)
            rewards[guided] = scored
            t3 = time.perf_counter()
            for n, tokens, c in zip(guided, read, calls):
                rows[n].reward_tokens += int(tokens)
                rows[n].reward_calls += int(c)
        else:
            t2 = t3 = t1
        score = guided_scores(lp_np, rewards, np.array([r.beta for r in rows]), np.array([r.k for r in rows]),
                              np.array([r.greedy for r in rows]))
        new = logits.fill_(-float("inf")) if whole else \
            torch.full(logp.shape, -float("inf"), dtype=logits.dtype, device=logits.device)
        new.scatter_(1, torch.as_tensor(ids_np, device=logits.device),
                     torch.as_tensor(score, dtype=torch.float32, device=logits.device).to(new.dtype))
        for n in np.nonzero(decoding.unscorable(rewards[guided]))[0] if guided else []:
            row = rows[guided[n]]  # no finite reward: end the request now, the driver writes an error row
            if row.failed_at is None:
                row.failed_at = len(row.rewards)
            stop = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else int(ids_np[guided[n], 0])
            new[guided[n]] = -float("inf")
            new[guided[n], stop] = 0.0
        if not whole:
            logits[at] = new
        for n, r in enumerate(rows):
            r.pending = (ids_np[n], rewards[n], windows.get(n))
        self.last_step = (ids_np, rewards, {id(r): n for n, r in enumerate(rows)})
        if guided:
            stats = self.stats
            stats["steps"] += 1
            stats["rows"] += len(guided)
            stats["candidates"] += len(guided) * kmax
            stats["reward_s"] += t3 - t2
            stats["decode_s"] += t2 - t1
        share = 1.0 / len(rows)
        for r in rows:  # per-row shares of this step's guidance time, for the run's phase split
            r.timings["decode"] += (t2 - t1) * share
            r.timings["reward"] += (t3 - t2) * share
        return logits


    def _guide_whole(self, logits, index: list[int], rows: list[Row]) -> None:
        """Rows over the whole vocabulary (k = 0): logits become log pi_ref(v) + beta * log pi_r(v)
        for every token v (an autoregressive reward model's next-token log-probabilities; the
        sequence's reward so far is the same for every v), so vLLM samples from
        pi_ref * pi_r^beta at the request's temperature; a greedy row keeps only its argmax."""
        import torch

        at = torch.tensor(index, device=logits.device)
        logp = torch.log_softmax(logits[at].float(), dim=-1)
        score = logp.clone()
        guided = [n for n, r in enumerate(rows) if r.guided]
        t1 = time.perf_counter()
        if guided:
            step, last = self._session_logp([rows[n] for n in guided])
            v = min(step.shape[1], score.shape[1])
            beta = torch.tensor([rows[n].beta for n in guided], device=score.device)[:, None]
            part = score[guided]
            part[:, :v] += beta * step[:, :v].to(score.device)
            part[:, v:] = -float("inf")
            score[guided] = part
            for m, n in enumerate(guided):
                row = rows[n]
                row.pending = (None, (last[m] + step[m]).cpu(), None)
                row.reward_tokens += 1
                row.reward_calls += 1
                if not torch.isfinite(step[m]).any() and row.failed_at is None:
                    row.failed_at = len(row.rewards)  # no finite reward anywhere: the request ends here
                    stop = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
                    score[n] = -float("inf")
                    score[n, stop] = 0.0
        t2 = time.perf_counter()
        for n, row in enumerate(rows):
            if row.greedy:  # the argmax alone stays finite (ties to the lowest id), as vLLM's greedy takes it
                best = int(torch.argmax(score[n]))
                value = score[n, best].clone()
                score[n] = -float("inf")
                score[n, best] = value
            if not row.guided:
                row.pending = None
        logits[at] = score.to(logits.dtype)
        if guided:
            self.stats["steps"] += 1
            self.stats["rows"] += len(guided)
            self.stats["candidates"] += len(guided) * int(score.shape[1])
            self.stats["reward_s"] += t2 - t1
        for r in rows:
            r.timings["reward"] += (t2 - t1) / len(rows)

    def _session_logp(self, rows: list[Row]):
        """(log pi_r of every next token, as a (len(rows), V) tensor; each row's reward so far) from
        the autoregressive session, encoding rows new to it first."""
        if not getattr(self.scorer, "whole_vocabulary", False):
            raise ValueError("decode.top_k=0 (the whole vocabulary) needs reward.backend=autoregressive")
        self._join_session(rows)
        at = {id(r): i for i, r in enumerate(self.order)}
        where = [at[id(r)] for r in rows]
        step = self.scorer.next_logprobs(self.session)
        self.session.pending = True
        return step[where], self.session.last[where]

    def _join_session(self, rows: list[Row]) -> None:
        """Encode the rows new to the KV session (prompt and every committed token) into it."""
        fresh = [r for r in rows if not r.in_session]
        for r in fresh:
            self._sync(r)  # tokens committed while it was out of the session
        if fresh:
            start = self.scorer.start([r.prompt_ids + list(r.out_ids[: r.seen]) for r in fresh],
                                      [r.seen for r in fresh])
            for r in fresh:
                r.reward_tokens += len(r.prompt_ids) + r.seen
            self.session = self.scorer.merge(self.session, start)
            self.order += fresh
            for r in fresh:
                r.in_session = True

    def _score_causal(self, rows: list[Row], cand: np.ndarray) -> np.ndarray:
        """Rewards (len(rows), k) from the causal session, encoding rows new to it first."""
        self._join_session(rows)
        where = {id(r): i for i, r in enumerate(self.order)}
        ordered = np.full((len(self.order), cand.shape[1]), -1, dtype=np.int64)
        for r, c in zip(rows, cand):
            ordered[where[id(r)]] = c
        scores = self.scorer.score_candidates(self.session, ordered)
        return scores[[where[id(r)] for r in rows]]


