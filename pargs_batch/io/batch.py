"""The containers that cross the worker boundary: prompts in, rows and their costs out.

``ResponseRow``'s fields are the output's Parquet columns, in order, each declaring its Arrow type;
``SCHEMA`` is derived from it (and ``CANDIDATE_SCHEMA`` from ``CandidateRow``), so the writer,
the readers and the README's schema cannot drift apart. A runner turns one micro-batch of
``PromptRow``s into one ``MicroBatchResult``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa


def column(arrow_type: pa.DataType, **kwargs):
    """A dataclass field that is a Parquet column of ``arrow_type``."""
    return field(metadata={"arrow": arrow_type}, **kwargs)


def arrow_schema(cls: type) -> pa.Schema:
    return pa.schema([(f.name, f.metadata["arrow"]) for f in dataclasses.fields(cls)])


@dataclass
class PromptRow:
    """One input row: a stable id, the prompt as read (maybe not a string), why it is unusable, and
    - for chat models - the conversation to render with the LLM's chat template; its own
    reward-model weights when the data has them."""

    id: str
    prompt: Any
    error: str | None = None
    messages: list[dict] | None = None
    weights: list[float] | None = None  # its reward models' weights (data.weights_column)

    @property
    def context(self) -> Any:
        """What a reward model is told the prompt was: the conversation of a chat run, else the prompt."""
        return self.messages if self.messages is not None else self.prompt


@dataclass
class ResponseRow:
    """One generated response, exactly one Parquet row."""

    id: str = column(pa.string())
    sample_index: int = column(pa.int32())
    prompt: str | None = column(pa.string())  # null when the input's prompt was not a string
    response: str = column(pa.string())
    response_token_ids: list[int] = column(pa.list_(pa.int32()))
    num_tokens: int = column(pa.int32(), init=False)
    finish_reason: str = column(pa.string())  # eos | length | stop | error
    method: str = column(pa.string())
    beta: float = column(pa.float64())
    k: int = column(pa.int32())
    temperature: float = column(pa.float64())
    seed: int = column(pa.int64())
    rewards: list[float] | None = column(pa.list_(pa.float32()))  # reward of each chosen prefix
    llm: str = column(pa.string())
    reward_model: str | None = column(pa.string())
    error: str | None = column(pa.string(), default=None)
    # smc only (null otherwise): the estimate of log Z = log sum_y pi_ref(y) exp(beta r(y)), resamplings, final ESS
    log_z: float | None = column(pa.float64(), default=None)
    resamples: int | None = column(pa.int32(), default=None)
    ess: float | None = column(pa.float64(), default=None)
    # what the row cost (see ``Cost``)
    llm_prefill_tokens: int = column(pa.int64(), default=0)
    llm_decode_tokens: int = column(pa.int64(), default=0)
    reward_tokens: int = column(pa.int64(), default=0)
    reward_calls: int = column(pa.int64(), default=0)
    wall_s: float = column(pa.float64(), default=0.0)

    def __post_init__(self):
        self.num_tokens = len(self.response_token_ids)

    def charge(self, cost: Cost) -> ResponseRow:
        """Set the row's cost columns from ``cost``."""
        for name in COST_FIELDS:
            setattr(self, name, getattr(cost, name))
        return self


@dataclass
class Cost:
    """The compute one row used, counted where it is spent:

    - ``llm_prefill_tokens``: prompt tokens the LLM computed (not served from vLLM's prefix cache),
      over every request made for the row - the stepped loop's one-token requests re-prefill the
      tail that no cached block holds;
    - ``llm_decode_tokens``: tokens the LLM generated for the row, kept or not (best-of-n's N
      candidates, early rejection's dropped ones, blockwise's unchosen blocks);
    - ``reward_tokens``: tokens the reward model(s) read for the row (each model's own tokenizer;
      padding not counted);
    - ``reward_calls``: (context, response prefix) inputs scored for the row, once per reward model.
    """

    llm_prefill_tokens: int = 0
    llm_decode_tokens: int = 0
    reward_tokens: int = 0
    reward_calls: int = 0

    def add(self, prefill: int = 0, decode: int = 0, reward_tokens: int = 0, reward_calls: int = 0) -> None:
        self.llm_prefill_tokens += int(prefill)
        self.llm_decode_tokens += int(decode)
        self.reward_tokens += int(reward_tokens)
        self.reward_calls += int(reward_calls)


COST_FIELDS = tuple(f.name for f in dataclasses.fields(Cost))
COST_COLUMNS = COST_FIELDS + ("wall_s",)


@dataclass
class CandidateRow:
    """One of best-of-n's N candidates (``output.keep_all_candidates``)."""

    id: str = column(pa.string())
    sample_index: int = column(pa.int32())
    candidate_index: int = column(pa.int32())
    response: str = column(pa.string())
    response_token_ids: list[int] = column(pa.list_(pa.int32()))
    finish_reason: str = column(pa.string())
    reward: float = column(pa.float32())
    selected: bool = column(pa.bool_())


SCHEMA = arrow_schema(ResponseRow)
CANDIDATE_SCHEMA = arrow_schema(CandidateRow)


def _table(rows: list, schema: pa.Schema, metadata: dict[str, str] | None) -> pa.Table:
    columns: dict[str, list] = {name: [] for name in schema.names}
    for row in rows:
        for name in schema.names:
            columns[name].append(getattr(row, name))
    table = pa.Table.from_pydict(columns, schema=schema)
    return table.replace_schema_metadata(metadata) if metadata else table


def to_table(rows: list[ResponseRow], metadata: dict[str, str] | None = None) -> pa.Table:
    """Rows to an Arrow table with ``SCHEMA`` (and the given file metadata)."""
    return _table(rows, SCHEMA, metadata)


def candidates_table(candidates: list[CandidateRow], metadata: dict[str, str] | None = None) -> pa.Table:
    """Best-of-N candidates as an Arrow table with ``CANDIDATE_SCHEMA``."""
    return _table(candidates, CANDIDATE_SCHEMA, metadata)


@dataclass
class Phases:
    """Seconds by phase: the LLM engine's own work, waiting for a shared engine (another micro-batch
    of the same worker had it), the reward model, decoding and glue, and writing the output."""

    engine: float = 0.0
    engine_wait: float = 0.0
    reward: float = 0.0
    decode: float = 0.0
    io: float = 0.0

    def __iadd__(self, other: Phases) -> Phases:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    def rounded(self, digits: int = 3) -> Phases:
        return Phases(**{k: round(v, digits) for k, v in dataclasses.asdict(self).items()})


@dataclass
class MicroBatchResult:
    """What a runner returns for one micro-batch: one row per (prompt, sample) in input order,
    best-of-n's candidates, seconds per phase, the tokens generated (best-of-n counts all N
    candidates) and the requests vLLM preempted (with ``model.log_stats``)."""

    rows: list[ResponseRow]
    candidates: list[CandidateRow] = field(default_factory=list)
    phase_s: Phases = field(default_factory=Phases)
    tokens: int = 0
    preemptions: int = 0


class Runner(Protocol):
    """Stepped, fused and best-of-n generation share this interface (``runners.make_runner`` picks one)."""

    def run(self, prompts: list[PromptRow]) -> MicroBatchResult: ...
