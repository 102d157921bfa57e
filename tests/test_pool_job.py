"""`ray job submit` of the generation job to a head node of its own, started with `ray start` on 127.0.0.1."""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import yaml

from pargs_batch.io.output import read_output

from helpers import free_port, pool_config

# The head node here is
# this test's own (free ports, its temp dir, its process session) and only it is stopped: a Ray elsewhere on
# the machine (tests/test_serve_ray.py's, another session's) is never touched.
pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
PORTS = ("port", "dashboard-port", "ray-client-server-port", "node-manager-port", "object-manager-port",
         "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port")


def alive(p: psutil.Process) -> bool:
    """Running (a zombie has exited: its parent, or init, has yet to reap it)."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class HeadNode:
    """``ray start --head --block`` in a session of its own, on free ports and in its own temp dir: every
    process of the cluster is in that session (or names the temp dir), so stopping it (SIGTERM to
    ``ray start``, which stops the processes it started, then whatever of the session is left) stops
    this cluster alone - unlike `ray stop`, which stops every Ray on the machine."""

    def __init__(self, log: Path, env: dict):
        # Ray's socket paths live under the temp dir and must stay under 108 characters: a short one in /tmp
        self.temp_dir = tempfile.mkdtemp(prefix="pargs-ray-")
        self.ports = {name: free_port() for name in PORTS}
        self.dashboard = f"http://127.0.0.1:{self.ports['dashboard-port']}"
        self.log = log
        with open(log, "w") as out:
            self.proc = subprocess.Popen(
                [Path(sys.executable).parent / "ray", "start", "--head", "--block", "--num-cpus", "2",
                 "--temp-dir", self.temp_dir, "--dashboard-host", "127.0.0.1", "--node-ip-address", "127.0.0.1",
                 *[arg for name, port in self.ports.items() for arg in (f"--{name}", str(port))]],
                env=env | {"RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"},  # nothing to drain when it stops
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_started(self) -> None:
        """Until `ray start` says it is up (what it says where, without --block, it returns), however long
        that takes; fails if it exits first."""
        while "will now block forever" not in self.log.read_text():
            try:
                self.proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                continue
            raise AssertionError(f"ray start exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")

    def processes(self) -> list[psutil.Process]:
        """The live processes of this cluster: those in `ray start`'s session, and any naming its temp dir."""
        found = []
        for p in psutil.process_iter(["cmdline"]):
            try:
                mine = os.getsid(p.pid) == self.proc.pid or self.temp_dir in " ".join(p.info["cmdline"] or [])
            except (OSError, psutil.Error):
                continue
            if mine and alive(p):
                found.append(p)
        return found

    def stop(self) -> None:
        """Stop this cluster and only it: SIGTERM to `ray start` (it stops the processes it started,
        then exits), then SIGKILL to whatever of its cluster is still there, waited for."""
        try:
            started = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            started = []
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait()
        left = [p for p in {p.pid: p for p in [*started, *self.processes()]}.values() if alive(p)]
        for p in left:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        while any(alive(p) for p in left):  # SIGKILLed: gone at once, but not necessarily yet
            time.sleep(0.1)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


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
