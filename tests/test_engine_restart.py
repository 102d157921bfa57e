"""An engine that dies is replaced, not retried: vLLM's engine core process is killed in the middle of
a local run (stepped mode, and fused mode with the engine core in its own process), the worker starts a
new engine (and in-engine guide), says so, and runs the micro-batch again; every row is written once
and equals the row of an uninterrupted run on the shared engine. A worker that has used up
``ray.max_retries`` restarts gives up with a clear error instead."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest
from helpers import base_config

from pargs_batch.config import GenerateConfig
from pargs_batch.configlib import build
from pargs_batch.generation import run_generate
from pargs_batch.io.output import read_output


def engine_cores() -> list:
    """vLLM engine-core processes started by this test process."""
    import psutil

    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "EngineCore" in " ".join(child.cmdline()) or "EngineCore" in child.name():
                found.append(child)
        except psutil.Error:
            pass
    return found


def kill_after_first_micro_batch(out: Path, before: set[int], done: threading.Event, killed: list) -> None:
    """Once the run has made a micro-batch durable, SIGKILL the engine core it started (one not in
    ``before``): the next engine call finds it dead."""
    while not done.is_set():
        if list(out.glob(".pargs/pending/*/mb-*.parquet")) or list(out.glob("part-*.parquet")):
            cores = [p for p in engine_cores() if p.pid not in before]
            if cores:
                for core in cores:
                    os.kill(core.pid, signal.SIGKILL)
                killed.extend(c.pid for c in cores)
                return
        done.wait(0.05)


def rows_of(path) -> dict:
    return {(r["id"], r["sample_index"]): (r["response_token_ids"], r["error"]) for r in read_output(path).to_pylist()}


@pytest.mark.parametrize("mode", ["stepped", "fused"])
def test_a_killed_engine_core_is_replaced_and_every_row_is_written_once(world, tmp_path, models, monkeypatch,
                                                                        capfd, mode):
    sections = dict(decode={"micro_batch_size": 4, "max_new_tokens": 12, "method": "pargs"},
                    data={"limit": 16}, engine={"mode": mode})
    reference = base_config(world, tmp_path, **sections)
    reference["output"]["path"] = str(tmp_path / "reference")
    if mode == "stepped":  # the session's engine: an uninterrupted run costs no engine start
        run_generate(build(GenerateConfig, reference), models=models, progress=False)
    if mode == "fused":
        # the uninterrupted run in this process (the CPU default: the quickest start); the killed run
        # in vLLM's own layout, the engine core in a process of its own, so it can be killed alone
        run_generate(build(GenerateConfig, reference), progress=False)
        monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    cfg = base_config(world, tmp_path, **sections)
    out = tmp_path / "killed"
    cfg["output"]["path"] = str(out)
    before = {p.pid for p in engine_cores()}
    done, killed = threading.Event(), []
    killer = threading.Thread(target=kill_after_first_micro_batch, args=(out, before, done, killed), daemon=True)
    killer.start()
    try:
        summary = run_generate(build(GenerateConfig, cfg), progress=False)  # its own worker, which owns its engine
    finally:
        done.set()
        killer.join()
    assert killed, "the engine core was never found to kill"
    assert "the vLLM engine died; starting a new one (restart 1 of at most 2)" in capfd.readouterr().err
    got, want = rows_of(out), rows_of(tmp_path / "reference")
    assert summary.rows == len(got) == len(want) == 16 and summary.error_rows == 0
    assert got == want  # every row once, each the uninterrupted run's


def test_after_max_retries_restarts_the_worker_gives_up_with_a_clear_error(world, tmp_path):
    from pargs_batch.pool import DecodeWorker

    cfg = build(GenerateConfig, base_config(world, tmp_path, ray={"enabled": False, "max_retries": 0}))
    worker = DecodeWorker.__new__(DecodeWorker)  # a worker whose engine is already dead: nothing to load
    worker.config, worker.engine, worker.restarts, worker.lock = cfg, object(), 0, threading.Lock()
    with pytest.raises(RuntimeError, match=r"died again after 0 restart\(s\); gave up \(ray.max_retries=0\)"):
        worker.restart(worker.engine)


def test_engine_death_is_read_through_the_exception_chain():
    from vllm.v1.engine.exceptions import EngineDeadError

    from pargs_batch.pool import engine_died

    try:
        try:
            raise EngineDeadError()
        except EngineDeadError as dead:
            raise RuntimeError("a runner's own error around it") from dead
    except RuntimeError as wrapped:
        assert engine_died(wrapped)
    a, b = ValueError("a"), KeyError("b")
    a.__context__, b.__context__ = b, a  # a cycle ends the walk
    assert not engine_died(a) and not engine_died(TimeoutError())
