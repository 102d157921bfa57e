"""`pargs-batch evaluate`: read generation runs, measure them, write the report.

Runs are streamed in record batches (``batch_rows``), never loaded whole: each row's scores go to
``scores.parquet`` and each judgement to ``judge.parquet`` as they are made, and ``report.json``
holds aggregates only. Rows with an ``error`` are counted and excluded, never scored. The
evaluation reward model must not be a run's guidance model unless ``allow_same_model`` (the paper
scores with a separate one).
"""

from __future__ import annotations

import importlib
import os
import resource
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pargs_batch.config import reward_label
from pargs_batch.configlib import ConfigError
from pargs_batch.evaluation import metrics
from pargs_batch.evaluation.config import EvalConfig


def load_runs(config: EvalConfig) -> dict[str, dict]:
    """label -> {path, config (from the Parquet metadata), rows}: footers only, no rows are read."""
    from pargs_batch.output import output_info

    runs = {}
    for i, path in enumerate(config.runs):
        try:
            gen_config, rows = output_info(path)
        except FileNotFoundError:
            raise ConfigError("runs", path, "holds no Parquet part files (part-*.parquet); "
                              "is it a finished generation output?") from None
        except OSError as e:
            raise ConfigError("runs", path, f"cannot be read ({str(e).splitlines()[0]})") from None
        d = gen_config["decode"]
        label = config.labels[i] if config.labels else f"{d['method']} beta={d['beta']:g}"
        if label in runs:
            label = f"{label} ({Path(path).name})"
        runs[label] = {"path": str(path), "config": gen_config, "rows": rows}
    return runs


def check_models(config: EvalConfig, runs: dict[str, dict]) -> None:
    from pargs_batch.reward import check_reward_input

    check_reward_input(config.reward)
    if config.allow_same_model or not config.reward.path:
        return
    mine = os.path.realpath(config.reward.path)
    for label, run in runs.items():
        reward = run["config"]["reward"]
        guidance = [reward["path"]] + [m.get("path") for m in reward.get("models") or []]
        if any(g and os.path.realpath(g) == mine for g in guidance):
            raise ConfigError("reward.path", config.reward.path,
                              f"is the guidance reward model of run '{label}'; evaluate with a separate "
                              "model or set allow_same_model: true")


def import_callable(spec: str):
    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ConfigError("gold_reward", spec, f"cannot be imported ({type(e).__name__})") from None


SCORES = pa.schema([("run", pa.string()), ("id", pa.string()), ("sample_index", pa.int32()),
                    ("num_tokens", pa.int32()), ("error", pa.string()), ("reward", pa.float64()),
                    ("gold", pa.float64())])
JUDGED = pa.schema([("a", pa.string()), ("b", pa.string()), ("id", pa.string()), ("a_first", pa.bool_()),
                    ("outcome", pa.string()), ("score_a", pa.float64()), ("score_b", pa.float64()),
                    ("cached", pa.bool_()), ("attempts", pa.int32())])
PROMPTS = pa.schema([("run", pa.string()), ("id", pa.string()), ("samples", pa.int32()), ("reward", pa.float64()),
                     ("gold", pa.float64())])
READ = ["id", "sample_index", "prompt", "response", "num_tokens", "error"]
JUDGE_CHUNK = 16_384  # judged prompts whose texts are held at once


class PromptGroups:
    """Rows gathered into prompts as they stream by. A prompt's samples share a micro-batch, so
    they arrive together; a prompt is handed on once it has ``num_samples`` rows (a repeated id
    starts a new group), the rest at the end. Memory holds only the prompts still open."""

    def __init__(self, num_samples: int):
        self.num_samples = num_samples
        self.open: dict[str, list] = {}

    def add(self, prompt_id: str, row) -> list | None:
        """Add a row; returns its prompt's rows when that prompt is complete."""
        group = self.open.setdefault(prompt_id, [])
        group.append(row)
        if len(group) == self.num_samples:
            return self.open.pop(prompt_id)
        return None

    def rest(self) -> list[tuple[str, list]]:
        rest, self.open = list(self.open.items()), {}
        return rest


