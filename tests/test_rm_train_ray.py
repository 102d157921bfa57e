"""Reward-model training as a Ray job (jobs/train_rm.py): `ray job submit` to a head node of the test's own,
two CPU workers on Ray Train, against the same YAML under `torchrun --nproc_per_node 2`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from pargs_batch.config import RewardConfig
from pargs_batch.configlib import ConfigError

from helpers import HeadNode, free_port
from jobs.train_rm import MAX_CPU_WORKERS, scaling

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def rm_config(world, out: Path, **training) -> dict:
    """Full-mode training on the tiny world's 300 preference triples (as tests/test_rm_train.py trains it)."""
    t = {"output_dir": str(out), "learning_rate": 3e-3, "per_device_train_batch_size": 16,
         "gradient_accumulation_steps": 1, "num_train_epochs": 6, "logging_steps": 5, "max_length": 128}
    return {"mode": "full", "model": world["reward_model_init"],
            "data": {"source": world["preferences"], "format": "generic", "eval_fraction": 0.2},
            "training": t | training}


def summary(out: Path) -> dict:
    return json.loads((out / "training_summary.json").read_text())


@pytest.mark.slow
def test_ray_job_trains_as_torchrun_does(world, tmp_path):
    """The same YAML through `ray job submit` (two Ray Train workers, the default on a 2-CPU cluster) and
    through `torchrun --nproc_per_node 2`: the same updates, held-out accuracy within each other's interval, a
    checkpoint the reward factory loads as reward.path; and ZeRO-3 across the two workers, its DeepSpeed
    config named by a path relative to the job's working_dir, as the YAMLs name it."""
    cfg_path = tmp_path / "rm.yaml"
    cfg_path.write_text(yaml.safe_dump(rm_config(world, tmp_path / "ray")))
    # Ray 2.5x+ clusters require a token; the CLI sends ~/.ray/auth_token when told to
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_AUTH_MODE": "token"}
    head = HeadNode(tmp_path / "ray-start.log", env)  # starts while torchrun trains
    try:
        torchrun = subprocess.run(
            [BIN / "torchrun", "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
             "-m", "rm_training.train", "--config", str(cfg_path), f"training.output_dir={tmp_path / 'torchrun'}"],
            cwd=ROOT, capture_output=True, text=True, env=env | {"OMP_NUM_THREADS": "1"})
        assert torchrun.returncode == 0, torchrun.stderr[-3000:]
        head.wait_started()

        def submit(*args: str) -> str:
            result = subprocess.run(
                [BIN / "ray", "job", "submit", "--address", head.dashboard, "--working-dir", str(ROOT),
                 "--runtime-env-json", json.dumps({"excludes": [".venv", "outputs", ".git"]}),
                 "--", sys.executable, "jobs/train_rm.py", "--config", str(cfg_path), *args],
                capture_output=True, text=True, env=env)
            log = result.stdout + result.stderr
            assert result.returncode == 0 and "succeeded" in result.stdout, log[-3000:]
            return log

        log = submit()
        zero3_log = submit("--num-workers", "2", f"training.output_dir={tmp_path / 'ray-z3'}", "training.max_steps=3",
                           "training.deepspeed=rm_training/configs/zero3.json")
    finally:
        head.stop()
    assert not head.processes(), "a process of this test's Ray cluster outlived it"

    ray, ref = summary(tmp_path / "ray"), summary(tmp_path / "torchrun")
    assert f"train_rm: 2 CPU worker(s), backend gloo; output {tmp_path / 'ray'}" in log
    assert "world_rank=1" in log and ray["world_size"] == ref["world_size"] == 2
    assert "held-out pairwise accuracy (whole responses)" in log  # rank 0's summary, printed by the job
    assert (tmp_path / "ray" / "ray_train").is_dir()
    # each update averages both workers' shards: 240 pairs / (16 x 2) per step, 6 epochs
    assert ray["steps"] == ref["steps"] == 8 * 6
    for a, b in ((ray, ref), (ref, ray)):
        low, high = b["pairwise_interval"]
        assert low <= a["pairwise_accuracy"] <= high, (ray, ref)
    assert ray["pairwise_accuracy"] > 0.6 and ray["eval_loss_after"] < ray["eval_loss_before"] - 0.02
    from pargs_batch.rewards.factory import make_scorer, trained_backend

    assert trained_backend(str(tmp_path / "ray")) == "hf"
    scorer = make_scorer(RewardConfig(path=str(tmp_path / "ray")))
    good, bad = scorer.score(["review of the cafe :"] * 2,
                             [" staff was lovely , food was warm . five stars .",
                              " staff was rude , food was stale . never again ."])
    assert np.isfinite([good, bad]).all() and good > bad

    z3 = summary(tmp_path / "ray-z3")
    assert "DeepSpeed " in zero3_log and z3["world_size"] == 2
    assert z3["deepspeed_zero_stage"] == 3 and z3["steps"] == 3 and np.isfinite(z3["train_loss"])
    assert Path(z3["config"]["training"]["deepspeed"]).is_absolute()
    assert np.isfinite(make_scorer(RewardConfig(path=str(tmp_path / "ray-z3"))).score(["p"], [" staff was lovely"])).all()


@pytest.mark.parametrize("override,message", [
    ("mode=dpo", "config error: mode='dpo'"),
    ("data.format=tldr", "config error: data.format='tldr' is not allowed: needs column(s) info, summaries, choice"),
])
def test_bad_config_stops_in_the_driver(override, message, world, tmp_path):
    """A bad key, or data the format cannot read, fails in the driver with one line: no Ray, no worker."""
    cfg_path = tmp_path / "rm.yaml"
    cfg_path.write_text(yaml.safe_dump(rm_config(world, tmp_path / "out")))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    result = subprocess.run([sys.executable, "jobs/train_rm.py", "--config", str(cfg_path), override],
                            cwd=ROOT, capture_output=True, text=True, env=env)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and message in errors[0], errors
    assert "train_rm:" not in result.stderr and "Ray instance" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_workers_default_to_the_cluster_gpus_else_its_cpus():
    assert scaling(None, None, {"CPU": 2.0}) == (2, False)
    assert scaling(None, None, {"CPU": 64.0}) == (MAX_CPU_WORKERS, False)
    assert scaling(None, None, {"CPU": 32.0, "GPU": 4.0}) == (4, True)
    assert scaling(3, False, {"CPU": 32.0, "GPU": 4.0}) == (3, False)
    assert scaling(None, None, {}) == (1, False)
    with pytest.raises(ConfigError, match="--use-gpu=True is not allowed: the cluster has no GPU"):
        scaling(None, True, {"CPU": 8.0})
    with pytest.raises(ConfigError, match="--num-workers=0"):
        scaling(0, None, {"CPU": 8.0})
