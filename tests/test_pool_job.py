"""`ray job submit` of the generation job to a head node of its own, started with `ray start` on 127.0.0.1."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pargs_batch.io.output import read_output

from helpers import HeadNode, pool_config

# The head node here is this test's own (helpers.HeadNode: free ports, its temp dir, its process session) and
# only it is stopped: a Ray elsewhere on the machine (tests/test_serve_ray.py's, another session's) is never touched.
pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
def test_ray_job_submit_on_a_local_head_node(world, tmp_path):
    bin_dir = Path(sys.executable).parent
    # Ray 2.5x+ clusters require a token; the CLI sends ~/.ray/auth_token when told to
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_AUTH_MODE": "token"}
    cfg = pool_config(world, tmp_path, "job", batch=8, limit=16)
    cfg["output"]["path"] = "outputs/job-run"  # relative: lands in Ray's copy of the working_dir
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(cfg))
    head = HeadNode(tmp_path / "ray-start.log", env)
    try:
        head.wait_started()
        result = subprocess.run(
            [bin_dir / "ray", "job", "submit", "--address", head.dashboard, "--working-dir", str(ROOT),
             "--runtime-env-json", json.dumps({"excludes": [".venv", "outputs", ".git"]}),
             "--", sys.executable, "jobs/generate.py", "--config", str(path), "--no-progress"],
            capture_output=True, text=True, env=env)
        log = result.stdout + result.stderr
        assert result.returncode == 0, log[-3000:]
        assert "succeeded" in result.stdout
        # the uploaded copy of the package ran, not the one installed here
        code = re.search(r"pargs_batch from (\S+)", log).group(1)
        assert "runtime_resources" in code and not code.startswith(str(ROOT))
        assert code.startswith(head.temp_dir)  # this head node's own temp dir
        # the run says where a relative output.path went, and the rows are there
        summary = json.loads(re.search(r"summary: (\{.*\})", log).group(1))
        assert "output.path 'outputs/job-run' is relative" in log and summary["output"] in log
        assert summary["output"].startswith(str(Path(code).parent)) and not (ROOT / "outputs" / "job-run").exists()
        assert read_output(summary["output"]).num_rows == 16
        assert summary["placement"]["bundles"] == [{"CPU": 0.5}]
    finally:
        head.stop()
    assert not head.processes(), "a process of this test's Ray cluster outlived it"
