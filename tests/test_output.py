"""output.py: the run directory - micro-batches durable at once, rolled into part files with the
schema and metadata, crash points that never lose or duplicate a row, resume and retryable rows,
8-byte finished-id sets, configs and foreign directories refused."""

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pargs_batch.io.batch import SCHEMA, ResponseRow
from pargs_batch.configlib import ConfigError
from pargs_batch.decoding import id_hash
from pargs_batch.io.output import RETRYABLE, IdSet, RunDir, next_part, part_number, read_output


def response(id, **kw):
    base = dict(id=id, sample_index=0, prompt="p", response="r", response_token_ids=[1, 2, 3],
                finish_reason="eos", method="pargs", beta=1.5, k=10, temperature=1.0, seed=0,
                rewards=[0.1, 0.2, 0.3], llm="llm", reward_model="rm")
    base.update(kw)
    return ResponseRow(**base)


def open_run(tmp_path, identity=None, overwrite=False, **kw):
    return RunDir(tmp_path / "out", identity or {"decode": {"beta": 1.5}},
                  {"pargs_batch.config": json.dumps({"decode": {"beta": 1.5}}), "pargs_batch.versions": "{}"},
                  overwrite=overwrite, **kw)


def listing(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def test_micro_batches_roll_into_part_files_with_the_schema_and_metadata(tmp_path):
    run = open_run(tmp_path, rows_per_file=3)
    run.write([response("a"), response("b", error="prompt is empty", finish_reason="error",
                                        response_token_ids=[], rewards=None, prompt=None)])
    assert listing((tmp_path / 'out')) == [".pargs/pending/part-000000/mb-000000000.parquet", ".pargs/run.json"]
    run.write([response("c")])  # 3 rows: the file closes
    run.write([response("d")])
    run.close()
    assert listing((tmp_path / 'out')) == [".pargs/run.json", "part-000000.parquet", "part-000001.parquet"]
    table = read_output(run.path)
    assert table.schema.remove_metadata().equals(SCHEMA)
    assert table.column("id").to_pylist() == ["a", "b", "c", "d"]
    assert table.column("num_tokens").to_pylist() == [3, 0, 3, 3]
    assert table.column("error").to_pylist() == [None, "prompt is empty", None, None]
    assert pq.ParquetFile((tmp_path / 'out') / "part-000000.parquet").metadata.num_row_groups == 1
    meta = pq.read_schema((tmp_path / 'out') / "part-000000.parquet").metadata
    assert json.loads(meta[b"pargs_batch.config"]) == {"decode": {"beta": 1.5}}
    assert run.files == 2 and run.micro_batches == 3 and run.rows == 4


def test_reopening_keeps_pending_micro_batches_and_drops_what_a_crash_left_half_done(tmp_path):
    run = open_run(tmp_path, rows_per_file=2)
    run.write([response("a"), response("b")])  # part-000000
    run.write([response("c")])                  # pending in part-000001
    out = tmp_path / "out"
    # a crash mid-write of a micro-batch and mid-compaction
    (out / ".pargs/pending/part-000001/mb-000000001.parquet.tmp").write_text("half")
    (out / "part-000001.parquet.tmp").write_text("half")
    again = open_run(tmp_path, rows_per_file=2)
    assert again.resumed_rows == 3 and again.is_finished("a") and again.is_finished("c")
    assert not again.is_finished("d")
    assert listing(out) == [".pargs/pending/part-000001/mb-000000000.parquet", ".pargs/run.json",
                            "part-000000.parquet"]
    again.write([response("d")])  # joins c in part-000001
    again.close()
    assert read_output(again.path).column("id").to_pylist() == ["a", "b", "c", "d"]
    assert listing(out) == [".pargs/run.json", "part-000000.parquet", "part-000001.parquet"]


def test_a_crash_during_the_roll_that_closes_a_file_finishes_that_file_first(tmp_path):
    """Killed after a file's last micro-batch was durable but before its compaction was renamed: the
    rerun compacts it as it was, so no part file holds more than rows_per_file rows."""
    run = open_run(tmp_path, rows_per_file=100)
    run.write([response("a"), response("b")])  # what rows_per_file=2 would have rolled
    out = tmp_path / "out"
    (out / "part-000000.parquet.tmp").write_text("half")
    again = open_run(tmp_path, rows_per_file=2)
    assert again.resumed_rows == 2 and listing(out) == [".pargs/run.json", "part-000000.parquet"]
    again.write([response("c")])
    again.close()
    assert [pq.read_metadata(out / f"part-00000{n}.parquet").num_rows for n in (0, 1)] == [2, 1]
    assert read_output(again.path).column("id").to_pylist() == ["a", "b", "c"]


def test_a_crash_between_compaction_and_clean_up_never_duplicates_rows(tmp_path):
    run = open_run(tmp_path)
    run.write([response("a")])
    pending = run.pending_dir
    run._merge([f"{pending}/mb-000000000.parquet"], f"{run.base}/part-000000.parquet", SCHEMA)  # no clean-up
    again = open_run(tmp_path)
    assert again.resumed_rows == 1 and listing((tmp_path / 'out')) == [".pargs/run.json", "part-000000.parquet"]
    again.write([response("b")])
    again.close()
    assert read_output(again.path).column("id").to_pylist() == ["a", "b"]


def test_part_numbers_are_parsed_not_sliced_past_a_million(tmp_path):
    names = [f"part-{n:06d}.parquet" for n in range(100_001)] + ["part-1000000.parquet", ".pargs", "x.parquet"]
    assert next_part(names) == 1_000_001 and part_number("part-1234567.parquet") == 1234567
    run = open_run(tmp_path)
    run.write([response("a")])
    run.close()
    out = tmp_path / "out"
    (out / "part-000000.parquet").rename(out / "part-99999.parquet")
    shutil.copy(out / "part-99999.parquet", out / "part-100000.parquet")
    pq.write_table(pq.read_table(out / "part-100000.parquet").set_column(0, "id", pa.array(["b"])),
                   out / "part-100000.parquet")
    again = open_run(tmp_path)
    assert again.part == 100_001 and again.resumed_rows == 2
    again.write([response("c")])
    again.close()
    assert (out / "part-100001.parquet").exists()
    assert read_output(again.path).column("id").to_pylist() == ["a", "b", "c"]  # in number order


def test_retryable_rows_are_written_but_a_rerun_takes_them_out_and_makes_them_again(tmp_path):
    run = open_run(tmp_path)
    run.write([response("a"), response("b", error=RETRYABLE + "worker died", finish_reason="error")])
    run.close()
    assert read_output(run.path).num_rows == 2
    again = open_run(tmp_path)
    assert again.retried_rows == 1 and again.resumed_rows == 1 and not again.is_finished("b")
    assert read_output(again.path).column("id").to_pylist() == ["a"]


def test_finished_ids_cost_eight_bytes_each():
    ids = IdSet()
    for i in range(100_000):
        ids.add(id_hash(f"p{i}"))
    ids.add_many(np.fromiter((id_hash(f"q{i}") for i in range(50_000)), dtype=np.uint64))
    assert id_hash("p77") in ids and id_hash("q49999") in ids and id_hash("p100000") not in ids
    assert ids.nbytes() <= 8 * 150_000 and max(len(levels) for levels in ids.buckets) <= 12
    assert all(np.all(np.diff(level) > 0) for levels in ids.buckets for level in levels)  # sorted, unique


def test_a_different_config_is_refused_unless_overwrite(tmp_path):
    open_run(tmp_path).write([response("a")])
    with pytest.raises(ConfigError, match=r"different config \(decode.beta: 1.5 -> 2.0\).*--overwrite"):
        open_run(tmp_path, identity={"decode": {"beta": 2.0}})
    fresh = open_run(tmp_path, identity={"decode": {"beta": 2.0}}, overwrite=True)
    assert fresh.resumed_rows == 0 and listing((tmp_path / 'out')) == [".pargs/run.json"]
    # a run written before a config key (and its columns) existed is not resumed into mixed files
    with pytest.raises(ConfigError, match=r"earlier pargs_batch \(its config has no decode.block_tokens;"):
        open_run(tmp_path, identity={"decode": {"beta": 2.0, "block_tokens": 8}})


def test_a_foreign_non_empty_directory_is_refused(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds no run"):
        open_run(tmp_path)
