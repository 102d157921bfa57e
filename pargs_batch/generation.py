"""One generation run: prompts in, Parquet part files out as micro-batches finish, a summary at the end.

The driver streams prompts (Ray Data on the Ray path), skips those an earlier run into the same
directory finished, keeps every worker busy with up to ``ray.inflight_per_worker`` micro-batches,
and hands each finished micro-batch to ``output.RunDir`` (durable at once, compacted into large
part files). Its memory grows by 8 bytes a prompt: the hash of each id an earlier run finished
(what a resume skips) or, for the rest, the reader's duplicate check; plus the micro-batches in
flight.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import resource
import time
from dataclasses import dataclass, field

from pargs_batch.io.batch import MicroBatchResult, Phases
from pargs_batch.config import GenerateConfig
from pargs_batch.configlib import ConfigError
from pargs_batch.decoding import METHODS
from pargs_batch.guidance import GuideInfo
from pargs_batch.io.prompts import PromptSource, package_versions
from pargs_batch.plan.memory import plan_run
from pargs_batch.models.loading import Models
from pargs_batch.io.output import RETRYABLE, RunDir
from pargs_batch.pool import DecodeWorker, LocalPool, RayPool, cluster_devices, init_ray
from pargs_batch.rewards.hf import check_reward_input
from pargs_batch.runners.rows import NONFINITE, RowMaker, check_chat_template
from pargs_batch.plan.placement import guides_in_engine

log = logging.getLogger(__name__)


@dataclass
class Totals:
    """The run's sums over finished micro-batches (phases are summed over micro-batches in flight,
    so with several in flight they exceed the wall time)."""

    phase_s: Phases = field(default_factory=Phases)
    tokens: int = 0
    preemptions: int = 0
    error_rows: int = 0
    retryable_error_rows: int = 0
    nonfinite_reward_rows: int = 0
    start: float = field(default_factory=time.perf_counter)

    def add(self, result: MicroBatchResult) -> None:
        self.phase_s += result.phase_s
        self.tokens += result.tokens
        self.preemptions += result.preemptions


@dataclass
class RunSummary:
    """What ``run_generate`` reports (``generate`` prints it as JSON, and writes it to the output's
    ``.pargs/summary.json``)."""

    method: str
    rows: int                      # rows written by this run
    resumed_rows: int              # rows an earlier run had finished (not redone)
    error_rows: int
    error_fraction: float
    retryable_error_rows: int      # errors a rerun retries (a micro-batch that failed on every try)
    retried_rows: int              # error rows of an earlier run that this run redid
    nonfinite_reward_rows: int
    micro_batches: int
    files: int
    tokens: int
    preemptions: int | None        # requests vLLM preempted (None without model.log_stats)
    startup_s: float               # from the call to the first micro-batch's submission (models loaded)
    wall_s: float
    tokens_per_s: float
    phase_s: Phases                # summed over micro-batches (so over the wall time with several in flight)
    workers: int
    driver_peak_rss_mb: float
    output: str
    finished_ids_bytes: int
    placement: dict | None         # the Ray pool's placement plan (None in this process)
    memory: dict | None            # the memory plan: devices, KV tokens, the largest step, settings chosen
    guidance: list[GuideInfo] | None  # fused: per engine, its reward model's load and memory reserved

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def check_output_place(path: str) -> None:
    """Say where a relative output path lands when that is not where the user ran the command:
    under `ray job submit` the driver runs in Ray's copy of the job's working_dir on the head node."""
    if os.path.isabs(path) or "://" in path or "RAY_JOB_CONFIG_JSON_ENV_VAR" not in os.environ:
        return
    log.warning("output.path %r is relative: this Ray job writes it under its working directory on the head "
                "node, %s, which Ray may delete after the job; give an absolute path on storage you can reach",
                path, os.path.abspath(path))


def check_shared_tokenizer(config: GenerateConfig) -> None:
    """The autoregressive backend reads the LLM's token ids: its tokenizer must be the LLM's
    (the same vocabulary, id for id), checked on the tokenizers alone before any model loads."""
    from transformers import AutoTokenizer

    llm = config.model.tokenizer or config.model.path
    if AutoTokenizer.from_pretrained(config.reward.path).get_vocab() != AutoTokenizer.from_pretrained(llm).get_vocab():
        raise ConfigError("reward.path", config.reward.path, f"reward.backend=autoregressive needs the LLM's tokenizer "
                          f"(it scores the LLM's token ids); its vocabulary differs from {llm}'s")


def check_models(config: GenerateConfig) -> None:
    """What can be known of the models before loading them: a chat run's LLM has a chat template, and
    each guidance reward model's tokenizer can take the input format it is given."""
    check_chat_template(config)
    if METHODS[config.decode.method].uses_reward:
        for i, (member, _) in enumerate(config.reward.members):
            check_reward_input(member, f"reward.models[{i}]" if config.reward.models else "reward")
        if config.reward.backend == "autoregressive":
            check_shared_tokenizer(config)


