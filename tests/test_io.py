"""io.py: prompt readers keep every row (bad ones with an error), from files, datasets and Ray Data."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pargs_batch.config import DataConfig
from pargs_batch.configlib import ConfigError
from pargs_batch.io.prompts import PromptSource


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
    assert [r.id for r in got] == ["a", "b", "c", "a", "row-4", "f", "line-8"]
    errors = [r.error for r in got]
    assert errors[0] is None and errors[5] is None
    assert errors[1] == "prompt is empty"
    assert errors[2] == "prompt must be a string, got int"
    assert errors[3] == "duplicate id 'a'"
    assert errors[4] == "uid is missing"
    assert errors[6] == "not valid JSON (line 8)"


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
