"""The containers passed between reader, stepper and writer; output fields are the Parquet columns."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

FINISH_REASONS = ("eos", "length", "stop", "error")

SCHEMA = pa.schema([
    ("id", pa.string()),
    ("sample_index", pa.int32()),
    ("prompt", pa.string()),
    ("response", pa.string()),
    ("response_token_ids", pa.list_(pa.int32())),
    ("num_tokens", pa.int32()),
    ("finish_reason", pa.string()),
    ("method", pa.string()),
    ("beta", pa.float64()),
    ("k", pa.int32()),
    ("temperature", pa.float64()),
    ("seed", pa.int64()),
    ("rewards", pa.list_(pa.float32())),
    ("llm", pa.string()),
    ("reward_model", pa.string()),
    ("error", pa.string()),
])


@dataclass
class PromptRow:
    """One input row: a stable id, the prompt as read (maybe not a string), and why it is unusable."""

    id: str
    prompt: Any
    error: str | None = None


@dataclass
class ResponseRow:
    """One generated response, exactly one Parquet row."""

    id: str
    sample_index: int
    prompt: str | None
    response: str
    response_token_ids: list[int]
    finish_reason: str
    method: str
    beta: float
    k: int
    temperature: float
    seed: int
    rewards: list[float] | None
    llm: str
    reward_model: str | None
    error: str | None = None
    num_tokens: int = field(init=False)

    def __post_init__(self):
        self.num_tokens = len(self.response_token_ids)


def to_table(rows: list[ResponseRow], metadata: dict[str, str] | None = None) -> pa.Table:
    """Rows to an Arrow table with ``SCHEMA`` (and the given file metadata)."""
    columns = {name: [] for name in SCHEMA.names}
    for row in rows:
        for key, value in dataclasses.asdict(row).items():
            columns[key].append(value)
    table = pa.Table.from_pydict(columns, schema=SCHEMA)
    return table.replace_schema_metadata(metadata) if metadata else table


CANDIDATE_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("sample_index", pa.int32()),
    ("candidate_index", pa.int32()),
    ("response", pa.string()),
    ("response_token_ids", pa.list_(pa.int32())),
    ("finish_reason", pa.string()),
    ("reward", pa.float32()),
    ("selected", pa.bool_()),
])


def candidates_table(candidates: list[dict], metadata: dict[str, str] | None = None) -> pa.Table:
    """Best-of-N candidates (dicts with the ``CANDIDATE_SCHEMA`` fields) as an Arrow table."""
    table = pa.Table.from_pylist(candidates, schema=CANDIDATE_SCHEMA)
    return table.replace_schema_metadata(metadata) if metadata else table
