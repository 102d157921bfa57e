"""Guided generation as one stage of a Ray Data pipeline, in the manner of ``ray.data.llm``.

    import ray
    from pargs_batch.io.ray_data import build_processor

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
not used: the pipeline reads and writes. A dataset without a column the stage reads, or with
another column named as an output column, is a ``ConfigError`` (before any model loads where the
schema is known without reading rows, as after ``read_parquet``; else at the first batch). An
exception in generation itself (a dead engine) fails the batch, so Ray Data's retries and actor
restarts apply; bad rows never raise. Not covered: ids repeated across batches (the pipeline
owns its ids; ``generate`` checks them over the whole input), resuming, and best-of-n's candidates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from pargs_batch.io.batch import SCHEMA, to_table
from pargs_batch.config import GenerateConfig
from pargs_batch.configlib import ConfigError
from pargs_batch.generation import check_models
from pargs_batch.io.output import IdSet

Row = dict[str, Any]


class GuidedGeneration:
    """The Ray Data UDF: one engine and scorer per actor, a batch of input rows in, a table of
    output rows (one per prompt and sample, in the batch's order) out."""

    def __init__(self, config: GenerateConfig):
        from pargs_batch.pool import DecodeWorker

        self.config = config
        self.worker = DecodeWorker(config)
        self.num_weights = len(config.reward.members) if config.data.weights_column else None

    def __call__(self, batch: pa.Table) -> pa.Table:
        from pargs_batch.io.prompts import check_repeat, prompt_row

        check_columns(self.config, batch.column_names)
        seen = IdSet()
        prompts = []
        for record in batch.to_pylist():
            row = prompt_row(self.config.data, record, None, self.num_weights)
            check_repeat(row, seen)
            prompts.append(row)
        # bad rows come back as rows with an error; anything raised here (a dead engine) fails the
        # batch, so that Ray Data's retries and actor restarts apply instead of rows of errors
        rows = self.worker.generate(prompts).rows
        table = to_table(rows)
        samples = self.config.decode.num_samples
        take = pa.array([i for i in range(len(prompts)) for _ in range(samples)], pa.int64())
        for name in carried(self.config, batch.column_names):
            table = table.append_column(batch.schema.field(name), batch.column(name).take(take))
        return table

    def __del__(self):
        worker = getattr(self, "worker", None)
        if worker is not None:
            worker.close()


def read_columns(config: GenerateConfig) -> list[str]:
    """The input columns the stage reads: the prompt (or conversation), the id and the weights."""
    d = config.data
    return [c for c in (d.messages_column or d.prompt_column, d.id_column, d.weights_column) if c]


def carried(config: GenerateConfig, columns: list[str]) -> list[str]:
    """The input columns carried to the output: all but those the output's own columns replace."""
    return [c for c in columns if c not in SCHEMA.names]


def check_columns(config: GenerateConfig, columns: list[str]) -> None:
    """The columns the stage reads are there, and no other input column has an output column's name
    (the prompt and id columns may: the output's hold the same values)."""
    d = config.data
    for key in ("messages_column", "prompt_column", "id_column", "weights_column"):
        name = getattr(d, key)
        if key == "prompt_column" and d.messages_column:
            continue
        if name and name not in columns:
            raise ConfigError(f"data.{key}", name, "no such column in the dataset; it has: " + ", ".join(columns))
    clash = [c for c in columns if c in SCHEMA.names and c not in read_columns(config)]
    if clash:
        raise ConfigError("dataset columns", clash, "these names are output columns of generation; rename "
                          "them before the stage (e.g. in preprocess), or they would be overwritten")


@dataclasses.dataclass
class Processor:
    """A config's guided generation as a function of a Ray Dataset (``processor(ds)``)."""

    config: GenerateConfig
    preprocess: Callable[[Row], Row] | None = None
    postprocess: Callable[[Row], Row] | None = None
    concurrency: int | tuple[int, int] | None = None
    batch_size: int | None = None

    def plan(self):
        """Each actor's Ray resources, and vLLM's memory share where it holds part of a GPU: the Ray
        pool's plan for a decode worker with its scorer beside it, on this cluster."""
        import ray

        from pargs_batch.plan import placement

        return placement.plan(self.config, 0, ray.cluster_resources().get("GPU", 0))

    def __call__(self, ds):
        from pargs_batch.pool import init_ray

        init_ray(self.config.ray.address)
        if self.preprocess is None:
            schema = ds.schema(fetch_if_missing=False)  # known from a file's metadata: checked before models load
            if schema is not None:
                check_columns(self.config, list(schema.names))
        else:
            ds = ds.map(self.preprocess)
        plan, config = self.plan(), self.config
        if plan.gpu_memory_utilization and config.model.gpu_memory_utilization is None:
            config = dataclasses.replace(config, model=dataclasses.replace(
                config.model, gpu_memory_utilization=plan.gpu_memory_utilization))
        ds = ds.map_batches(GuidedGeneration, fn_constructor_kwargs={"config": config},
                            batch_size=self.batch_size or config.decode.micro_batch_size,
                            batch_format="pyarrow", concurrency=self.concurrency or config.ray.num_workers,
                            num_cpus=plan.engine.get("num_cpus", 1), num_gpus=plan.engine.get("num_gpus", 0))
        if self.postprocess is not None:
            ds = ds.map(self.postprocess)
        return ds


def build_processor(config: GenerateConfig | dict | str | Path, *,
                    preprocess: Callable[[Row], Row] | None = None,
                    postprocess: Callable[[Row], Row] | None = None,
                    concurrency: int | tuple[int, int] | None = None, batch_size: int | None = None,
                    **overrides: Any) -> Processor:
    """A processor for ``ds = processor(ds)``: ``preprocess`` (row -> row) before generation,
    ``postprocess`` after; ``concurrency`` actors, or a (min, max) pool Ray Data autoscales (default
    ``ray.num_workers``), ``batch_size``
    rows a call (default ``decode.micro_batch_size``). The config is checked here, before any
    model loads (a config error names the key)."""
    from pargs_batch.api import as_config

    config = as_config(GenerateConfig, config, overrides)
    if not config.data.id_column:
        raise ConfigError("data.id_column", config.data.id_column,
                          "a Ray Data stage needs an id column: a row of a distributed dataset has no stable position")
    sizes = list(concurrency) if isinstance(concurrency, tuple) else [concurrency]
    if concurrency is not None and (len(sizes) > 2 or not all(isinstance(n, int) and n >= 1 for n in sizes)
                                    or sizes != sorted(sizes)):
        raise ConfigError("concurrency", concurrency, "expected a positive integer or a (min, max) pair of them")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ConfigError("batch_size", batch_size, "expected a positive integer")
    check_unused(config)
    check_models(config)
    return Processor(config, preprocess, postprocess, concurrency, batch_size)


# keys of generate's Ray pool and reader that have no meaning in a stage, and what to do instead
UNUSED = {
    ("data", "limit"): "limit the dataset in the pipeline (ds.limit(n))",
    ("ray", "num_reward_actors"): "each actor scores with its own reward model",
    ("ray", "reward_resources"): "each actor scores with its own reward model, on the actor's resources",
    ("ray", "inflight_per_worker"): "Ray Data decides how many batches each actor is given",
    ("ray", "max_retries"): "Ray Data's own retries apply (DataContext, max_restarts)",
}


def check_unused(config: GenerateConfig) -> None:
    """A key set away from its default that the stage would silently not use is refused, naming it."""
    defaults = GenerateConfig.__dataclass_fields__
    for (section, key), instead in UNUSED.items():
        value = getattr(getattr(config, section), key)
        default = getattr(defaults[section].default_factory(), key)
        if value != default:
            raise ConfigError(f"{section}.{key}", value, f"left at {default!r}: the Ray Data stage does not use "
                              f"it ({instead})")
