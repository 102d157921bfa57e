"""`pargs-batch serve --replicas N`: N guided vLLM servers behind one Ray Serve endpoint.

Each Ray Serve replica of ``GuidedReplica`` runs one ``pargs-batch serve`` (vLLM's OpenAI-compatible
server with the guidance, ``serving.py``) on a free port of its node, in a child process tied to the
replica (it exits when the replica's process does), and forwards every HTTP request to it: the
body as sent, the response streamed back as it comes, so a server-sent stream stays a stream, a 400
stays a 400, and a client that goes away cancels the forwarded request, which vLLM aborts. Ray
Serve's proxy spreads requests over the replicas; each response names its replica in the
``x-pargs-replica`` header.

A replica's resources follow ``ray.engine_resources`` as a batch run's decode workers do: by default
one CPU, and on a cluster with GPUs ``model.tensor_parallel_size`` GPUs (its reward model shares
them, as in fused mode). ``/metrics`` answers for the replica the request reaches.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from pargs_batch.config import GenerateConfig

MAX_ONGOING = 256   # requests Ray Serve sends one replica at once: vLLM batches them
READY_TIMEOUT_S = 900
HOP_BY_HOP = {b"host", b"content-length", b"connection", b"keep-alive", b"transfer-encoding", b"upgrade"}
PARENT_ENV = "PARGS_BATCH_SERVE_PARENT"  # a child server exits when this process is gone


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ChildServer:
    """``pargs-batch serve`` for ``config`` in a child process on a free port of this host; its
    stage lines and library log in a directory of its own."""

    def __init__(self, config: dict, name: str | None = None, env: dict | None = None,
                 directory: str | Path | None = None):
        self.dir = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="pargs-serve-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / "serve.yaml"
        path.write_text(yaml.safe_dump(config))
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log, self.stages = self.dir / "serve.log", self.dir / "stages.log"
        argv = [sys.executable, "-m", "pargs_batch.cli", "serve", "--config", str(path), "--host", "127.0.0.1",
                "--port", str(self.port), "--log-file", str(self.log)] + (["--served-model-name", name] if name else [])
        with open(self.stages, "w") as stages:
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stages, env={**os.environ, **(env or {})})

    def wait_ready(self, timeout: float = READY_TIMEOUT_S, who: str = "server") -> str:
        """Its OpenAI base URL once it answers; raises with its output's tail if it exits or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "serve: ready" in self.stages.read_text():
                return self.base + "/v1"
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        tail = self.stages.read_text()[-2000:] + (self.log.read_text()[-3000:] if self.log.exists() else "")
        self.proc.kill()
        raise RuntimeError(f"{who}: its server did not start (exit {self.proc.poll()}):\n{tail}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class GuidedReplica:
    """One Ray Serve replica: a ``pargs-batch serve`` child and a streaming forwarder to it."""

    def __init__(self, config: dict, name: str | None = None):
        import httpx
        from ray import serve

        self.replica = serve.get_replica_context().replica_id.unique_id
        self.server = ChildServer(config, name=name, env={PARENT_ENV: str(os.getpid())})
        self.server.wait_ready(READY_TIMEOUT_S, f"replica {self.replica}")
        self.client = httpx.AsyncClient(base_url=self.server.base, timeout=None)

    async def __call__(self, request):
        from starlette.background import BackgroundTask
        from starlette.responses import StreamingResponse

        headers = [(k, v) for k, v in request.headers.raw if k.lower() not in HOP_BY_HOP]
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        forwarded = self.client.build_request(request.method, path, headers=headers, content=await request.body())
        response = await self.client.send(forwarded, stream=True)
        out = {k: v for k, v in response.headers.items() if k.lower().encode() not in HOP_BY_HOP}
        out["x-pargs-replica"] = self.replica
        return StreamingResponse(response.aiter_raw(), status_code=response.status_code, headers=out,
                                 background=BackgroundTask(response.aclose))

    def check_health(self) -> None:
        if self.server.proc.poll() is not None:
            raise RuntimeError(f"replica {self.replica}: its server exited ({self.server.proc.returncode})")

    def __del__(self):
        if getattr(self, "server", None) is not None:
            self.server.stop()


def serve_replicas(config: GenerateConfig, host: str, port: int, replicas: int, name: str | None = None,
                   on_ready=None) -> None:
    """Run ``replicas`` guided servers behind Ray Serve on ``host:port`` until SIGINT or SIGTERM."""
    import signal

    import ray
    from ray import serve

    from pargs_batch.plan.placement import plan
    from pargs_batch.pool import init_ray

    started_here = not ray.is_initialized()
    init_ray(config.ray.address)

    def interrupt(*_):
        raise KeyboardInterrupt("terminated")

    for number in (signal.SIGINT, signal.SIGTERM):  # SIGINT too: a shell's background job starts with it ignored
        signal.signal(number, interrupt)
    try:
        serve.start(http_options={"host": host, "port": port})
        # a replica is placed as a batch run's decode worker is (fused: its reward model shares its devices)
        options = plan(config, 0, ray.cluster_resources().get("GPU", 0)).engine
        deployment = serve.deployment(GuidedReplica, name="pargs-batch", num_replicas=replicas,
                                      max_ongoing_requests=MAX_ONGOING, ray_actor_options=options,
                                      health_check_period_s=10, graceful_shutdown_timeout_s=30)
        serve.run(deployment.bind(config.to_dict(), name), name="pargs-batch", route_prefix="/")
        if on_ready is not None:
            on_ready(f"http://{host}:{port}/v1")
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
        if started_here:
            ray.shutdown()


def exit_with_parent() -> None:
    """In a replica's child server: stop (SIGTERM to itself) once the replica's process is gone, so a
    replica killed without its ``__del__`` leaves no server behind."""
    parent = os.environ.get(PARENT_ENV)
    if not parent:
        return
    import signal
    import threading

    def watch():
        while True:
            time.sleep(1)
            if os.getppid() != int(parent):  # re-parented: the replica's process has exited
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, daemon=True, name="pargs-exit-with-parent").start()
