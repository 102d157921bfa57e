"""`pargs-batch serve --replicas 2`: two guided vLLM servers behind Ray Serve on a local Ray, spoken
to as one endpoint: requests spread over both, each answer the batch row, a 400 stays a 400, a stream
stays a stream, and a replica killed outright takes its server with it."""

from __future__ import annotations

import asyncio
import collections
import json
import signal
import time
from pathlib import Path

import psutil
import pytest
from helpers import Server, base_config

from pargs_batch.config import GenerateConfig
from pargs_batch.configlib import build

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("serve-ray")]  # its own Ray, in the server process
METHODS = ("pargs-greedy", "pargs")


@pytest.fixture(scope="module")
def replicated(world, tmp_path_factory):
    """The server (started first: its replicas load while the batch rows are made) and the batch rows."""
    import pargs_batch as pb

    tmp = tmp_path_factory.mktemp("serve-ray")
    server = Server(base_config(world, tmp / "cfg", engine={"mode": "fused"}), tmp / "run", "--replicas", "2")
    rows = {}
    with pb.Models() as models:
        for method in METHODS:
            cfg = build(GenerateConfig, base_config(world, tmp / method, engine={"mode": "fused"},
                                                    data={"limit": 8}, decode={"method": method}))
            pb.generate(cfg, models=models, progress=False)
            rows[method] = pb.read_output(cfg.output.path).to_pylist()
    server.stages = server.wait_ready()
    yield server, rows
    assert server.stop() in (0, -signal.SIGINT, 130)


def replica_servers(server) -> dict[int, list[psutil.Process]]:
    """Ray Serve's replica processes of this server (under the local Ray it started: its descendants, not
    those of any other Ray on the machine) and their child vLLM servers."""
    found = {}
    for p in server.processes():
        try:
            if "ServeReplica:pargs-batch" in " ".join(p.cmdline()):
                found[p.pid] = [c for c in p.children() if "pargs_batch.cli" in " ".join(c.cmdline())]
        except psutil.Error:
            continue
    return found


def test_two_replicas_share_the_requests_and_each_answer_is_the_batch_row(replicated, world):
    import httpx
    import openai

    server, rows = replicated
    assert "serve: ready at " + server.url + "/v1" in server.stages

    async def run():
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as c:
            async def one(method, row):
                r = await c.post("/v1/completions", json={"model": world["llm"], "prompt": row["prompt"],
                                                           "method": method, "id": row["id"], "return_token_ids": True})
                assert r.status_code == 200, r.text
                return r.headers["x-pargs-replica"], r.json()["choices"][0]["token_ids"]

            jobs = [(m, row) for m in METHODS for row in rows[m]] * 2
            return jobs, await asyncio.gather(*(one(*j) for j in jobs))

    jobs, got = asyncio.run(run())
    for (method, row), (_, ids) in zip(jobs, got):
        assert ids == row["response_token_ids"], (method, row["id"])
    spread = collections.Counter(replica for replica, _ in got)
    assert len(spread) == 2 and min(spread.values()) >= 4, spread  # 32 requests over both replicas

    c = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)
    with pytest.raises(openai.BadRequestError, match=r"top_k=99: candidates per step"):
        c.completions.create(model=world["llm"], prompt="a review :", extra_body={"top_k": 99})
    row = rows["pargs"][5]
    stream = c.completions.create(model=world["llm"], prompt=row["prompt"], stream=True,
                                  extra_body={"method": "pargs", "id": row["id"]})
    assert "".join(chunk.choices[0].text for chunk in stream) == row["response"]


def test_a_replica_killed_outright_takes_its_server_with_it_and_the_endpoint_still_answers(world, tmp_path):
    """On a server of its own: a killed replica changes the server it was part of (Ray Serve starts
    another in its place, and routes as it sees fit meanwhile), which no other test here should see."""
    import openai

    server = Server(base_config(world, tmp_path / "cfg", engine={"mode": "fused"}), tmp_path / "run", "--replicas", "2")
    try:
        server.stages = server.wait_ready()
        c = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)
        row = json.loads(Path(world["prompts"]).read_text().splitlines()[0])

        def answer() -> str:  # greedy: every replica gives the same reply (the other test: the batch row's)
            r = c.completions.create(model=world["llm"], prompt=row["prompt"],
                                     extra_body={"method": "pargs-greedy", "id": row["id"]})
            return r.choices[0].text

        before = answer()
        replicas = replica_servers(server)
        assert len(replicas) == 2 and all(len(children) == 1 for children in replicas.values()), replicas
        victim, (child,) = next(iter(replicas.items()))
        psutil.Process(victim).kill()  # no __del__, no graceful shutdown: the child must notice by itself
        child.wait()  # it does (it polls for its parent), however long its own shutdown takes
        while True:  # Ray Serve routes around the dead replica once its health check fails
            assert server.proc.poll() is None, "the server exited after a replica died"
            try:
                after = answer()
                break
            except openai.APIError:
                time.sleep(1)
        assert after == before
    finally:
        code = server.stop()
    assert code in (0, -signal.SIGINT, 130)
