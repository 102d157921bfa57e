"""A finished output reads as one table in every tool people use: pyarrow, pandas, Ray Data, Hugging
Face datasets and DuckDB - every row, the documented schema, the config in the metadata; best-of-n's
candidates (under .pargs/) never leak into it."""

import json

import pyarrow.parquet as pq
import pytest
from helpers import base_config

from pargs_batch.io.batch import CANDIDATE_SCHEMA, SCHEMA
from pargs_batch.config import GenerateConfig
from pargs_batch.configlib import build
from pargs_batch.generation import run_generate
from pargs_batch.io.output import read_output

# Ray: each test process starts its own local Ray (conftest's ray_local, or the run's own); two xdist
# workers may each run one at once, and a test touches only the Ray it started
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished(world, models, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("readers")
    cfg = build(GenerateConfig, base_config(
        world, tmp, decode={"method": "best-of-n", "micro_batch_size": 8, "num_samples": 2, "max_new_tokens": 8},
        data={"limit": 20}, output={"rows_per_file": 16, "keep_all_candidates": True}))
    summary = run_generate(cfg, models=models, progress=False)
    return tmp / "out", cfg, summary


def test_the_directory_holds_part_files_and_hidden_bookkeeping(finished):
    out, _, summary = finished
    assert summary.rows == 40 and summary.files == 3 and summary.micro_batches == 3
    assert sorted(p.name for p in out.iterdir()) == [".pargs", "part-000000.parquet", "part-000001.parquet",
                                                     "part-000002.parquet"]
    assert sorted(p.name for p in (out / ".pargs").iterdir()) == ["candidates", "pending", "run.json", "summary.json"]
    assert not list((out / ".pargs" / "pending").iterdir())
    candidates = read_output(out, kind="candidates")
    assert candidates.schema.remove_metadata().equals(CANDIDATE_SCHEMA) and candidates.num_rows == 40 * 10


def expected(out):
    rows = read_output(out).to_pylist()
    assert len(rows) == 40
    return sorted((r["id"], r["sample_index"], r["response"]) for r in rows)


def test_pyarrow_and_pandas_read_the_directory_as_one_table(finished):
    out, cfg, _ = finished
    table = pq.read_table(out)
    assert table.schema.remove_metadata().equals(SCHEMA)
    assert json.loads(table.schema.metadata[b"pargs_batch.config"]) == cfg.to_dict()
    import pandas as pd

    frame = pd.read_parquet(out)
    assert list(frame.columns) == SCHEMA.names
    assert sorted(zip(frame["id"], frame["sample_index"], frame["response"])) == expected(out)


def test_duckdb_reads_the_part_files(finished):
    import duckdb

    out, _, _ = finished
    got = duckdb.sql(f"select id, sample_index, response from read_parquet('{out}/*.parquet')").fetchall()
    assert sorted(got) == expected(out)
    (kv,) = duckdb.sql(f"select value from parquet_kv_metadata('{out}/part-000000.parquet') "
                       "where key = 'pargs_batch.config'").fetchall()
    assert json.loads(kv[0])["decode"]["method"] == "best-of-n"


def test_hugging_face_datasets_reads_the_directory(finished):
    import datasets

    out, _, _ = finished
    ds = datasets.load_dataset("parquet", data_dir=str(out), split="train")
    assert ds.column_names == SCHEMA.names
    assert sorted(zip(ds["id"], ds["sample_index"], ds["response"])) == expected(out)


def test_ray_data_reads_the_directory(finished, ray_local):
    out, _, _ = finished
    ds = ray_local.data.read_parquet(str(out))
    rows = ds.take_all()
    assert ds.schema().names == SCHEMA.names
    assert sorted((r["id"], r["sample_index"], r["response"]) for r in rows) == expected(out)
