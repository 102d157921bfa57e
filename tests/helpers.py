"""Helpers the test modules share (configs on the tiny world, generation with models already loaded,
the duplicate-id case, the docs' code blocks run as a reader runs them); fixtures are in conftest.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

SMALL_ACTOR = {"num_cpus": 0.25}  # two CPUs must hold every actor of a Ray test


def base_config(world, tmp_path, **sections) -> dict:
    """A generate config dict on the tiny world; ``sections`` update single keys per section."""
    cfg = {
        "model": {"path": world["llm"], "dtype": "float32", "max_model_len": 256,
                  "kv_cache_memory_bytes": 64 << 20},
        "reward": {"path": world["reward_model"], "batch_size": 16},
        "decode": {"method": "pargs", "beta": 2.0, "top_k": 10, "max_new_tokens": 16, "seed": 0,
                   "micro_batch_size": 64},
        "data": {"source": world["prompts"], "id_column": "id", "limit": 32},
        "output": {"path": str(tmp_path / "out")},
        "ray": {"enabled": False},
    }
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    return cfg


def generate_rows(world, tmp_path, models, name="out", **sections):
    """Generate on the tiny world into ``tmp_path / name`` with ``models`` already loaded: (rows, summary)."""
    from pargs_batch.config import GenerateConfig
    from pargs_batch.configlib import build
    from pargs_batch.generation import run_generate
    from pargs_batch.io.output import read_output

    cfg = base_config(world, tmp_path, **sections)
    cfg["output"]["path"] = str(tmp_path / name)
    summary = run_generate(build(GenerateConfig, cfg), models=models, progress=False)
    return read_output(tmp_path / name).to_pylist(), summary


def pool_config(world, tmp_path, name, workers=1, batch=4, limit=40, mode="stepped", **ray):
    """A config on the Ray pool; its engines eager (each actor starts its own: compiling costs ~20 s
    a start, and eager rows equal compiled ones, tests/test_ray_data.py)."""
    cfg = base_config(world, tmp_path, data={"limit": limit}, decode={"micro_batch_size": batch},
                      engine={"mode": mode})
    cfg["model"]["enforce_eager"] = True
    cfg["output"]["path"] = str(tmp_path / name)
    cfg["ray"] = {"enabled": True, "num_workers": workers, "engine_resources": SMALL_ACTOR,
                  "reward_resources": SMALL_ACTOR, **ray}
    return cfg


def duplicate_prompts(path, world) -> str:
    prompts = [json.loads(line) for line in open(world["prompts"])][:3]
    rows = [prompts[0], prompts[1], {"id": prompts[0]["id"], "prompt": "a different prompt"}, prompts[2]]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def check_duplicates(rows: list[dict], num_samples: int) -> None:
    assert len(rows) == 4 * num_samples
    good = [(r["id"], r["sample_index"]) for r in rows if r["error"] is None]
    bad = [r for r in rows if r["error"] is not None]
    assert len(good) == len(set(good)) == 3 * num_samples  # each good row once
    assert len(bad) == num_samples and all("duplicate id" in r["error"] for r in bad)
    assert all(r["prompt"] == "a different prompt" for r in bad)
    # one micro-batch's rows stay in input order, the repeat in its own place (third of four)
    assert [r["error"] is not None for r in rows] == [i // num_samples == 2 for i in range(4 * num_samples)]


SKIP = "<!-- not run by tests/"
BLOCK = re.compile(r"(?P<before>[^\n]*)\n```(?P<lang>bash|python)\n(?P<code>.*?)```", re.S)


def doc_blocks(path: Path) -> list[tuple[str, str]]:
    """(language, code) of each bash/python block of a docs page, less those marked as not run."""
    return [(m["lang"], m["code"]) for m in BLOCK.finditer(path.read_text()) if not m["before"].startswith(SKIP)]


def reader_dir(world, chat_world, tmp_path) -> dict:
    """A reader's directory and shell: four prompts of the world, the models in $LLM, $RM, $EVAL_RM."""
    rows = [line for line in open(world["prompts"])][:4]
    (tmp_path / "prompts.jsonl").write_text("".join(rows))
    return dict(os.environ, LLM=chat_world["llm"], RM=chat_world["reward_model"], EVAL_RM=world["reward_model_init"],
                PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")


def run_block(lang: str, code: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    command = ["bash", "-euo", "pipefail", "-c", code] if lang == "bash" else [sys.executable, "-c", code]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{lang} block failed:\n{code}\n{result.stderr[-3000:]}"
    return result


# ---------------------------------------------------------------------- `pargs-batch serve`

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``pargs-batch serve`` in a subprocess, as a user runs it."""

    def __init__(self, config: dict, directory: Path, *flags: str):
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "serve.yaml"
        path.write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = directory / "serve.log"
        cli = str(Path(sys.executable).parent / "pargs-batch")
        self.proc = subprocess.Popen([cli, "serve", "--config", str(path), "--port", str(self.port),
                                      "--log-file", str(self.log), *flags],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_ready(self) -> str:
        """Its stage lines up to ``serve: ready``, however long its start takes; fails if it exits first."""
        lines = []
        while line := self.proc.stderr.readline():  # "" only once it has closed stderr: exited
            lines.append(line)
            if line.startswith("serve: ready"):
                return "".join(lines)
        raise AssertionError("server did not start:\n" + "".join(lines) +
                             (self.log.read_text()[-4000:] if self.log.exists() else ""))

    def stop(self, sig: int = signal.SIGINT) -> int:
        """Ctrl-C (or ``sig``, e.g. SIGTERM as a service manager stops it); its exit status."""
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def rest(self) -> tuple[str, str]:
        """What it printed after ``serve: ready`` (stdout, stderr), once it has exited."""
        return self.proc.communicate()

    def metrics(self) -> dict[str, float]:
        import urllib.request

        text = urllib.request.urlopen(f"{self.url}/metrics", timeout=30).read().decode()
        found = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                found[name] = float(value)
        return found

    def processes(self):
        import psutil

        root = psutil.Process(self.proc.pid)
        return [root, *root.children(recursive=True)]


# ---------------------------------------------------------------------- a Ray head node of a test's own

RAY_PORTS = ("port", "dashboard-port", "ray-client-server-port", "node-manager-port", "object-manager-port",
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
        self.ports = {name: free_port() for name in RAY_PORTS}
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


def send_json(handler, obj, status: int = 200) -> None:
    """Answer an http.server request with ``obj`` as JSON (the stand-in OpenAI servers' replies)."""
    data = json.dumps(obj).encode()
    handler.send_response(status)
    for name, value in (("Content-Type", "application/json"), ("Content-Length", str(len(data)))):
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(data)
