"""Output and prompts on an S3-compatible object store: a real one (moto's server on localhost, started
and stopped here). A driver writing to it is SIGKILLed mid-file; the rerun ends with each row once,
equal to a run on local disk, and pyarrow reads the result straight from the bucket."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import yaml
from helpers import base_config

from pargs_batch.config import GenerateConfig
from pargs_batch.configlib import build
from pargs_batch.generation import run_generate
from pargs_batch.io.output import read_output

pytestmark = pytest.mark.slow
CLI = str(Path(sys.executable).parent / "pargs-batch")
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3():
    """(URI prefix with the endpoint, filesystem) of a fresh bucket on a local S3 server."""
    from moto.server import ThreadedMotoServer

    os.environ.update(CREDENTIALS)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    fs = pafs.S3FileSystem(endpoint_override=f"{host}:{port}", scheme="http", region="us-east-1",
                           allow_bucket_creation=True, access_key="testing", secret_key="testing")
    fs.create_dir("runs")
    yield (lambda key: f"s3://runs/{key}?endpoint_override={host}:{port}&scheme=http&region=us-east-1"), fs
    server.stop()


def rows_of(table):
    rows = table.to_pylist()
    keyed = {(r["id"], r["sample_index"]): (r["response_token_ids"], r["rewards"]) for r in rows}
    assert len(keyed) == len(rows), "a row was written twice"
    return keyed


def test_write_kill_resume_and_read_back_on_s3(world, models, tmp_path, s3):
    uri, fs = s3
    with fs.open_output_stream("runs/prompts.jsonl") as f:  # the prompts come from the bucket too
        f.write(Path(world["prompts"]).read_bytes())
    cfg = base_config(world, tmp_path, data={"source": uri("prompts.jsonl"), "limit": 48},
                      decode={"micro_batch_size": 2, "method": "pargs-greedy"}, output={"rows_per_file": 6})
    local = build(GenerateConfig, cfg)
    run_generate(local, models=models, progress=False)  # the same run on local disk: the reference
    cfg["output"]["path"] = uri("out")
    cfg["model"]["enforce_eager"] = True  # each driver starts an engine: eager starts faster, same rows
    path = tmp_path / "s3.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, **CREDENTIALS}
    terminal, library = tmp_path / "driver.out", tmp_path / "driver.log"
    with open(terminal, "w") as out:
        driver = subprocess.Popen([CLI, "generate", "--config", str(path), "--no-progress", "--log-file", str(library)],
                                  env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    selector = pafs.FileSelector("runs/out", recursive=True, allow_not_found=True)

    def durable():  # micro-batches written: in part files, or pending for a part not yet written
        paths = [i.path for i in fs.get_file_info(selector)]
        parts = {p.split("/")[-1][:-8] for p in paths if p.endswith(".parquet") and "/.pargs/" not in p}
        return 3 * len(parts) + sum("/mb-" in p and p.split("/")[-2] not in parts for p in paths)

    # 24 micro-batches: killed at the 4th (one file and one batch of the next), with 20 left as margin for
    # a slow listing on a busy machine; however long the driver takes to get there, while it runs
    while driver.poll() is None and durable() < 4:
        time.sleep(0.05)
    if driver.poll() is not None:
        said = terminal.read_text()[-3000:] + (library.read_text()[-3000:] if library.exists() else "")
        raise AssertionError(f"the driver exited ({driver.returncode}) with {durable()} of 24 micro-batches "
                             f"written, before it could be killed:\n{said}")
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and its vLLM engine process: no orphan left
    driver.wait()
    assert 4 <= durable() < 24

    result = subprocess.run([CLI, "generate", "--config", str(path), "--no-progress", "--log-file",
                             str(tmp_path / "rerun.log")], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(next(x for x in result.stdout.splitlines() if x.startswith("summary: "))[9:])
    assert summary["resumed_rows"] >= 8 and summary["rows"] + summary["resumed_rows"] == 48
    assert summary["output"] == uri("out")
    # read back with pyarrow straight from the bucket: the same rows as on local disk, each once
    assert rows_of(pq.read_table("runs/out", filesystem=fs)) == rows_of(read_output(tmp_path / "out"))
    assert rows_of(read_output(uri("out"))) == rows_of(read_output(tmp_path / "out"))
    names = sorted(i.path for i in fs.get_file_info(selector) if i.type == pafs.FileType.File)
    assert names == ["runs/out/.pargs/run.json", "runs/out/.pargs/summary.json"] + [
        f"runs/out/part-00000{n}.parquet" for n in range(8)]
    # the evaluation job reads the run from the bucket as it reads it from disk
    from pargs_batch.evaluation.config import EvalConfig
    from pargs_batch.evaluation.run import run_evaluate

    def evaluate(run, out):
        return run_evaluate(build(EvalConfig, {"runs": [run], "labels": ["r"], "output_dir": str(tmp_path / out),
                                               "gold_reward": "experiments.world.tiny:gold_reward",
                                               "batch_rows": 5}), progress=False)["runs"]["r"]

    on_s3, on_disk = evaluate(uri("out"), "eval-s3"), evaluate(str(tmp_path / "out"), "eval-local")
    assert on_s3["gold"] == on_disk["gold"] and on_s3["rows"] == 48 and on_s3["gold"]["prompts"] == 48
