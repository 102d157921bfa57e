"""One request's guidance state inside vLLM's worker: ``Row``, kept under the request's own key (so
a request vLLM preempts and adds back continues it) until the driver fetches its record."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pargs_batch.guidance import GuideRecord


@dataclass
class Row:
    """One request's guidance state, kept under the request's key for as long as vLLM runs it."""

    key: str
    k: int
    beta: float
    guided: bool
    greedy: bool
    prompt: Any                   # the reward model's context: prompt text or conversation
    out_ids: list[int]            # the request's output tokens as vLLM holds them (V1: its live list)
    prompt_ids: list[int] = field(default_factory=list)
    detok: object = None          # DetokState (hf backend)
    alive: bool = True            # still in vLLM's batch
    in_session: bool = False      # its KV state is in the causal session (causal backend)
    seen: int = 0                 # output tokens already committed here
    committed: list[int] = field(default_factory=list)  # those tokens (a resume is checked against them)
    rewards: list[float] = field(default_factory=list)
    failed_at: int | None = None  # the step at which no candidate had a finite reward
    pending: tuple | None = None  # (candidate ids, their rewards, their detok windows) of the last step
    timings: dict = field(default_factory=lambda: defaultdict(float))
    reward_tokens: int = 0        # what the reward model read for the row, and the inputs it scored
    reward_calls: int = 0
    weights: list[float] | None = None  # its reward models' own weights (data.weights_column)
    keep: bool = True             # its record waits for the driver (False: dropped when it leaves)

    def record(self, last_token: int | None = None) -> GuideRecord:
        """What the driver gets of this row (``last_token``: the request's final token, which a
        whole-vocabulary row's last step can give the reward of)."""
        if self.pending is None:
            last = {}
        elif self.pending[0] is None:  # whole vocabulary: the final token's reward alone
            reward = self.reward_of(last_token) if last_token is not None and last_token >= 0 else None
            last = {} if reward is None else {int(last_token): reward}
        else:
            last = {int(t): float(r) for t, r in zip(self.pending[0], self.pending[1])}
        return GuideRecord(rewards=[None if r is None else float(r) for r in self.rewards], last_token_rewards=last,
                           timings=dict(self.timings), failed_at=self.failed_at, reward_tokens=self.reward_tokens,
                           reward_calls=self.reward_calls)

    def reward_of(self, token: int) -> float | None:
        if self.pending is None:
            return None
        ids, rewards, _ = self.pending
        if ids is None:  # whole vocabulary: r(x, y) + log pi_r(v | x, y) for every v
            return float(rewards[token]) if 0 <= token < rewards.shape[0] else None
        hit = np.nonzero(ids == token)[0]
        return float(rewards[hit[0]]) if len(hit) else None

