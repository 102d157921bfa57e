"""Evaluation's judging: an LLM judge compares two runs' first samples prompt by prompt over the
prompts they share (``Judge``, an OpenAI-compatible client, in ``judge``); every judgement goes to
``judge.parquet`` as it is made, and each pair's win/tie/loss to the report."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pargs_batch.configlib import ConfigError
from pargs_batch.evaluation import metrics
from pargs_batch.evaluation.config import EvalConfig


JUDGED = pa.schema([("a", pa.string()), ("b", pa.string()), ("id", pa.string()), ("a_first", pa.bool_()),
                    ("outcome", pa.string()), ("score_a", pa.float64()), ("score_b", pa.float64()),
                    ("cached", pa.bool_()), ("attempts", pa.int32())])
JUDGE_CHUNK = 16_384  # judged prompts whose texts are held at once


def check_judge(config: EvalConfig, runs: dict[str, dict]) -> None:
    """The judge's pairs name runs, and its key is set: checked before any model loads."""
    j = config.judge
    for pair in j.pairs:
        for label in pair:
            if label not in runs:
                raise ConfigError("judge.pairs", pair, f"no run is labelled {label!r}; labels: {', '.join(runs)}")
    if j.pairs and os.environ.get(j.api_key_env) is None:
        raise ConfigError("judge.api_key_env", j.api_key_env, "no such environment variable is set")


def first_samples(path: str, batch_rows: int, wanted: pa.Array | None = None):
    """Sample 0 of each prompt, where it has no error: without ``wanted``, their ids (an Arrow array,
    in output order); with it, {id: (prompt, response)} for those ids only."""
    from pargs_batch.io.output import iter_output

    columns = ["id", "sample_index", "error"] + ([] if wanted is None else ["prompt", "response"])
    ids, texts = [], {}
    for batch in iter_output(path, columns, batch_rows):
        keep = pc.and_(pc.equal(batch["sample_index"], 0), pc.is_null(batch["error"]))
        if wanted is not None:
            keep = pc.and_(keep, pc.is_in(batch["id"], value_set=wanted))
        batch = batch.filter(keep)
        if wanted is None:
            ids.append(batch["id"])
        else:
            texts.update(zip(batch["id"].to_pylist(), zip(batch["prompt"].to_pylist(),
                                                          batch["response"].to_pylist())))
    return pa.chunked_array(ids, pa.string()).combine_chunks() if wanted is None else texts


def judge_runs(config: EvalConfig, runs: dict[str, dict], progress: bool) -> list[dict]:
    """Win/tie/loss/invalid of A against B for each requested pair, on their shared prompts (first
    samples), judged ``JUDGE_CHUNK`` prompts at a time; every judgement goes to ``judge.parquet``."""
    from pargs_batch.evaluation.judge import Judge, JudgeCache

    j = config.judge
    path = Path(config.output_dir) / "judge.parquet"
    if not j.pairs:
        path.unlink(missing_ok=True)  # an earlier evaluation's judgements would not match this report
        return []
    check_judge(config, runs)
    api_key = os.environ[j.api_key_env]
    cache = JudgeCache(config.cache_dir or Path(config.output_dir) / "judge_cache.sqlite")
    judge = Judge(j.base_url, j.model, api_key, j.template, cache, j.max_concurrency, j.max_retries,
                  j.parse_retries, j.timeout, j.max_tokens, j.max_attempts, j.max_tokens_param, j.temperature,
                  j.extra_body)
    out, tmp = [], Path(str(path) + ".tmp")
    try:
        judge_pairs(config, runs, judge, tmp, out, progress)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def judge_pairs(config: EvalConfig, runs: dict[str, dict], judge, tmp: Path, out: list, progress: bool) -> None:
    """Judge each pair in chunks, appending its aggregates to ``out`` and its judgements to ``tmp``.
    Texts are read per chunk: each chunk is one pass over both runs (one pass in all when the
    shared prompts fit in one chunk)."""
    j = config.judge
    with pq.ParquetWriter(tmp, JUDGED, compression="zstd") as writer:
        for a, b in j.pairs:
            mine, theirs = (first_samples(runs[x]["path"], config.batch_rows) for x in (a, b))
            shared = mine.filter(pc.is_in(mine, value_set=theirs))[: j.max_prompts]
            if len(shared) == 0:
                raise ConfigError("judge.pairs", [a, b], "the two runs share no prompt ids")
            before, outcomes = judge.requests, []
            for start in range(0, len(shared), JUDGE_CHUNK):
                chunk = shared[start:start + JUDGE_CHUNK]
                ta, tb = (first_samples(runs[x]["path"], config.batch_rows, chunk) for x in (a, b))
                items = [(i, ta[i][0], ta[i][1], tb[i][1]) for i in chunk.to_pylist()]
                records = judge.compare_all(items, j.seed, progress)
                outcomes += [r["outcome"] for r in records]
                scores = [r["scores"] if r["a_first"] or r["scores"] is None else r["scores"][::-1] for r in records]
                writer.write_table(pa.table({
                    "a": [a] * len(records), "b": [b] * len(records), "id": [r["id"] for r in records],
                    "a_first": [r["a_first"] for r in records], "outcome": [r["outcome"] for r in records],
                    "score_a": [s and s[0] for s in scores], "score_b": [s and s[1] for s in scores],
                    "cached": [r["cached"] for r in records], "attempts": [r["attempts"] for r in records]},
                    schema=JUDGED))
            out.append({"a": a, "b": b, "prompts": len(shared), "seed": j.seed,
                        "requests": judge.requests - before, **metrics.win_tie(outcomes)})
