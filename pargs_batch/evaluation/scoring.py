"""Evaluation's scoring: every row of every run under the evaluation reward model (and the gold
reward where there is one), streamed in record batches of ``batch_rows``; each row's scores go to
``scores.parquet`` and each prompt's means to ``prompts.parquet`` as they are made, so memory holds
only the prompts still open. Rows with an ``error`` are counted and excluded, never scored. Also
the paired differences of two runs over their shared prompts."""

from __future__ import annotations

import importlib
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pargs_batch.config import reward_label
from pargs_batch.configlib import ConfigError
from pargs_batch.evaluation import metrics
from pargs_batch.evaluation.config import EvalConfig


def import_callable(spec: str):
    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ConfigError("gold_reward", spec, f"cannot be imported ({type(e).__name__})") from None


SCORES = pa.schema([("run", pa.string()), ("id", pa.string()), ("sample_index", pa.int32()),
                    ("num_tokens", pa.int32()), ("error", pa.string()), ("reward", pa.float64()),
                    ("gold", pa.float64())])
PROMPTS = pa.schema([("run", pa.string()), ("id", pa.string()), ("samples", pa.int32()), ("reward", pa.float64()),
                     ("gold", pa.float64())])
READ = ["id", "sample_index", "prompt", "response", "num_tokens", "error"]


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


def evaluation_scorer(config: EvalConfig):
    """The evaluation reward model (``scorers``' factory): here, or on Ray reward actors sharing the
    work; None without one."""
    from pargs_batch.models.loading import RemoteScorer, reward_actors
    from pargs_batch.rewards.factory import make_scorer

    if not config.reward.path:
        return None
    if config.ray.enabled:
        from pargs_batch.pool import init_ray

        init_ray(config.ray.address)
        return RemoteScorer(reward_actors(config.reward, [config.ray.resources] * config.ray.num_actors))
    return make_scorer(config.reward)


def score_runs(config: EvalConfig, runs: dict[str, dict], progress: bool) -> dict[str, dict]:
    """Per run: rows, error rows, reward and gold mean ± SE over prompts, diversity. Runs are read in
    record batches of ``batch_rows``; every row's scores go to ``scores.parquet`` as they are made."""
    from tqdm import tqdm

    from pargs_batch.console import console

    scorer = evaluation_scorer(config)
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
    from pargs_batch.io.output import output_files

    fs, files = output_files(path)
    return pq.ParquetFile(files[0], filesystem=fs).schema_arrow.names


def score_run(label: str, run: dict, scorer, gold, writers, batch_rows: int, bar) -> dict:
    """One run, streamed: each row's scores to ``writers[0]``, each prompt's means to ``writers[1]``;
    the run's cost columns summed over all its rows (error rows spent compute too)."""
    from pargs_batch.io.batch import COST_COLUMNS
    from pargs_batch.io.output import iter_output

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
