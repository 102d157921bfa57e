"""The Python API: what ``import pargs_batch as pb`` offers, and what the command line calls.

    import pargs_batch as pb

    config = pb.GenerateConfig.from_yaml("my.yaml")
    summary = pb.generate(config, decode={"beta": 2.0}, output={"path": "outputs/beta2"})
    rows = pb.read_output(summary.output).to_pandas()

A config may be given as a config object, a nested dict (the YAML's shape) or a YAML path. Keyword
overrides name a section with a dict of its keys (``decode={"beta": 2.0}``) or one dotted key
(``**{"decode.beta": 2.0}``). Every way in is checked before any model loads: a bad value raises
``ConfigError`` naming the key, the value and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from pargs_batch.comparison.config import CompareConfig
from pargs_batch.config import GenerateConfig
from pargs_batch.configlib import Loadable
from pargs_batch.evaluation.config import EvalConfig
from pargs_batch.generation import RunSummary

ConfigLike = Loadable | dict | str | Path


def as_config(cls: type, config: ConfigLike, overrides: dict[str, Any]):
    """``config`` as a ``cls`` (from an object, a dict or a YAML path) with ``overrides`` applied."""
    if isinstance(config, cls):
        return config.with_overrides(**overrides) if overrides else config
    if isinstance(config, (str, Path)):
        config = cls.from_yaml(config)
        return config.with_overrides(**overrides) if overrides else config
    if isinstance(config, dict):
        return cls.from_dict(config, **overrides)
    raise TypeError(f"expected a {cls.__name__}, a dict or a YAML path, got {type(config).__name__}")


def generate(config: GenerateConfig | dict | str | Path, *, progress: bool = True, models=None,
             **overrides: Any) -> RunSummary:
    """Generate a response for every unfinished prompt of ``config.data`` into ``config.output.path``
    (Parquet part files; a rerun into the same directory resumes it) and return the run's summary.

    ``models``: a ``pb.Models`` cache that keeps what it loads for the next call (so a sweep over
    β or methods starts its engine once; close it, or use it in a ``with``), or an ``(engine,
    tokenizer, scorer)`` already loaded: either runs in this process (``ray.*`` is not used); without
    it ``ray.enabled`` decides where the models load.
    Rows that cannot be generated are written with an ``error``; check ``summary.error_fraction``.
    """
    from pargs_batch.generation import run_generate

    return run_generate(as_config(GenerateConfig, config, overrides), models=models, progress=progress)


def evaluate(config: EvalConfig | dict | str | Path, *, progress: bool = True, **overrides: Any) -> dict:
    """Score runs with the evaluation reward model (mean reward ± standard error), their ROUGE-L
    diversity and paired differences, and the LLM judge's win-tie rates when ``judge`` is configured;
    writes ``report.md``, ``report.json``, ``scores.parquet`` and plots under ``output_dir`` and
    returns the report (``runs``, ``paired``, ``judge``, ``beta_groups``, ``seconds``)."""
    from pargs_batch.evaluation.run import run_evaluate

    return run_evaluate(as_config(EvalConfig, config, overrides), progress=progress)


def compare(config: GenerateConfig | dict | str | Path, spec: CompareConfig | dict | str | Path | None = None, *,
            progress: bool = True, models=None, **spec_overrides: Any) -> dict:
    """Run several methods (and budgets) on ``config``'s models and prompts, evaluate them in one job
    and write a table, plots and the evaluation's report under ``spec.output_dir``.

    ``spec``: a ``pb.CompareConfig`` (or its dict / YAML path) - methods (default topk, args,
    pargs-greedy, pargs, best-of-n), ``budgets`` per method, ``rewards`` per method, ``evaluation``
    (at least an evaluation reward model or a gold reward); keyword overrides set its keys
    (``methods=["topk", "pargs"]``, ``evaluation={"reward": {"path": ...}}``). One engine and one scorer
    per reward model serve every run (``models``: a ``pb.Models`` to keep them for later calls; with
    ``ray.enabled`` each run starts its own Ray pool and ``models`` is not used). Returns
    what ``compare.json`` holds: a row per run (rewards ± SE, diversity, cost per prompt, paired
    difference to the reference run), the plots and the report's path."""
    from pargs_batch.comparison.run import run_compare

    generate_config = as_config(GenerateConfig, config, {})
    return run_compare(generate_config, as_config(CompareConfig, spec or {}, spec_overrides), models=models,
                       progress=progress)


def serve(config: GenerateConfig | dict | str | Path, *, host: str = "127.0.0.1", port: int = 8000,
          replicas: int = 1, served_model_name: str | None = None, on_ready=None, **overrides: Any) -> None:
    """Serve ``config``'s LLM and reward model behind vLLM's OpenAI-compatible server until stopped:
    every request guided as its ``extra_body`` says (method, beta, top_k, temperature, seed, id,
    reward_weights), the config's ``decode`` section the defaults. ``replicas`` > 1 runs that many
    engines behind Ray Serve. ``on_ready(url)`` is called once it answers."""
    from pargs_batch.serving.server import check_servable, serve as run

    config = as_config(GenerateConfig, config, overrides)
    check_servable(config)
    if replicas > 1:
        from pargs_batch.serving.replicas import serve_replicas

        return serve_replicas(config, host, port, replicas, served_model_name, on_ready=on_ready)
    return run(config, host, port, served_model_name, on_ready=on_ready)


def read_output(path: str | Path, kind: str = "rows") -> pa.Table:
    """A run's rows (``kind="rows"``) or its best-of-n candidates (``"candidates"``) as one Arrow
    table, finished files and micro-batches not yet compacted alike (``.to_pandas()`` for pandas)."""
    from pargs_batch.io import output

    return output.read_output(path, kind)
