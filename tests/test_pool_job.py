"""`ray job submit` of the generation job to a head node started with `ray start` on 127.0.0.1."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pargs_batch.io import read_output

from test_pool import pool_config

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def test_ray_job_submit_on_a_local_head_node(world, tmp_path):
    bin_dir = Path(sys.executable).parent
    # Ray 2.5x+ clusters require a token; the CLI sends ~/.ray/auth_token when told to
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_AUTH_MODE": "token"}
    cfg = pool_config(world, tmp_path, "job", batch=8, limit=16)
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
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        assert "succeeded" in result.stdout
        assert read_output(tmp_path / "job").num_rows == 16
    finally:
        subprocess.run([bin_dir / "ray", "stop", "--force"], env=env, capture_output=True, timeout=120)
