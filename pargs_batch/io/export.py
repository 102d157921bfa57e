"""A finished run in another tool's format: ``pargs-batch export``.

``alpaca-eval``: AlpacaEval's model outputs, a JSON array of ``{"instruction", "output", "generator"}``
objects (what ``alpaca_eval --model_outputs FILE`` reads), one per prompt: the row's ``prompt`` and
``response`` for one sample index, in the order the run directory holds the rows (the input's order
within each part file). AlpacaEval cannot take an instruction without an output, so rows with an
``error`` are left out and counted.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pyarrow.fs as pafs

from pargs_batch.configlib import ConfigError
from pargs_batch.io.output import filesystem, iter_output, output_info

FORMATS = ("alpaca-eval",)


@dataclass
class Export:
    """What an export wrote: how many records, which sample, under which generator name, and the
    ids of the rows it left out for their errors."""

    records: int
    sample: int
    samples_per_prompt: int
    generator: str
    left_out: list[str] = field(default_factory=list)


def run_config(run_dir: str) -> dict:
    """The resolved generate config of a finished run with rows; a ``ConfigError`` naming ``RUN_DIR``
    when the directory does not exist, holds no run or holds no rows."""
    fs, base = filesystem(run_dir)
    if fs.get_file_info(base).type != pafs.FileType.Directory:
        raise ConfigError("RUN_DIR", run_dir, "a run directory that pargs-batch generate wrote (no such directory)")
    try:
        config, rows = output_info(run_dir)
    except FileNotFoundError:
        raise ConfigError("RUN_DIR", run_dir, "a run directory that pargs-batch generate wrote "
                                              "(it holds no part-*.parquet files)") from None
    if rows == 0:
        raise ConfigError("RUN_DIR", run_dir, "a run with rows (its part files hold none)")
    return config


def generator_name(config: dict) -> str:
    """AlpacaEval's ``generator`` for a run: the LLM's directory or hub name and the decoding that
    made the rows, e.g. ``SmolLM2-135M-Instruct-pargs-beta1-k10``."""
    llm = str(config["model"]["path"]).rstrip("/").rsplit("/", 1)[-1]
    decode = config["decode"]
    method = decode["method"]
    if method == "topk":
        return f"{llm}-topk-k{decode['top_k']}"
    if method == "best-of-n":
        return f"{llm}-best-of-n{decode.get('n_candidates') or ''}".rstrip("-")
    return f"{llm}-{method}-beta{decode['beta']:g}-k{decode['top_k']}"


def alpaca_eval_records(run_dir: str, generator: str, sample: int, left_out: list[str]):
    """(instruction, output, generator) objects of one sample index, in the run's row order; the ids
    of rows with an error go to ``left_out`` instead."""
    for batch in iter_output(run_dir, columns=["id", "sample_index", "prompt", "response", "error"]):
        for row in batch.to_pylist():
            if row["sample_index"] != sample:
                continue
            if row["error"] is not None or row["prompt"] is None or row["response"] is None:
                left_out.append(row["id"])
                continue
            yield {"instruction": row["prompt"], "output": row["response"], "generator": generator}


def write_alpaca_eval(run_dir: str, out: IO[str], generator: str | None = None, sample: int | None = None) -> Export:
    """Write a run's rows to ``out`` as AlpacaEval's model outputs; returns what was written.
    ``sample``: which of the run's ``decode.num_samples`` responses per prompt (default 0)."""
    config = run_config(run_dir)
    samples = int(config["decode"].get("num_samples") or 1)
    chosen = 0 if sample is None else sample
    if not 0 <= chosen < samples:
        raise ConfigError("--sample", sample, f"a sample index in [0, {samples - 1}] (the run has "
                                              f"{samples} sample{'s' if samples > 1 else ''} per prompt)")
    name = generator or generator_name(config)
    left_out: list[str] = []
    count = 0
    out.write("[")
    for record in alpaca_eval_records(run_dir, name, chosen, left_out):
        out.write(("," if count else "") + "\n  " + json.dumps(record, ensure_ascii=False))
        count += 1
    out.write("\n]\n" if count else "]\n")
    return Export(count, chosen, samples, name, left_out)


def export(run_dir: str, fmt: str, out: str | None, generator: str | None = None,
           sample: int | None = None, stdout: IO[str] | None = None) -> Export:
    """``pargs-batch export``: the run in format ``fmt`` to the file ``out`` (written whole or not at
    all), or to ``stdout`` when ``out`` is None or ``-``."""
    if fmt not in FORMATS:
        raise ConfigError("--format", fmt, f"one of {', '.join(FORMATS)}")
    if out in (None, "-"):
        import sys

        return write_alpaca_eval(run_dir, stdout or sys.stdout, generator, sample)
    path = Path(out)
    if path.is_dir():
        raise ConfigError("--out", out, "a file path (it is a directory)")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    try:
        with open(partial, "w", encoding="utf-8") as f:
            result = write_alpaca_eval(run_dir, f, generator, sample)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return result
