"""Workers that turn micro-batches of prompts into rows, in this process or as a Ray actor pool.

``DecodeWorker`` is a plain class: one vLLM engine, the LLM's tokenizer and a reward scorer that
may be local or on Ray reward actors (``plan.placement.reward_placement`` says which). Its engine sits
behind a lock, so when a worker runs two micro-batches at once (two threads of a Ray actor) the
engine steps one while the reward actor scores the other's candidates.

Ray appears only here: ``RayPool`` builds N decode-worker actors and M <= N reward actors from the
plain classes with ``ray.remote(...)``, with the resources and placement-group bundles
``placement.plan`` gives them (a worker and its reward actor share a bundle: one node, and by
default on GPUs one device). Dead actors are restarted and their micro-batches
retried by Ray up to ``ray.max_retries`` times; after that the driver writes those rows as errors.
A worker whose vLLM engine dies (while the worker lives) replaces the engine itself, up to
``ray.max_retries`` times, in either pool. ``LocalPool`` is the same interface without Ray.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace

from pargs_batch.plan import placement
from pargs_batch.io.batch import MicroBatchResult, PromptRow
from pargs_batch.config import GenerateConfig
from pargs_batch.guidance import GuideInfo
from pargs_batch.models.loading import Models, RemoteScorer, reward_actors
from pargs_batch.runners import make_runner
from pargs_batch.plan.placement import reward_placement


class LockedEngine:
    """An engine shared by threads: one engine call at a time; ``wait_s`` is the time spent
    queueing for it and ``preempted`` the requests vLLM preempted during its calls (one instance
    per micro-batch, so both are that micro-batch's)."""

    def __init__(self, engine, lock: threading.Lock):
        self.engine, self.lock = engine, lock
        self.max_model_len, self.eos_ids = engine.max_model_len, engine.eos_ids
        self.wait_s = 0.0
        self.preempted = 0
        self.count = engine.config.log_stats

    def _locked(self, call, *args, **kwargs):
        t0 = time.perf_counter()
        with self.lock:
            self.wait_s += time.perf_counter() - t0
            before = self.engine.preemptions() if self.count else 0
            try:
                return call(*args, **kwargs)
            finally:
                if self.count:
                    self.preempted += self.engine.preemptions() - before

    def topk(self, prefixes, k, **kwargs):
        return self._locked(self.engine.topk, prefixes, k, **kwargs)

    def sample(self, *args, **kwargs):
        return self._locked(self.engine.sample, *args, **kwargs)

    def guided(self, *args, **kwargs):
        return self._locked(self.engine.guided, *args, **kwargs)

    def fused_records(self, keys, last_tokens=None):
        return self._locked(self.engine.fused_records, keys, last_tokens)


def engine_died(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) says vLLM's engine core is dead: its process exited or
    stopped answering (an out-of-memory error, a hung or killed worker). Such an engine answers every
    later request the same way; only a new one helps."""
    seen = set()
    while error is not None and id(error) not in seen:
        if type(error).__name__ == "EngineDeadError":
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


class DecodeWorker:
    """Runs micro-batches through its own engine; thread-safe for concurrent ``generate`` calls.

    A micro-batch that finds the engine dead starts a new engine (and, in fused mode, its in-engine
    guide) and runs again, up to ``ray.max_retries`` restarts of the worker's life; the rows of a
    micro-batch are made from its prompts alone, so the rerun writes what an uninterrupted run would."""

    def __init__(self, config: GenerateConfig, scorer=None):
        """``scorer``: a remote reward scorer; None loads what the config needs in this process."""
        self.config = config
        self.models = Models()  # owned: closed with the worker
        self.remote = scorer
        self.engine, self.tokenizer, local = self.models.for_config(config, load_scorer=scorer is None)
        self.scorer = scorer or local
        self.lock = threading.Lock()
        self.restarts = 0

    @classmethod
    def from_models(cls, config: GenerateConfig, engine, tokenizer, scorer) -> DecodeWorker:
        """A worker around models already loaded (tests, the demo and the bench share them); it cannot
        replace an engine it does not own."""
        worker = cls.__new__(cls)
        worker.config, worker.engine, worker.tokenizer, worker.scorer = config, engine, tokenizer, scorer
        worker.models = None  # the caller's: left open
        worker.lock = threading.Lock()
        worker.restarts = 0
        return worker

    def restart(self, dead) -> None:
        """Replace the engine ``dead`` with a new one (unless another thread already has): the dead
        one is shut down, the tokenizer and a local reward scorer are kept."""
        from pargs_batch.console import console

        with self.lock:
            if self.engine is not dead:
                return
            if self.restarts >= self.config.ray.max_retries:
                raise RuntimeError(f"the vLLM engine died again after {self.restarts} restart(s); gave up "
                                   f"(ray.max_retries={self.config.ray.max_retries})")
            self.restarts += 1
            console.say(f"generate: the vLLM engine died; starting a new one (restart {self.restarts} of at most "
                        f"{self.config.ray.max_retries}) and running its micro-batches again")
            try:
                self.models.close()  # the dead engine's processes, waited for
            except Exception:  # noqa: BLE001 - a dead engine may fail its own shutdown
                self.models.engines.clear()
            self.engine, self.tokenizer, local = self.models.for_config(self.config, load_scorer=self.remote is None)
            self.scorer = self.remote or local

    def guide_info(self) -> GuideInfo | None:
        """What the engine's fused guidance reports of its start (``Engine.guide_info``)."""
        return self.engine.guide_info()

    def close(self) -> None:
        """Shut the engines this worker loaded down cleanly (vLLM otherwise kills them at exit)."""
        if self.models is not None:
            self.models.close()

    def generate(self, prompts: list[PromptRow]) -> MicroBatchResult:
        """One micro-batch: its rows, best-of-n candidates, per-phase seconds and token count. Each row
        that reached the engine gets an equal share of the micro-batch's wall seconds as ``wall_s``
        (queueing for the engine included: with several micro-batches in flight the shares sum to
        more than the run's wall). An engine found dead is replaced and the micro-batch run again."""
        while True:
            engine = self.engine
            try:
                return self._generate(engine, prompts)
            except Exception as e:
                if self.models is None or not engine_died(e):
                    raise
                self.restart(engine)

    def _generate(self, current, prompts: list[PromptRow]) -> MicroBatchResult:
        engine = LockedEngine(current, self.lock)
        t0 = time.perf_counter()
        result = make_runner(self.config, engine, self.tokenizer, self.scorer).run(prompts)
        # shared by the rows that cost something (a prompt refused before generation took no time)
        spent = [r for r in result.rows if r.llm_prefill_tokens or r.llm_decode_tokens] or result.rows
        share = (time.perf_counter() - t0) / max(len(spent), 1)
        for row in spent:
            row.wall_s = share
        # the engine phase is the engine's own work; queueing behind another micro-batch is apart
        result.phase_s.engine -= engine.wait_s
        result.phase_s.engine_wait = engine.wait_s
        result.preemptions = engine.preempted
        return result

    def ready(self) -> bool:
        return True


class LocalPool:
    """One worker in this process; ``submit`` runs at once."""

    def __init__(self, worker: DecodeWorker):
        self.worker = worker
        self.done: list[tuple[object, tuple]] = []
        self.capacity = 1

    def submit(self, key, prompts: list[PromptRow]) -> None:
        try:
            self.done.append((key, ("ok", self.worker.generate(prompts))))
        except Exception as e:  # noqa: BLE001 - the driver turns it into error rows
            self.done.append((key, ("error", f"failed: {type(e).__name__}: {e}")))

    def pending(self) -> int:
        return len(self.done)

    def next_result(self):
        return self.done.pop(0)

    def guide_info(self) -> list:
        return [self.worker.guide_info()]

    def shutdown(self) -> None:
        self.worker.close()


class RayPool:
    """N decode-worker actors and M reward actors; at most ``inflight_per_worker`` calls each."""

    def __init__(self, config: GenerateConfig, memory=None):
        """``memory``: the run's ``memory.MemoryPlan`` (its settings already applied to ``config``)."""
        import ray

        r = config.ray
        actors = (r.num_reward_actors or r.num_workers) if reward_placement(config, on_ray=True) == "actor" else 0
        self.plan = placement.plan(config, actors, ray.cluster_resources().get("GPU", 0), memory)
        self.group = placement.place(self.plan.bundles) if self.plan.bundles else None
        self.rewards = reward_actors(config.reward, [self.plan.actor_options(i, self.group) for i in range(actors)],
                                     r.max_retries)
        if self.plan.gpu_memory_utilization and config.model.gpu_memory_utilization is None:
            config = replace(config, model=replace(config.model,
                                                   gpu_memory_utilization=self.plan.gpu_memory_utilization))
        worker_cls = ray.remote(DecodeWorker)
        self.workers = [
            worker_cls.options(**self.plan.worker_options(i, self.group), max_restarts=r.max_retries,
                               max_task_retries=r.max_retries, max_concurrency=r.inflight_per_worker)
            .remote(config, RemoteScorer([self.rewards[i % actors]]) if actors else None)
            for i in range(r.num_workers)]
        # wait for the models to load, so that start-up is not counted as generation time
        ray.get([w.ready.remote() for w in self.workers] + [a.score.remote([], []) for a in self.rewards])
        self.capacity = r.num_workers * r.inflight_per_worker
        self.retries = r.max_retries
        self.load = [0] * r.num_workers
        self.inflight: dict = {}  # ObjectRef -> (key, worker index)

    def submit(self, key, prompts: list[PromptRow]) -> None:
        w = min(range(len(self.workers)), key=self.load.__getitem__)
        ref = self.workers[w].generate.remote(prompts)
        self.inflight[ref] = (key, w)
        self.load[w] += 1

    def pending(self) -> int:
        return len(self.inflight)

    def next_result(self):
        """The next finished micro-batch: (key, ("ok", MicroBatchResult) | ("error", cause))."""
        import ray

        (ref,), _ = ray.wait(list(self.inflight), num_returns=1)
        key, w = self.inflight.pop(ref)
        self.load[w] -= 1
        try:
            return key, ("ok", ray.get(ref))
        except ray.exceptions.RayError as e:
            cause = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            return key, ("error", f"failed after {self.retries} retries: {type(e).__name__}: {cause}")

    def guide_info(self) -> list:
        import ray

        return ray.get([w.guide_info.remote() for w in self.workers])

    def shutdown(self) -> None:
        import ray

        try:  # engines closed, not killed with their actors
            ray.get([w.close.remote() for w in self.workers], timeout=60)
        except ray.exceptions.RayError:
            pass  # a dead or stuck worker: killed below all the same
        for actor in self.workers + self.rewards:
            ray.kill(actor)
        if self.group is not None:
            from ray.util.placement_group import remove_placement_group

            remove_placement_group(self.group)


def cluster_devices():
    """The devices a Ray run plans for: the cluster's GPUs (their memory read by a one-GPU task on
    one of them), or this machine's CPU when the cluster has none."""
    import ray

    from pargs_batch.plan.shapes import Devices

    gpus = int(ray.cluster_resources().get("GPU", 0))
    if not gpus:
        return Devices.detect()

    def probe():
        import torch

        props = torch.cuda.get_device_properties(0)
        return int(props.total_memory), props.name

    size, name = ray.get(ray.remote(num_gpus=1, num_cpus=0)(probe).remote(), timeout=placement.PLACEMENT_TIMEOUT_S)
    return Devices("cuda", gpus, size, name)


def init_ray(address: str | None = None) -> None:
    """Join ``address`` (or RAY_ADDRESS, as under `ray job submit`), else start a local Ray.

    Only a Ray started here gets our worker environment: on a cluster the job's own runtime_env
    (working_dir, pip, env_vars) must stay in force, so nothing is passed that would replace it.
    """
    import ray

    if ray.is_initialized():
        return
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address)
    else:
        ray.init(runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false",
                                           "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING")}})
