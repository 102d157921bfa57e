"""Where each model runs, decided here, once: the reward model's placement, and the Ray pool's actors
(the resources of each decode worker and reward actor, and the placement group that keeps a worker
beside its reward actor) from the config and the cluster (``plan``); ``RayPool`` only follows the plan.

The reward model's placement (``reward_placement``):

- ``engine``: fused mode (tokenwise methods) - the scorer lives inside vLLM's process, beside the
  logits processor that calls it every step;
- ``worker``: beside the engine in the decode worker - the causal and autoregressive backends (they
  keep per-sequence KV state between steps, which cannot cross a process boundary every token),
  best-of-n and the block methods in fused mode, and every run without Ray;
- ``actor``: a separate Ray reward actor shared round-robin by the decode workers - the ``hf``
  backend in stepped mode on Ray, so one worker's engine steps while the actor scores.

Methods without a reward (``topk``) have no placement (``None``).

Defaults (``ray.engine_resources`` / ``ray.reward_resources`` left unset):

- on a cluster without GPUs: one CPU each, no GPU;
- on a cluster with GPUs: each decode worker gets ``model.tensor_parallel_size`` whole GPUs. In
  stepped mode with reward actors, a worker with one GPU shares it with its reward actor, each
  taking the share the memory plan (``memory.plan_memory``) gives it from the two models' sizes, and
  vLLM defaults to its share of the GPU's memory; a reward actor that needs more than half a GPU
  (when the cluster has one to spare), or one beside a worker with several GPUs, gets a GPU of its own.

Each worker and the reward actor it is paired with (worker i with actor i, i < actors) form one
bundle of a placement group: Ray never splits a bundle across nodes, so a worker's per-token reward
calls never leave its node, and with a shared GPU both sit on the same device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pargs_batch.config import GenerateConfig
from pargs_batch.decoding import METHODS

PLACEMENT_TIMEOUT_S = 600  # how long to wait for the cluster to fit the pool before saying so


@dataclass
class Plan:
    engine: dict                       # Ray options of each decode worker: num_cpus, num_gpus
    reward: dict                       # of each reward actor
    actors: int                        # reward actors (0: the scorer lives in the workers)
    bundles: list[dict] = field(default_factory=list)  # one per worker; empty: no placement group
    gpu_memory_utilization: float | None = None         # vLLM's default share, where the GPU is shared

    def worker_options(self, i: int, group) -> dict:
        return self._options(self.engine, i, group)

    def actor_options(self, i: int, group) -> dict:
        return self._options(self.reward, i, group)

    def _options(self, resources: dict, i: int, group) -> dict:
        if group is None:
            return dict(resources)
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        return dict(resources, scheduling_strategy=PlacementGroupSchedulingStrategy(
            placement_group=group, placement_group_bundle_index=i))


def plan(config: GenerateConfig, actors: int, cluster_gpus: float, memory=None) -> Plan:
    """The resources and bundles of a pool of ``config.ray.num_workers`` workers and ``actors``
    reward actors on a cluster with ``cluster_gpus`` GPUs in all; ``memory``: the run's
    ``memory.MemoryPlan``, which says how a GPU is shared (needed when one is)."""
    r, tp = config.ray, config.model.tensor_parallel_size
    gpus = cluster_gpus > 0
    dedicated = memory is not None and memory.reward_gpu == "dedicated"
    shared = gpus and actors > 0 and tp == 1 and not dedicated
    share = None
    if shared and (r.engine_resources is None or r.reward_resources is None):
        if memory is None or memory.reward_share is None:
            raise ValueError("a GPU shared by a decode worker and its reward actor is split by the memory plan: "
                             "pass it (memory.plan_memory), or set ray.engine_resources and ray.reward_resources")
        share = memory.reward_share
    engine = r.engine_resources if r.engine_resources is not None else {
        "num_cpus": 1, "num_gpus": (round(1 - share, 2) if shared else tp) if gpus else 0}
    reward = r.reward_resources if r.reward_resources is not None else {
        "num_cpus": 1, "num_gpus": (share if shared else 1) if gpus else 0}
    result = Plan(engine=engine, reward=reward, actors=actors)
    share = engine.get("num_gpus", 0)
    if 0 < share < 1:  # a worker on part of a GPU: vLLM must not take the memory its neighbour needs
        result.gpu_memory_utilization = round(min(0.9, share), 3)
    if actors:
        bundles = [_bundle(engine, reward if i < actors else {}) for i in range(r.num_workers)]
        if all(bundles):
            result.bundles = bundles
    return result


def _bundle(*resources: dict) -> dict:
    """The bundle holding actors with these options (Ray's CPU/GPU names; zeros left out)."""
    cpus = sum(x.get("num_cpus", 0) for x in resources)
    gpus = sum(x.get("num_gpus", 0) for x in resources)
    gpus = gpus if gpus <= 1 else math.ceil(gpus)  # fractions only within one device
    return {k: v for k, v in (("CPU", cpus), ("GPU", gpus)) if v}


def place(bundles: list[dict]):
    """A placement group of ``bundles`` (PACK: as few nodes as will hold them), once the cluster has
    room for it; a cluster that cannot hold it in ``PLACEMENT_TIMEOUT_S`` is an error naming both."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    group = placement_group(bundles, strategy="PACK", name="")
    try:
        ray.get(group.ready(), timeout=PLACEMENT_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        remove_placement_group(group)
        raise RuntimeError(f"the Ray cluster could not place the pool's {len(bundles)} worker bundles "
                           f"({bundles[0]} each) within {PLACEMENT_TIMEOUT_S} s; it has "
                           f"{ray.cluster_resources()}: lower ray.num_workers or the resources") from None
    return group


def guides_in_engine(config: GenerateConfig) -> bool:
    """Whether the run's engine carries the fused logits processor: fused mode, the tokenwise methods
    (best-of-n and the block methods sample pi_ref through plain requests and score afterwards)."""
    return config.engine.mode == "fused" and METHODS[config.decode.method].tokenwise


def reward_placement(config: GenerateConfig, on_ray: bool) -> str | None:
    """Where the reward model of ``config`` runs: engine, worker, actor, or None (no reward)."""
    if not METHODS[config.decode.method].uses_reward:
        return None
    if guides_in_engine(config):
        return "engine"
    if config.reward.backend != "hf" or config.engine.mode == "fused" or not on_ray:
        return "worker"
    return "actor"

