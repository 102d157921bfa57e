"""The Ray pool on a real local Ray: determinism, kill-and-resume, a dying actor, `ray job submit`.

The kill tests run fused engines (the reward model inside vLLM, in the actor's own process): an
actor's engine starts in ~15 s rather than ~50 s, and fused on Ray is tested where it matters most."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
import yaml

from pargs_batch.config import GenerateConfig

from pargs_batch.configlib import build
from pargs_batch.generation import run_generate
from pargs_batch.io.output import read_output

from helpers import base_config, pool_config

# Ray: each test process starts its own local Ray (conftest's ray_local, or the run's own); two xdist
# workers may each run one at once, and a test touches only the Ray it started
pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "pargs-batch")
FIRST_BATCH = ".pargs/pending/part-000000/mb-000000000.parquet"


def content(path):
    """Rows keyed by (id, sample_index), without what may differ between runs."""
    rows = read_output(path).to_pylist()
    keyed = {(r["id"], r["sample_index"]): r for r in rows}
    assert len(keyed) == len(rows), "a row was written twice"
    return {k: (r["response_token_ids"], r["response"], r["finish_reason"], r["error"],
                [round(x, 4) for x in r["rewards"] or []]) for k, r in keyed.items()}


@pytest.fixture(scope="module")
def reference(world, tmp_path_factory, models):
    """The rows an in-process run (no Ray, one micro-batch of 64) writes for the first 40 prompts."""
    tmp = tmp_path_factory.mktemp("reference")
    cfg = base_config(world, tmp, data={"limit": 40})
    run_generate(build(GenerateConfig, cfg), models=models, progress=False)
    return content(tmp / "out")


@pytest.fixture(scope="module")
def fused_reference(world, tmp_path_factory):
    """The rows an in-process fused run writes for the first 40 prompts (fused draws differ from stepped's)."""
    tmp = tmp_path_factory.mktemp("fused_reference")
    run_generate(build(GenerateConfig, base_config(world, tmp, data={"limit": 40}, engine={"mode": "fused"})),
                 progress=False)
    return content(tmp / "out")


def test_one_or_two_workers_and_any_batch_size_give_the_same_rows(ray_local, world, tmp_path, reference):
    """Two workers sharing one reward actor, micro-batches of 3, write the rows of one in-process worker
    with one micro-batch of 40 (one worker on Ray: the placement and killed-worker tests below)."""
    two = run_generate(build(GenerateConfig, pool_config(world, tmp_path, "two", workers=2, batch=3,
                                                         num_reward_actors=1)), progress=False)
    assert two.rows == 40 and two.micro_batches == 14 and two.workers == 2
    assert content(tmp_path / "two") == reference
    assert set(vars(two.phase_s)) == {"engine", "engine_wait", "reward", "decode", "io"}
    # each worker with its reward actor in one bundle; the second worker's bundle holds it alone
    assert two.placement["bundles"] == [{"CPU": 0.5}, {"CPU": 0.25}]


def test_block_methods_with_several_weighted_reward_models_on_ray_equal_in_process(ray_local, world, tmp_path, models):
    """Early rejection guided by two reward models, each prompt with its own weights: the Ray pool
    (the weighted scorer on a reward actor) writes the rows and costs one process writes."""
    from pargs_batch.rewards.hf import WeightedScorer

    rows = [json.loads(line) for line in open(world["prompts"])][:12]
    for i, row in enumerate(rows):
        row["w"] = [1.0, 0.5] if i % 3 else [0.0, 2.0]
    source = tmp_path / "weighted.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def config(name, on_ray):
        cfg = pool_config(world, tmp_path, name, batch=5, limit=12)
        cfg["ray"]["enabled"] = on_ray
        cfg["data"].update(source=str(source), weights_column="w")
        cfg["decode"].update(method="early-rejection", n_candidates=4, block_tokens=4, max_new_tokens=12)
        cfg["reward"] = {"batch_size": 16, "models": [{"path": world["reward_model"], "weight": 1.0},
                                                      {"path": world["reward_model_init"], "weight": 1.0}]}
        return build(GenerateConfig, cfg)

    here = config("here", False)
    run_generate(here, models=(models[0], models[1], WeightedScorer(here.reward)), progress=False)
    summary = run_generate(config("ray", True), progress=False)
    assert summary.rows == 12 and summary.placement is not None
    assert content(tmp_path / "ray") == content(tmp_path / "here")
    costs = ["llm_decode_tokens", "reward_tokens", "reward_calls"]
    cost = lambda name: {r["id"]: [r[c] for c in costs] for r in read_output(tmp_path / name).to_pylist()}  # noqa: E731
    assert cost("ray") == cost("here") and all(c[2] > 0 for c in cost("ray").values())


def test_a_worker_and_its_reward_actor_run_in_one_bundle_of_one_placement_group(ray_local, world, tmp_path):
    from pargs_batch.pool import RayPool

    def where(_self):
        import ray

        context = ray.get_runtime_context()
        return (context.get_placement_group_id(), context.get_node_id(), context.get_assigned_resources())

    pool = RayPool(build(GenerateConfig, pool_config(world, tmp_path, "placed")))
    try:
        (worker,), (actor,) = pool.workers, pool.rewards
        w_group, w_node, w_res = ray_local.get(worker.__ray_call__.remote(where))
        a_group, a_node, a_res = ray_local.get(actor.__ray_call__.remote(where))
        assert w_group == a_group == pool.group.id.hex() and w_node == a_node
        assert w_res == {"CPU": 0.25} and a_res == {"CPU": 0.25}
        table = ray_local.util.placement_group_table(pool.group)
        assert table["strategy"] == "PACK" and table["bundles"] == {0: {"CPU": 0.5}}
    finally:
        pool.shutdown()


def durable_batches(out: Path, per_file: int) -> int:
    """Micro-batches a driver has made durable: pending ones plus those compacted into part files."""
    parts = {p.stem for p in out.glob("part-*.parquet")}  # a pending directory outlives its compaction briefly
    pending = sum(p.parent.name not in parts for p in out.glob(".pargs/pending/*/mb-*.parquet"))
    return pending + per_file * len(parts)


def test_a_driver_killed_at_random_points_resumes_exactly_once(ray_local, world, tmp_path, fused_reference):
    """SIGKILL twice at random micro-batches (never on a file boundary: mid-file), then run to the end."""
    import random

    cfg = pool_config(world, tmp_path, "killed", batch=2, mode="fused",
                      address=ray_local.get_runtime_context().gcs_address)
    cfg["output"]["rows_per_file"] = 6  # 3 micro-batches of 2 rows a file
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "killed"
    rng = random.Random(7)
    targets = sorted(rng.sample([n for n in range(2, 17) if n % 3], 2))
    for target in targets:
        driver = subprocess.Popen([CLI, "generate", "--config", str(path), "--no-progress"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        while driver.poll() is None and durable_batches(out, 3) < target:  # however long a busy machine takes
            time.sleep(0.05)
        assert driver.poll() is None, "the run finished before it could be killed"
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and its vLLM engine process: no orphan left
        driver.wait()
        assert target <= durable_batches(out, 3) < 20
        assert all(pq.read_metadata(f).num_rows == 6 for f in out.glob("part-*.parquet"))  # whole files only

    # the same command again: skips what is finished, produces the rest
    result = subprocess.run([CLI, "generate", "--config", str(path), "--no-progress"],
                            capture_output=True, text=True, timeout=1800)  # a guard against a hang, not a bound on speed
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(next(x for x in result.stdout.splitlines() if x.startswith("summary: "))[9:])
    assert summary["resumed_rows"] >= 2 * targets[-1] and summary["rows"] + summary["resumed_rows"] == 40
    assert content(out) == fused_reference
    assert not list(out.glob(".pargs/pending/*/*")) and len(list(out.glob("part-*.parquet"))) == 7

    # a different config on the same directory is refused, and --overwrite starts over
    changed = subprocess.run([CLI, "generate", "--config", str(path), "decode.beta=3.0"],
                             capture_output=True, text=True, timeout=600)
    assert changed.returncode == 2 and "decode.beta: 2.0 -> 3.0" in changed.stderr


def _kill_first(name: str, after_file: Path, killed: list, done: threading.Event) -> None:
    """SIGKILL the first actor process called ``name`` once ``after_file`` exists. Only this test
    process's own Ray is searched (its raylet, and so its workers, are this process's descendants):
    another test's Ray on the machine is never touched."""
    while not after_file.exists() and not done.is_set():
        time.sleep(0.1)
    for proc in psutil.Process().children(recursive=True):
        try:
            cmdline = proc.cmdline()
        except psutil.Error:
            continue
        if cmdline and cmdline[0].startswith(name):
            os.kill(proc.pid, signal.SIGKILL)
            killed.append(proc.pid)
            return


def test_a_dying_decode_worker_is_restarted_and_its_batches_retried(ray_local, world, tmp_path, fused_reference):
    killed, done = [], threading.Event()
    killer = threading.Thread(target=_kill_first,
                              args=("ray::DecodeWorker", tmp_path / "faulty" / FIRST_BATCH, killed, done))
    killer.start()
    try:
        summary = run_generate(build(GenerateConfig, pool_config(world, tmp_path, "faulty", batch=4, mode="fused")),
                               progress=False)
    finally:
        done.set()
        killer.join()
    assert killed, "no decode worker was killed"
    assert summary.rows == 40 and summary.error_rows == 0
    assert content(tmp_path / "faulty") == fused_reference
    assert len(summary.guidance) == 1  # the guidance ran inside the actor's engine


def test_retries_are_bounded_then_rows_carry_the_error(ray_local, world, tmp_path):
    killed, done = [], threading.Event()
    killer = threading.Thread(target=_kill_first,
                              args=("ray::ScorerActor", tmp_path / "doomed" / FIRST_BATCH, killed, done))
    killer.start()
    cfg = pool_config(world, tmp_path, "doomed", batch=4, max_retries=0)
    try:
        summary = run_generate(build(GenerateConfig, cfg), progress=False)
    finally:
        done.set()
        killer.join()
    rows = read_output(tmp_path / "doomed").to_pylist()
    assert killed and len(rows) == 40 and len({(r["id"], r["sample_index"]) for r in rows}) == 40
    failed = [r for r in rows if r["finish_reason"] == "error"]
    assert failed and summary.error_rows == summary.retryable_error_rows == len(failed)
    assert all(r["error"].startswith("infrastructure: micro-batch failed after 0 retries") and "Actor" in r["error"]
               for r in failed)
    # the output shows them, but they are not finished: a rerun takes them out and makes them
    again = run_generate(build(GenerateConfig, cfg), progress=False)
    assert again.retried_rows == again.rows == len(failed) and again.error_rows == 0
    rows = read_output(tmp_path / "doomed").to_pylist()
    assert len(rows) == 40 and len({(r["id"], r["sample_index"]) for r in rows}) == 40
    assert all(r["error"] is None for r in rows)
