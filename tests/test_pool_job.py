"""`ray job submit` of the generation job to a head node started with `ray start` on 127.0.0.1."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pargs_batch.io.output import read_output

from helpers import pool_config

# Ray: one local cluster at a time, and `ray stop` in the job test would end any other (one xdist worker runs them all)
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]
ROOT = Path(__file__).resolve().parents[1]


def test_ray_job_submit_on_a_local_head_node(world, tmp_path):
    bin_dir = Path(sys.executable).parent
    # Ray 2.5x+ clusters require a token; the CLI sends ~/.ray/auth_token when told to
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_AUTH_MODE": "token"}
    cfg = pool_config(world, tmp_path, "job", batch=8, limit=16)
    cfg["output"]["path"] = "outputs/job-run"  # relative: lands in Ray's copy of the working_dir
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(cfg))
    head = ["--port", "6390", "--dashboard-port", "8275", "--dashboard-host", "127.0.0.1",
            "--node-ip-address", "127.0.0.1", "--ray-client-server-port", "6391"]
    subprocess.run([bin_dir / "ray", "start", "--head", "--num-cpus", "2", *head], check=True, env=env,
                   capture_output=True, timeout=120)
    try:
        result = subprocess.run(
            [bin_dir / "ray", "job", "submit", "--address", "http://127.0.0.1:8275", "--working-dir", str(ROOT),
             "--runtime-env-json", json.dumps({"excludes": [".venv", "outputs", ".git"]}),
             "--", sys.executable, "jobs/generate.py", "--config", str(path), "--no-progress"],
            capture_output=True, text=True, timeout=400, env=env)
        log = result.stdout + result.stderr
        assert result.returncode == 0, log[-3000:]
        assert "succeeded" in result.stdout
        # the uploaded copy of the package ran, not the one installed here
        code = re.search(r"pargs_batch from (\S+)", log).group(1)
        assert "runtime_resources" in code and not code.startswith(str(ROOT))
        # the run says where a relative output.path went, and the rows are there
        summary = json.loads(re.search(r"summary: (\{.*\})", log).group(1))
        assert "output.path 'outputs/job-run' is relative" in log and summary["output"] in log
        assert summary["output"].startswith(str(Path(code).parent)) and not (ROOT / "outputs" / "job-run").exists()
        assert read_output(summary["output"]).num_rows == 16
        assert summary["placement"]["bundles"] == [{"CPU": 0.5}]
    finally:
        subprocess.run([bin_dir / "ray", "stop", "--force"], env=env, capture_output=True, timeout=120)
