"""The Ray Data stage in a real pipeline on a local Ray: read_parquet -> preprocess -> guided generation
-> postprocess, with good and bad rows; the rows equal generate's for the same config and seed, the
input's other columns carried through; a config without an id column is refused before models load."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pargs_batch.configlib import ConfigError
from pargs_batch.io.ray_data import build_processor

from helpers import SMALL_ACTOR, base_config, generate_rows

# Ray: each test process starts its own local Ray (conftest's ray_local, or the run's own); two xdist
# workers may each run one at once, and a test touches only the Ray it started
pytestmark = pytest.mark.slow
ACTORS = {"num_workers": 1, "engine_resources": SMALL_ACTOR}
COMPARED = ["response", "response_token_ids", "num_tokens", "finish_reason", "error", "prompt", "method",
            "beta", "k", "seed", "llm", "reward_model", "llm_prefill_tokens", "llm_decode_tokens"]


def prompts_with_bad_rows(world, path):
    """12 prompts of the world, then an empty one, a missing one, one too long for the model, and a
    repeated id beside its first; every row has a topic and a number the pipeline carries."""
    rows = [json.loads(line) for line in open(world["prompts"])][:12]
    rows += [{"id": "empty", "prompt": "   "}, {"id": "missing", "prompt": None},
             {"id": "long", "prompt": " ".join(["word"] * 400)},
             {"id": rows[0]["id"], "prompt": "the same id again"}]
    rows.insert(1, rows.pop())  # the repeat right after the first: in the same batch of four
    for i, row in enumerate(rows):
        row.update(topic=f"t{i % 3}", n=i)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return rows


def test_a_ray_data_pipeline_yields_generates_rows_and_carries_its_columns(ray_local, world, tmp_path, models):
    import ray

    source = tmp_path / "prompts.parquet"
    rows = prompts_with_bad_rows(world, source)
    cfg = base_config(world, tmp_path, data={"source": str(source), "limit": None},
                      decode={"micro_batch_size": 4, "max_new_tokens": 12, "num_samples": 2})
    expected, _ = generate_rows(world, tmp_path, models, data=cfg["data"], decode=cfg["decode"])
    assert sum(r["error"] is not None for r in expected) == 4 * 2

    # the same model settings but eager (no compilation: its start in a one-thread actor 70 -> 52 s)
    stage = dict(cfg, ray=ACTORS,
                 model={**cfg["model"], "enforce_eager": True})
    stage["data"] = {"id_column": "id"}  # the pipeline reads: no source
    processor = build_processor(stage, preprocess=lambda row: {**row, "stage": "pre"},
                                postprocess=lambda row: {**row, "chars": len(row["response"] or "")})
    ds = processor(ray.data.read_parquet(str(source)))
    out = ds.take_all()

    assert len(out) == 2 * len(rows) and {r["sample_index"] for r in out} == {0, 1}
    by_key = {(r["id"], r["sample_index"], r["n"]): r for r in out}
    for want in expected:
        n = next(i for i, r in enumerate(rows) if r["id"] == want["id"] and
                 (r["prompt"] == want["prompt"] or want["prompt"] is None and r["prompt"] is None))
        got = by_key[(want["id"], want["sample_index"], n)]
        assert {c: got[c] for c in COMPARED} == {c: want[c] for c in COMPARED}, [(r["n"], r["id"], r["error"]) for r in out]
        assert [round(x, 4) for x in got["rewards"] or []] == [round(x, 4) for x in want["rewards"] or []]
        assert (got["topic"], got["stage"], got["chars"]) == (rows[n]["topic"], "pre", len(want["response"] or ""))


def test_a_stage_without_an_id_column_or_with_a_bad_value_is_refused_before_models_load(world, tmp_path):
    cfg = base_config(world, tmp_path)
    cfg["data"] = {}
    with pytest.raises(ConfigError, match=r"data\.id_column=None .*no stable position"):
        build_processor(cfg)
    with pytest.raises(ConfigError, match=r"decode\.beta='x'"):
        build_processor(dict(cfg, data={"id_column": "id"}), decode={"beta": "x"})
    with pytest.raises(ConfigError, match=r"concurrency=0"):
        build_processor(dict(cfg, data={"id_column": "id"}), concurrency=0)
    # keys of generate's reader and Ray pool that a stage would not use are refused, not ignored
    with pytest.raises(ConfigError, match=r"data\.limit=5 .*left at None.*ds\.limit"):
        build_processor(dict(cfg, data={"id_column": "id", "limit": 5}))
    with pytest.raises(ConfigError, match=r"ray\.num_reward_actors=1 .*own reward model"):
        build_processor(dict(cfg, data={"id_column": "id"}), ray={"num_reward_actors": 1})


def test_missing_or_clashing_columns_are_refused_before_any_actor_starts(ray_local, world, tmp_path):
    import ray

    source = tmp_path / "prompts.parquet"
    pq.write_table(pa.table({"uid": ["a", "b"], "prompt": ["x", "y"], "response": ["gold a", "gold b"]}), source)
    cfg = dict(base_config(world, tmp_path), ray=ACTORS)
    ds = ray.data.read_parquet(str(source))
    with pytest.raises(ConfigError, match=r"data\.id_column='id' .*it has: uid, prompt, response"):
        build_processor(dict(cfg, data={"id_column": "id"}))(ds)
    with pytest.raises(ConfigError, match=r"dataset columns=\['response'\] .*output columns"):
        build_processor(dict(cfg, data={"id_column": "uid"}))(ds)
