"""Guided generation as one stage of a Ray Data pipeline, in the manner of ``ray.data.llm``.

    import ray
    from pargs_batch.ray_data import build_processor

    processor = build_processor("my.yaml", postprocess=lambda row: {**row, "chars": len(row["response"])})
    ds = ray.data.read_parquet("s3://bucket/prompts/")
    ds = processor(ds)                     # one row per (prompt, sample): generate's columns
    ds.write_parquet("s3://bucket/responses/")

The processor reads each row's prompt (``data.prompt_column`` or ``data.messages_column``), id
(``data.id_column``, required: a row of a distributed dataset has no stable position) and weights
(``data.weights_column``) as ``generate`` does, and yields ``generate``'s columns (the output
schema) followed by the input's other columns, carried over. A row that cannot be generated from
(empty, not a string, too long, a repeated id within its batch) comes out with an ``error``, never
dropped. Rows are the same as ``generate``'s for the same config and seed (the choices are keyed by
seed, id and step, never by batch), ``wall_s`` aside.

Each of ``ray.num_workers`` actors of a Ray Data actor pool loads one engine and its reward scorer
(``model.*``, ``engine.mode``, ``reward.*``) and takes batches of ``decode.micro_batch_size`` rows;
its resources are the Ray pool's (``ray.engine_resources``, else one CPU, or
``model.tensor_parallel_size`` GPUs on a cluster with GPUs). ``data.source`` and ``output.*`` are
not used: the pipeline reads and writes. Not covered: ids repeated across batches (the pipeline
owns its ids; ``generate`` checks them over the whole input), resuming, and best-of-n's candidates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from pargs_batch.batch import SCHEMA, to_table
from pargs_batch.config import GenerateConfig
from pargs_batch.configlib import ConfigError
from pargs_batch.generation import check_models
from pargs_batch.output import RETRYABLE, IdSet
from pargs_batch.rows import RowMaker

Row = dict[str, Any]


class GuidedGeneration:
    """The Ray Data UDF: one engine and scorer per actor, a batch of input rows in, a table of
    output rows (one per prompt and sample, in the batch's order) out."""

    def __init__(self, config: GenerateConfig):
        from pargs_batch.pool import DecodeWorker

        self.config = config
        self.worker = DecodeWorker(config)
        self.rows = RowMaker(config.decode, config.model.path, config.reward.label or None)
        self.num_weights = len(config.reward.members) if config.data.weights_column else None

    def __call__(self, batch: pa.Table) -> pa.Table:
        from pargs_batch.io import check_repeat, prompt_row

        seen = IdSet()
        prompts = []
        for record in batch.to_pylist():
            row = prompt_row(self.config.data, record, None, self.num_weights)
            check_repeat(row, seen)
            prompts.append(row)
        try:
            rows = self.worker.generate(prompts).rows
        except Exception as e:  # noqa: BLE001 - a failed micro-batch is rows with an error, as in generate
            rows = self.rows.errors(prompts, f"{RETRYABLE}micro-batch failed: {type(e).__name__}: {e}")
        table = to_table(rows)
        samples = self.config.decode.num_samples
        take = pa.array([i for i in range(len(prompts)) for _ in range(samples)], pa.int64())
        for name in batch.column_names:
            if name not in SCHEMA.names:
                table = table.append_column(batch.schema.field(name), batch.column(name).take(take))
        return table

    def __del__(self):
        worker = getattr(self, "worker", None)
        if worker is not None:
            worker.close()


@dataclasses.dataclass
class Processor:
    """A config's guided generation as a function of a Ray Dataset (``processor(ds)``)."""

    config: GenerateConfig
    preprocess: Callable[[Row], Row] | None = None
    postprocess: Callable[[Row], Row] | None = None
    concurrency: int | None = None
    batch_size: int | None = None

    def resources(self) -> dict:
        """Each actor's Ray resources: the Ray pool's plan for a decode worker on this cluster."""
        import ray

        from pargs_batch import placement

        gpus = ray.cluster_resources().get("GPU", 0)
        return placement.plan(self.config, 0, gpus).engine

    def __call__(self, ds):
        from pargs_batch.pool import init_ray

        init_ray(self.config.ray.address)
        if self.preprocess is not None:
            ds = ds.map(self.preprocess)
        res = self.resources()
        ds = ds.map_batches(GuidedGeneration, fn_constructor_kwargs={"config": self.config},
                            batch_size=self.batch_size or self.config.decode.micro_batch_size,
                            batch_format="pyarrow", concurrency=self.concurrency or self.config.ray.num_workers,
                            num_cpus=res.get("num_cpus", 1), num_gpus=res.get("num_gpus", 0))
        if self.postprocess is not None:
            ds = ds.map(self.postprocess)
        return ds


def build_processor(config: GenerateConfig | dict | str | Path, *,
                    preprocess: Callable[[Row], Row] | None = None,
                    postprocess: Callable[[Row], Row] | None = None,
                    concurrency: int | None = None, batch_size: int | None = None,
                    **overrides: Any) -> Processor:
    """A processor for ``ds = processor(ds)``: ``preprocess`` (row -> row) before generation,
    ``postprocess`` after; ``concurrency`` actors (default ``ray.num_workers``), ``batch_size``
    rows a call (default ``decode.micro_batch_size``). The config is checked here, before any
    model loads (a config error names the key)."""
    from pargs_batch.api import as_config

    config = as_config(GenerateConfig, config, overrides)
    if not config.data.id_column:
        raise ConfigError("data.id_column", config.data.id_column,
                          "a Ray Data stage needs an id column: a row of a distributed dataset has no stable position")
    for key, value in (("concurrency", concurrency), ("batch_size", batch_size)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ConfigError(key, value, "expected a positive integer")
    check_models(config)
    return Processor(config, preprocess, postprocess, concurrency, batch_size)