def make_scorer(config: EvalConfig):
    """The evaluation reward model: here, or on Ray reward actors sharing the work; None without one."""
    if config.reward.path and config.ray.enabled:
        from pargs_batch.pool import RemoteScorer, init_ray, reward_actors

        init_ray(config.ray.address)
        return RemoteScorer(reward_actors(config.reward, [config.ray.resources] * config.ray.num_actors))
    if config.reward.path:
        from pargs_batch.reward import HFRewardScorer

        return HFRewardScorer(config.reward)
    return None


def score_runs(config: EvalConfig, runs: dict[str, dict], progress: bool) -> dict[str, dict]:
    """Per run: rows, error rows, reward and gold mean ± SE over prompts, diversity. Runs are read in
    record batches of ``batch_rows``; every row's scores go to ``scores.parquet`` as they are made."""
    from tqdm import tqdm

    from pargs_batch.console import console

    scorer = make_scorer(config)
    gold = import_callable(config.gold_reward) if config.gold_reward else None
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    bar = tqdm(total=sum(r["rows"] for r in runs.values()), desc="score", unit="row", disable=not progress,
               file=console.err)
    tmp = {name: out / f"{name}.parquet.tmp" for name in ("scores", "prompts")}
    try:
        with pq.ParquetWriter(tmp["scores"], SCORES, compression="zstd") as rows, \
                pq.ParquetWriter(tmp["prompts"], PROMPTS, compression="zstd") as prompts:
            for label, run in runs.items():
                results[label] = score_run(label, run, scorer, gold, (rows, prompts), config.batch_rows, bar)
        for name, path in tmp.items():
            path.replace(out / f"{name}.parquet")
    finally:
        bar.close()
        for path in tmp.values():
            path.unlink(missing_ok=True)
    return results


def output_columns(path: str) -> list[str]:
    """The column names of a finished output (its first part file's footer)."""
    from pargs_batch.output import output_files

    fs, files = output_files(path)
    return pq.ParquetFile(files[0], filesystem=fs).schema_arrow.names


def score_run(label: str, run: dict, scorer, gold, writers, batch_rows: int, bar) -> dict:
    """One run, streamed: each row's scores to ``writers[0]``, each prompt's means to ``writers[1]``;
    the run's cost columns summed over all its rows (error rows spent compute too)."""
    from pargs_batch.batch import COST_COLUMNS
    from pargs_batch.output import iter_output

    writer, prompt_writer = writers
    d = run["config"]["decode"]
    groups = PromptGroups(d.get("num_samples", 1))
    reward, gold_stat = metrics.OverPrompts(), metrics.OverPrompts()
    diversity = metrics.RougeDiversity()
    ok_rows = tokens = 0
    per_prompt: dict[str, list] = {"id": [], "samples": [], "reward": [], "gold": []}
    costs = [c for c in COST_COLUMNS if c in output_columns(run["path"])]  # absent in outputs made before them
    cost = dict.fromkeys(costs, 0)

    def flush() -> None:
        n = len(per_prompt["id"])
        if n:
            prompt_writer.write_table(pa.table({"run": [label] * n, **per_prompt}, schema=PROMPTS))
        for values in per_prompt.values():
            values.clear()

    def finish(prompt_id: str, group: list[tuple]) -> None:  # (ok, response, reward, gold) of its rows
        fine = [g for g in group if g[0]]
        rewards, golds = [g[2] for g in fine if g[2] is not None], [g[3] for g in fine if g[3] is not None]
        reward.add(rewards)
        gold_stat.add(golds)
        diversity.add([g[1] for g in fine])
        for key, value in (("id", prompt_id), ("samples", len(fine)),
                           ("reward", sum(rewards) / len(rewards) if rewards else None),
                           ("gold", sum(golds) / len(golds) if golds else None)):
            per_prompt[key].append(value)
        if len(per_prompt["id"]) >= batch_rows:
            flush()

    for batch in iter_output(run["path"], READ + costs, batch_rows):
        for name in costs:
            cost[name] += pc.sum(batch[name]).as_py() or 0
        cols = batch.to_pydict()
        n = batch.num_rows
        ok = [i for i, e in enumerate(cols["error"]) if e is None]
        prompts, responses = [cols["prompt"][i] for i in ok], [cols["response"][i] for i in ok]
        rewards, golds = [None] * n, [None] * n
        if scorer is not None and ok:
            for i, v in zip(ok, scorer.score(prompts, responses).tolist()):
                rewards[i] = float(v)
        if gold is not None and ok:
            for i, v in zip(ok, gold(prompts, responses)):
                golds[i] = float(v)
        writer.write_batch(pa.record_batch([pa.array([label] * n, pa.string()), batch["id"], batch["sample_index"],
                                            batch["num_tokens"], batch["error"], pa.array(rewards, pa.float64()),
                                            pa.array(golds, pa.float64())], schema=SCORES))
        for i in range(n):
            done = groups.add(cols["id"][i], (cols["error"][i] is None, cols["response"][i], rewards[i], golds[i]))
            if done is not None:
                finish(cols["id"][i], done)
        ok_rows += len(ok)
        tokens += sum(cols["num_tokens"][i] for i in ok)
        bar.update(n)
    for prompt_id, group in groups.rest():
        finish(prompt_id, group)
    flush()
    result = {"path": run["path"], "method": d["method"], "beta": d["beta"], "rows": run["rows"],
              "error_rows": run["rows"] - ok_rows, "samples_per_prompt": d.get("num_samples", 1),
              "guidance_model": reward_label(run["config"]["reward"]) or None,
              "diversity": diversity.result(), "mean_tokens": tokens / ok_rows if ok_rows else None,
              "cost": {k: round(v, 3) if isinstance(v, float) else v for k, v in cost.items()} if costs else None}
    if scorer is not None:
        result["reward"] = reward.result()
    if gold is not None:
        result["gold"] = gold_stat.result()
    return result