def run_generate(config: GenerateConfig, models=None, progress: bool = True) -> RunSummary:
    """Generate for every unfinished prompt of ``config.data`` into ``config.output.path``.

    Everything that can be checked without models (config, input columns, the output directory
    and its earlier run) is checked before any model loads. ``models``: a ``models.Models`` cache
    (it loads what the config needs, after those checks, and keeps it for the next call) or an
    (engine, tokenizer, scorer) already loaded; either runs in this process. Without it
    ``ray.enabled`` picks the pool.
    """
    from tqdm import tqdm

    from pargs_batch.console import console

    source = PromptSource(config.data, len(config.reward.members) if config.data.weights_column else None)
    check_models(config)
    check_output_place(config.output.path)
    metadata = {"pargs_batch.config": config.to_json(), "pargs_batch.versions": json.dumps(package_versions())}
    o = config.output
    run = RunDir(o.path, config.identity(), metadata, o.compression, overwrite=o.overwrite,
                 rows_per_file=o.rows_per_file, target_file_mb=o.target_file_mb)
    records, devices = None, None
    if models is None and config.ray.enabled:
        init_ray(config.ray.address)
        records = source.ray_records()
        devices = cluster_devices()
    memory = plan_run(config, devices, say=models is None)  # a caller sharing its models has planned them
    # what the plan chose runs; the run's identity stays the config's (a resume on other GPUs matches)
    planned = memory.apply(config) if memory is not None else config
    pool, startup, guidance = None, 0.0, []

    def start_pool():
        """The models load at the first micro-batch left to make: a finished run loads nothing."""
        nonlocal pool, startup, guidance, models
        started = time.perf_counter()
        if isinstance(models, Models):
            models = models.for_config(planned)
        if models is not None:
            pool = LocalPool(DecodeWorker.from_models(planned, *models))
        elif config.ray.enabled:
            pool = RayPool(planned, memory)
        else:
            pool = LocalPool(DecodeWorker(planned))
        startup = time.perf_counter() - started
        guidance = [g for g in pool.guide_info() if g] if guides_in_engine(config) else []
        return pool

    totals, row_maker = Totals(), RowMaker(config.decode, config.model.path, config.reward.label or None)
    bar = tqdm(desc=f"generate {config.decode.method}", unit="row", disable=not progress,
               file=console.err)

    def write_next() -> None:
        prompts, (status, payload) = pool.next_result()
        candidates = []
        if status == "ok":
            rows = payload.rows
            candidates = payload.candidates if config.output.keep_all_candidates else []
            totals.add(payload)
        else:
            rows = row_maker.errors(prompts, f"{RETRYABLE}micro-batch {payload}")
        t0 = time.perf_counter()
        run.write(rows, candidates)
        totals.phase_s.io += time.perf_counter() - t0
        totals.error_rows += sum(r.error is not None for r in rows)
        totals.retryable_error_rows += sum(r.error is not None and r.error.startswith(RETRYABLE) for r in rows)
        totals.nonfinite_reward_rows += sum(r.error is not None and r.error.startswith(NONFINITE) for r in rows)
        bar.update(len(rows))

    try:
        for prompts in source.batches(config.decode.micro_batch_size, records, skip=run.is_finished):
            pool = pool or start_pool()
            while pool.pending() >= pool.capacity:
                write_next()
            pool.submit(prompts, prompts)
        while pool is not None and pool.pending():
            write_next()
        run.close()
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown()

    wall = time.perf_counter() - totals.start - startup  # the models' loading is startup_s, not generation
    summary = RunSummary(
        method=config.decode.method,
        rows=run.rows,
        resumed_rows=run.resumed_rows,
        error_rows=totals.error_rows,
        error_fraction=round(totals.error_rows / run.rows, 6) if run.rows else 0.0,
        retryable_error_rows=totals.retryable_error_rows,
        retried_rows=run.retried_rows,
        nonfinite_reward_rows=totals.nonfinite_reward_rows,
        micro_batches=run.micro_batches,
        files=run.files,
        tokens=totals.tokens,
        preemptions=totals.preemptions if config.model.log_stats else None,
        startup_s=round(startup, 3),
        wall_s=round(wall, 3),
        tokens_per_s=round(totals.tokens / wall, 1) if wall > 0 else 0.0,
        phase_s=totals.phase_s.rounded(),
        workers=config.ray.num_workers if config.ray.enabled and models is None else 1,
        driver_peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        output=run.path,
        finished_ids_bytes=run.finished.nbytes(),
        placement=dataclasses.asdict(pool.plan) if isinstance(pool, RayPool) else None,
        memory=memory.to_dict() if memory is not None else None,
        guidance=guidance or None,
    )
    run.write_summary(summary.to_dict())
    return summary
