"""Prompt readers keep every row (bad ones with an error); the writer keeps the schema and metadata."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pargs_batch.batch import SCHEMA, ResponseRow
from pargs_batch.config import DataConfig
from pargs_batch.configlib import ConfigError
from pargs_batch.io import PromptSource, RunDir, read_output

RECORDS = [{"uid": "a", "text": "hello"}, {"uid": "b", "text": ""}, {"uid": "c", "text": 42},
           {"uid": "a", "text": "again"}, {"uid": None, "text": "no id"}, {"uid": "f", "text": "fine"}]


def rows(source, **kw):
    src = PromptSource(DataConfig(source=str(source), prompt_column="text", **kw))
    return [r for batch in src.batches(4) for r in batch]


@pytest.fixture
def jsonl(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS) + "\nnot json\n")
    return path


def test_jsonl_keeps_every_row_and_flags_the_bad_ones(jsonl):
    got = rows(jsonl, id_column="uid")
    assert [r.id for r in got] == ["a", "b", "c", "a", "row-4", "f", "row-6"]
    errors = [r.error for r in got]
    assert errors[0] is None and errors[5] is None
    assert errors[1] == "prompt is empty"
    assert errors[2] == "prompt must be a string, got int"
    assert errors[3] == "duplicate id 'a'"
    assert errors[4] == "uid is missing"
    assert errors[6] == "not valid JSON"


def test_ids_default_to_the_row_index_and_limit_applies(jsonl):
    got = rows(jsonl, limit=3)
    assert [r.id for r in got] == ["0", "1", "2"]


def test_parquet_and_hf_dataset_sources_read_the_same_rows(tmp_path, jsonl):
    good = [r for r in RECORDS if isinstance(r["text"], str)]
    pq.write_table(pa.Table.from_pylist(good), tmp_path / "p.parquet")
    from_parquet = rows(tmp_path / "p.parquet", id_column="uid")
    # a local dataset directory goes through datasets.load_dataset, the same call as a hub name
    (tmp_path / "hf").mkdir()
    pq.write_table(pa.Table.from_pylist(good), tmp_path / "hf" / "train-00000.parquet")
    from_hf = rows(tmp_path / "hf", id_column="uid")
    assert [(r.id, r.prompt, r.error) for r in from_parquet] == [(r.id, r.prompt, r.error) for r in from_hf]
    assert [r.prompt for r in from_hf] == ["hello", "", "again", "no id", "fine"]


def test_unknown_columns_are_config_errors(jsonl, tmp_path):
    with pytest.raises(ConfigError, match="data.prompt_column='question'.*available: uid, text"):
        PromptSource(DataConfig(source=str(jsonl), prompt_column="question"))
    pq.write_table(pa.table({"prompt": ["x"]}), tmp_path / "p.parquet")
    with pytest.raises(ConfigError, match="data.id_column='uid'"):
        PromptSource(DataConfig(source=str(tmp_path / "p.parquet"), id_column="uid"))


def test_unloadable_dataset_name_is_a_config_error():
    with pytest.raises(ConfigError, match="data.source='no-such-org/no-such-set'"):
        PromptSource(DataConfig(source="no-such-org/no-such-set"))


def response(id, **kw):
    base = dict(id=id, sample_index=0, prompt="p", response="r", response_token_ids=[1, 2, 3],
                finish_reason="eos", method="pargs", beta=1.5, k=10, temperature=1.0, seed=0,
                rewards=[0.1, 0.2, 0.3], llm="llm", reward_model="rm")
    base.update(kw)
    return ResponseRow(**base)


def open_run(tmp_path, identity=None, overwrite=False):
    return RunDir(tmp_path / "out", identity or {"decode": {"beta": 1.5}},
                  {"pargs_batch.config": json.dumps({"decode": {"beta": 1.5}}), "pargs_batch.versions": "{}"},
                  overwrite=overwrite)


def test_shards_keep_schema_and_metadata_and_the_manifest_lists_them(tmp_path):
    run = open_run(tmp_path)
    run.write([response("a"), response("b", error="prompt is empty", finish_reason="error",
                                        response_token_ids=[], rewards=None, prompt=None)])
    run.write([response("c")])
    table = read_output(run.path)
    assert table.schema.remove_metadata().equals(SCHEMA)
    assert table.column("id").to_pylist() == ["a", "b", "c"]
    assert table.column("num_tokens").to_pylist() == [3, 0, 3]
    assert table.column("error").to_pylist() == [None, "prompt is empty", None]
    meta = pq.read_schema(run.path / "shard-00000.parquet").metadata
    assert json.loads(meta[b"pargs_batch.config"]) == {"decode": {"beta": 1.5}}
    manifest = [json.loads(x) for x in (run.path / "manifest.jsonl").read_text().splitlines()]
    assert manifest == [{"shard": "shard-00000.parquet", "rows": [["a", 0], ["b", 0]]},
                        {"shard": "shard-00001.parquet", "rows": [["c", 0]]}]
    assert not list(run.path.glob("*.tmp"))


def test_reopening_resumes_and_drops_what_the_manifest_does_not_list(tmp_path):
    run = open_run(tmp_path)
    run.write([response("a")])
    run.write([response("b")])
    # a crash after writing a shard but before its manifest line, and one mid-line
    (run.path / "shard-00002.parquet").write_text("orphan")
    (run.path / "shard-00003.parquet.tmp").write_text("half")
    with open(run.path / "manifest.jsonl", "a") as f:
        f.write('{"shard": "shard-00004.parq')
    again = open_run(tmp_path)
    assert again.finished == {("a", 0), ("b", 0)} and again.resumed_rows == 2
    assert again.is_finished("a") and not again.is_finished("c")
    assert sorted(p.name for p in again.path.glob("shard-*")) == ["shard-00000.parquet", "shard-00001.parquet"]
    assert again.write([response("c")]).name == "shard-00002.parquet"
    assert read_output(again.path).column("id").to_pylist() == ["a", "b", "c"]


def test_a_different_config_is_refused_unless_overwrite(tmp_path):
    open_run(tmp_path).write([response("a")])
    with pytest.raises(ConfigError, match=r"different config \(decode.beta: 1.5 -> 2.0\).*--overwrite"):
        open_run(tmp_path, identity={"decode": {"beta": 2.0}})
    fresh = open_run(tmp_path, identity={"decode": {"beta": 2.0}}, overwrite=True)
    assert fresh.finished == set() and list(fresh.path.glob("shard-*")) == []


def test_a_foreign_non_empty_directory_is_refused(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds no run"):
        open_run(tmp_path)


@pytest.mark.slow
def test_ray_data_streams_the_same_rows(ray_local, tmp_path, jsonl):
    good = [r for r in RECORDS if isinstance(r["text"], str)]
    pq.write_table(pa.Table.from_pylist(good), tmp_path / "p.parquet")
    (tmp_path / "hf").mkdir()
    pq.write_table(pa.Table.from_pylist(good), tmp_path / "hf" / "train-00000.parquet")
    for source in (jsonl, tmp_path / "p.parquet", tmp_path / "hf"):
        src = PromptSource(DataConfig(source=str(source), prompt_column="text", id_column="uid", limit=6))
        local = [r for b in src.batches(4) for r in b]
        streamed = [r for b in src.batches(4, src.ray_records()) for r in b]
        assert streamed == local and len(local) == (6 if source == jsonl else 5)