def pair_labels(config: EvalConfig, runs: dict[str, dict]) -> list[list[str]]:
    """The run pairs to compare over shared prompts: ``paired``, or every pair in the given order."""
    labels = list(runs)
    pairs = config.paired or [[a, b] for i, a in enumerate(labels) for b in labels[i + 1:]]
    for pair in pairs:
        for label in pair:
            if label not in runs:
                raise ConfigError("paired", pair, f"no run is labelled {label!r}; labels: {', '.join(runs)}")
    return pairs


def paired_runs(config: EvalConfig, runs: dict[str, dict], results: dict[str, dict]) -> list[dict]:
    """A - B of each pair's per-prompt means (reward and gold), joined on the prompt id: the
    difference's mean, SE over the shared prompts and 95 % interval."""
    path = Path(config.output_dir) / "prompts.parquet"
    out = []
    for a, b in pair_labels(config, runs):
        entry = {"a": a, "b": b}
        for metric in ("reward", "gold"):
            if metric not in results[a]:
                continue
            ta, tb = (pq.read_table(path, columns=["id", metric], filters=[("run", "=", x)]).drop_null()
                      for x in (a, b))
            joined = ta.join(tb, "id", join_type="inner", left_suffix="_a", right_suffix="_b")
            diffs = pc.subtract(joined[f"{metric}_a"], joined[f"{metric}_b"]).to_numpy()
            entry[metric] = metrics.paired_difference(diffs)
        out.append(entry)
    return out


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
    from pargs_batch.output import iter_output

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


def run_evaluate(config: EvalConfig, progress: bool = True) -> dict:
    """Measure every run, judge the pairs, write report.md, report.json (aggregates), plots/ and
    return the report; per-row scores are in scores.parquet, judgements in judge.parquet."""
    from pargs_batch.evaluation.report import write_report

    start = time.perf_counter()
    runs = load_runs(config)
    check_models(config, runs)
    check_judge(config, runs)
    pair_labels(config, runs)
    results = score_runs(config, runs, progress)
    paired = paired_runs(config, runs, results)
    judged = judge_runs(config, runs, progress)
    groups = metrics.beta_groups({label: run["config"] for label, run in runs.items()})
    report = {
        "evaluation_model": config.reward.path or None,
        "gold_reward": config.gold_reward,
        "runs": results,
        "paired": paired,
        "judge": {"model": config.judge.model, "base_url": config.judge.base_url, "template": config.judge.template,
                  "pairs": judged} if judged else None,
        "beta_groups": groups,
        "seconds": round(time.perf_counter() - start, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    write_report(report, Path(config.output_dir))
    return report
