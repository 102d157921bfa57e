"""What the driver and the guidance inside vLLM's worker say to each other (``engine.mode: fused``).

Below both ``runners.fused`` (the driver's side) and ``in_engine`` (the worker's), and importing
neither vLLM nor torch:

- ``GuideSetup``: what the engine is built with (``additional_config``): the reward model(s) and
  the LLM's tokenizer;
- ``GuideArgs``: one request's guidance (``SamplingParams.extra_args``; from an HTTP request, where
  vLLM takes only flat values in ``vllm_xargs``, as a JSON string);
- ``GuideRecord``: what the guidance recorded for one request, fetched with ``collective_rpc``;
- ``GuideInfo``: the guidance's start-up facts in one worker.

vLLM carries ``extra_args``, ``additional_config`` and RPC results between its processes with
msgpack, which takes plain dicts and lists, not our classes: each dataclass crosses as
``to_wire()`` and is read back with ``from_wire()``, which checks what arrived.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

EXTRA_KEY = "pargs_batch"  # our key in SamplingParams.extra_args and in vLLM's additional_config


def _from_wire(cls, data: dict, where: str):
    names = {f.name for f in fields(cls)}
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    missing, unknown = required - set(data), set(data) - names
    if missing or unknown:
        raise ValueError(f"{where}: {cls.__name__} needs {sorted(required)}"
                         + (f", missing {sorted(missing)}" if missing else "")
                         + (f", unknown {sorted(unknown)}" if unknown else ""))
    return cls(**data)


@dataclass(frozen=True)
class GuideSetup:
    """The engine's guidance: the reward config as a dict (``RewardConfig`` fields; None: no reward
    model, every request unguided) and the path of the LLM's tokenizer."""

    tokenizer: str
    reward: dict | None = None

    def to_wire(self) -> dict:
        return {EXTRA_KEY: asdict(self)}

    @classmethod
    def from_config(cls, additional_config: dict | None) -> GuideSetup | None:
        data = (additional_config or {}).get(EXTRA_KEY)
        return None if data is None else _from_wire(cls, data, f"additional_config[{EXTRA_KEY!r}]")


@dataclass(frozen=True)
class GuideArgs:
    """One request's guidance: its key (the row's identity across preemptions), k, beta, whether a
    reward model guides it, whether it is greedy, the reward model's context (prompt text or
    conversation), its reward models' own weights, and whether its record is kept for the driver
    to fetch (batch runs) or dropped when the request leaves the engine (``pargs-batch serve``,
    where nobody fetches it)."""

    key: str
    k: int
    beta: float
    guided: bool
    greedy: bool
    prompt: Any = ""
    weights: list[float] | None = None
    keep: bool = True

    def to_wire(self) -> dict:
        return {EXTRA_KEY: asdict(self)}

    def to_http(self) -> dict:
        """As an HTTP request's ``vllm_xargs`` carries it: vLLM's server takes flat values only (a
        conversation is not one), so the arguments travel as one JSON string."""
        import json

        return {EXTRA_KEY: json.dumps(asdict(self))}

    @classmethod
    def from_params(cls, params) -> GuideArgs | None:
        """The request's guidance from its ``SamplingParams`` (None: not ours, left alone)."""
        data = (getattr(params, "extra_args", None) or {}).get(EXTRA_KEY) if params is not None else None
        if isinstance(data, str):
            import json

            try:
                data = json.loads(data)
            except ValueError:
                raise ValueError(f"extra_args[{EXTRA_KEY!r}]: not JSON") from None
        if data is not None and not isinstance(data, dict):
            raise ValueError(f"extra_args[{EXTRA_KEY!r}]: expected an object, got {type(data).__name__}")
        return None if data is None else _from_wire(cls, data, f"extra_args[{EXTRA_KEY!r}]")


@dataclass
class GuideRecord:
    """What the guidance recorded for one request: the reward of each chosen token (None where the
    row was out of the batch), the last step's candidates' rewards (token -> reward, for a final
    token vLLM sampled after the last record), the guidance seconds by phase, the step at which no
    candidate had a finite reward (None: never), and what the reward model read and how often."""

    rewards: list[float | None] = field(default_factory=list)
    last_token_rewards: dict[int, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    failed_at: int | None = None
    reward_tokens: int = 0
    reward_calls: int = 0

    def rewards_for(self, token_ids: list[int]) -> list[float | None]:
        """One reward per output token: the recorded ones, and the last token's from the last step."""
        rewards = list(self.rewards[: len(token_ids)])
        if len(rewards) < len(token_ids):
            rewards.append(self.last_token_rewards.get(int(token_ids[-1])))
        return rewards

    def to_wire(self) -> dict:
        wire = asdict(self)
        wire["last_token_rewards"] = [[t, r] for t, r in self.last_token_rewards.items()]  # msgpack keys: str only
        return wire

    @classmethod
    def from_wire(cls, data: dict) -> GuideRecord:
        data = dict(data)
        data["last_token_rewards"] = {int(t): float(r) for t, r in data.get("last_token_rewards", [])}
        return _from_wire(cls, data, "records")


@dataclass(frozen=True)
class GuideInfo:
    """The guidance's start in one worker: seconds to load its tokenizer and reward model, device
    memory reserved for the reward model's largest step (0 on CPU) and that step."""

    reward_load_s: float
    reserved_bytes: int
    largest_step: dict | None = None

    def to_wire(self) -> dict:
        return asdict(self)

    @classmethod
    def from_wire(cls, data: dict | None) -> GuideInfo | None:
        return None if data is None else _from_wire(cls, data, "guide info")
