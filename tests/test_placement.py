"""Where the Ray pool's actors go (placement.plan): defaults on CPU and GPU clusters, a worker and its
reward actor in one bundle, the example cluster configs fitting the clusters they are written for."""

from pathlib import Path

import pytest
import yaml
from helpers import base_config

from pargs_batch.config import GenerateConfig
from pargs_batch.configlib import build
from pargs_batch.plan.memory import plan_memory
from pargs_batch.plan.placement import plan
from pargs_batch.plan.shapes import Devices

ROOT = Path(__file__).resolve().parents[1]
ARCH = ROOT / "tests" / "data" / "architectures"


def config(world, tmp_path, workers=2, tp=1, **ray):
    cfg = base_config(world, tmp_path, ray={"num_workers": workers, **ray})
    cfg["model"]["tensor_parallel_size"] = tp
    return build(GenerateConfig, cfg)


def test_on_a_cpu_cluster_every_actor_takes_one_cpu_and_pairs_share_a_bundle(world, tmp_path):
    p = plan(config(world, tmp_path), actors=2, cluster_gpus=0)
    assert p.engine == p.reward == {"num_cpus": 1, "num_gpus": 0}
    assert p.bundles == [{"CPU": 2}, {"CPU": 2}] and p.gpu_memory_utilization is None


def test_on_gpus_a_worker_shares_its_gpu_with_its_reward_actor_as_the_memory_plan_says(world, tmp_path):
    cfg = config(world, tmp_path, workers=8)
    memory = plan_memory(cfg, Devices.given(8, "24GiB"))
    share = memory.reward_share  # the tiny reward model and its actor's CUDA context: a few hundredths of a GPU
    assert memory.reward_gpu == "shared" and 0 < share <= 0.05
    p = plan(cfg, actors=8, cluster_gpus=8, memory=memory)
    assert p.engine == {"num_cpus": 1, "num_gpus": round(1 - share, 2)}
    assert p.reward == {"num_cpus": 1, "num_gpus": share}
    assert p.bundles == [{"CPU": 2, "GPU": 1.0}] * 8  # one device per pair: both actors get its id
    assert p.gpu_memory_utilization == min(0.9, round(1 - share, 3))
    with pytest.raises(ValueError, match="memory plan"):  # no fixed guess of how a GPU is split
        plan(cfg, actors=8, cluster_gpus=8)


def test_without_reward_actors_a_worker_gets_whole_gpus_and_no_group(world, tmp_path):
    p = plan(config(world, tmp_path, workers=4, tp=2), actors=0, cluster_gpus=8)  # fused, causal or topk
    assert p.engine == {"num_cpus": 1, "num_gpus": 2} and p.bundles == [] and p.gpu_memory_utilization is None


def test_a_tensor_parallel_worker_gets_a_reward_gpu_of_its_own_on_its_node(world, tmp_path):
    p = plan(config(world, tmp_path, workers=2, tp=2), actors=2, cluster_gpus=8)
    assert p.engine["num_gpus"] == 2 and p.reward["num_gpus"] == 1 and p.bundles == [{"CPU": 2, "GPU": 3}] * 2


def test_configured_resources_win_and_fewer_actors_than_workers_leave_bundles_without_one(world, tmp_path):
    cfg = config(world, tmp_path, workers=3, num_reward_actors=1, engine_resources={"num_cpus": 2, "num_gpus": 0.5},
                 reward_resources={"num_gpus": 0.5})
    p = plan(cfg, actors=1, cluster_gpus=8)
    assert p.engine == {"num_cpus": 2, "num_gpus": 0.5} and p.reward == {"num_gpus": 0.5}
    assert p.bundles == [{"CPU": 2, "GPU": 1.0}, {"CPU": 2, "GPU": 0.5}, {"CPU": 2, "GPU": 0.5}]
    assert p.gpu_memory_utilization == 0.5


@pytest.mark.parametrize("name, gpus_per_node, nodes", [("pargs-1node-8gpu.yaml", 8, 1), ("pargs-multinode.yaml", 8, 4)])
def test_the_example_cluster_configs_fill_the_clusters_they_are_written_for(name, gpus_per_node, nodes, monkeypatch,
                                                                           world):
    monkeypatch.delenv("HF_HUB_OFFLINE")  # hub ids are checked by their form only (nothing downloads)
    raw = yaml.safe_load((ROOT / "jobs" / "configs" / name).read_text())
    if raw["data"]["source"].startswith("/"):  # the cluster's shared storage is not here
        raw["data"]["source"] = world["prompts"]
    # their checkpoints' shapes, from config.json files with the real models' shapes (nothing downloads)
    shapes = {"meta-llama/Meta-Llama-3-8B-Instruct": "meta-llama/Llama-3.1-8B-Instruct"}  # Llama-3's shapes, 8k
    shapes = {hub: shapes.get(hub, hub) for hub in (raw["model"]["path"], raw["reward"]["path"])}
    cfg = build(GenerateConfig, raw)
    local = build(GenerateConfig, {**raw, "model": {**raw["model"], "path": str(ARCH / shapes[raw["model"]["path"]])},
                                   "reward": {**raw["reward"], "path": str(ARCH / shapes[raw["reward"]["path"]])}})
    memory = plan_memory(local, Devices.given(gpus_per_node * nodes, "80GiB"))
    assert memory.reward_gpu == "shared" and memory.max_model_len == cfg.model.max_model_len
    cfg = memory.apply(cfg)
    p = plan(cfg, actors=cfg.ray.num_workers, cluster_gpus=gpus_per_node * nodes, memory=memory)
    assert all(b["GPU"] <= gpus_per_node for b in p.bundles)  # a bundle fits on one node
    assert sum(b["GPU"] for b in p.bundles) == gpus_per_node * nodes  # and every GPU is used
    assert cfg.reward.input in ("pair", "chat") and cfg.output.path.startswith("/")
