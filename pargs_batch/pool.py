"""Workers that turn micro-batches of prompts into rows, in this process or as a Ray actor pool.

``DecodeWorker`` is a plain class: one vLLM engine, the LLM's tokenizer and a reward scorer that
may be local or a Ray actor. Its engine sits behind a lock, so when a worker runs two micro-batches
at once (two threads of a Ray actor) the engine steps one while the reward actor scores the
other's candidates.

``RayPool`` builds the actors from the plain classes with ``ray.remote(...)`` only here: N decode
workers and M <= N reward actors (shared round-robin), each with configured resources (fractional
GPUs let an engine and its reward model share a device). Dead actors are restarted and their
micro-batches retried by Ray up to ``ray.max_retries`` times; after that the driver writes those
rows as errors. ``LocalPool`` is the same interface without Ray.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict

from pargs_batch.batch import PromptRow
from pargs_batch.config import GenerateConfig, RewardConfig
from pargs_batch.decoding import METHODS


def load_models(config: GenerateConfig, with_scorer: bool = True):
    """The engine, the LLM's tokenizer and (for guided methods) the reward scorer, in this process."""
    from transformers import AutoTokenizer

    from pargs_batch.engine import Engine

    guided = METHODS[config.decode.method].uses_reward
    tokenizer_path = config.model.tokenizer or config.model.path
    if config.engine.mode == "fused" and config.decode.method != "best-of-n":
        from pargs_batch.fused import engine_kwargs

        # the reward model loads inside the engine, beside the logits processor
        engine = Engine(config.model, fused=engine_kwargs(config.reward if guided else None, tokenizer_path))
        return engine, AutoTokenizer.from_pretrained(tokenizer_path), None
    engine = Engine(config.model)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    scorer = make_scorer(config.reward, len(tokenizer)) if guided and with_scorer else None
    return engine, tokenizer, scorer


def make_scorer(reward: RewardConfig, llm_vocab_size: int | None = None):
    """The reward scorer ``reward.backend`` names."""
    if reward.backend == "causal":
        from pargs_batch.causal_reward import CausalRewardScorer

        return CausalRewardScorer(reward, llm_vocab_size)
    from pargs_batch.reward import HFRewardScorer

    return HFRewardScorer(reward)


class LockedEngine:
    """An engine shared by threads: one engine call at a time; ``wait_s`` is the time spent
    queueing for it (one instance per micro-batch, so the wait is that micro-batch's)."""

    def __init__(self, engine, lock: threading.Lock):
        self.engine, self.lock = engine, lock
        self.max_model_len = engine.max_model_len
        self.wait_s = 0.0

    def _locked(self, call, *args, **kwargs):
        t0 = time.perf_counter()
        with self.lock:
            self.wait_s += time.perf_counter() - t0
            return call(*args, **kwargs)

    def topk(self, prefixes, k):
        return self._locked(self.engine.topk, prefixes, k)

    def sample(self, *args, **kwargs):
        return self._locked(self.engine.sample, *args, **kwargs)

    def guided(self, *args, **kwargs):
        return self._locked(self.engine.guided, *args, **kwargs)


class RemoteScorer:
    """A reward scorer living in a Ray actor, called like a local one."""

    def __init__(self, actor):
        self.actor = actor

    def score(self, prompts, responses):
        import ray

        return ray.get(self.actor.score.remote(prompts, responses))


class DecodeWorker:
    """Steps micro-batches through its own engine; thread-safe for concurrent ``generate`` calls."""

    def __init__(self, config: GenerateConfig, scorer=None):
        self.config = config
        self.engine, self.tokenizer, local_scorer = load_models(config, with_scorer=scorer is None)
        self.scorer = scorer or local_scorer
        self.lock = threading.Lock()

    @classmethod
    def from_models(cls, config: GenerateConfig, engine, tokenizer, scorer) -> "DecodeWorker":
        """A worker around models already loaded (tests and the demo share them)."""
        worker = cls.__new__(cls)
        worker.config, worker.engine, worker.tokenizer, worker.scorer = config, engine, tokenizer, scorer
        worker.lock = threading.Lock()
        return worker

    def generate(self, prompts: list[PromptRow]) -> dict:
        """One micro-batch: its rows, best-of-n candidates, per-phase seconds and token count."""
        from pargs_batch.bestofn import BestOfN
        from pargs_batch.stepper import Stepper

        c = self.config
        engine = LockedEngine(self.engine, self.lock)
        args = (engine, self.scorer, self.tokenizer, c.decode)
        names = {"llm_name": c.model.path, "reward_name": c.reward.path or None}
        if c.decode.method == "best-of-n":
            runner = BestOfN(*args, **names)
            rows, candidates = runner.run(prompts)
        elif c.engine.mode == "fused":
            from pargs_batch.fused import FusedRunner

            runner = FusedRunner(*args, **names)
            rows, candidates = runner.run(prompts), []
        else:
            runner = Stepper(*args, **names)
            rows, candidates = runner.run(prompts), []
        phases = dict(runner.timings)
        # the engine phase is the engine's own work; queueing behind another micro-batch is apart
        phases["engine"] = phases.get("engine", 0.0) - engine.wait_s
        phases["engine_wait"] = engine.wait_s
        return {"rows": rows, "candidates": candidates, "phase_s": phases, "tokens": runner.tokens_generated}

    def pid(self) -> int:
        return os.getpid()


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
            self.done.append((key, ("error", f"{type(e).__name__}: {e}")))

    def pending(self) -> int:
        return len(self.done)

    def next_result(self):
        return self.done.pop(0)

    def shutdown(self) -> None:
        pass


class RayPool:
    """N decode-worker actors and M reward actors; at most ``inflight_per_worker`` calls each."""

    def __init__(self, config: GenerateConfig):
        import ray

        from pargs_batch.reward import HFRewardScorer

        r = config.ray
        retry = {"max_restarts": r.max_retries, "max_task_retries": r.max_retries}
        self.rewards = []
        # the causal backend keeps per-sequence state and fused mode scores inside the engine:
        # both keep the reward model in each decode worker, beside the engine
        if METHODS[config.decode.method].uses_reward and config.reward.backend == "hf" \
                and config.engine.mode == "stepped":
            reward_cls = ray.remote(HFRewardScorer).options(**r.reward_resources, **retry)
            self.rewards = [reward_cls.remote(config.reward) for _ in range(r.num_reward_actors or r.num_workers)]
        worker_cls = ray.remote(DecodeWorker).options(
            **r.engine_resources, **retry, max_concurrency=r.inflight_per_worker)
        self.workers = [
            worker_cls.remote(config, RemoteScorer(self.rewards[i % len(self.rewards)]) if self.rewards else None)
            for i in range(r.num_workers)]
        # wait for the engines to load, so that start-up is not counted as generation time
        ray.get([w.pid.remote() for w in self.workers] + [a.score.remote([], []) for a in self.rewards])
        self.capacity = r.num_workers * r.inflight_per_worker
        self.per_worker = r.inflight_per_worker
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
        """The next finished micro-batch: (key, ("ok", (rows, stats)) | ("error", cause))."""
        import ray

        (ref,), _ = ray.wait(list(self.inflight), num_returns=1)
        key, w = self.inflight.pop(ref)
        self.load[w] -= 1
        try:
            return key, ("ok", ray.get(ref))
        except ray.exceptions.RayError as e:
            cause = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            return key, ("error", f"{type(e).__name__}: {cause}")

    def worker_pids(self) -> list[int]:
        import ray

        return ray.get([w.pid.remote() for w in self.workers])

    def shutdown(self) -> None:
        import ray

        for actor in self.workers + self.rewards:
            ray.kill(actor)


def init_ray(config: GenerateConfig) -> None:
    """Join the configured cluster (or RAY_ADDRESS, as under `ray job submit`), else start a local Ray.

    Only a Ray started here gets our worker environment: on a cluster the job's own runtime_env
    (working_dir, pip, env_vars) must stay in force, so nothing is passed that would replace it.
    """
    import ray

    if ray.is_initialized():
        return
    if config.ray.address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=config.ray.address)
    else:
        ray.init(runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false",
                                           "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING")}})


def merge_stats(total: dict, stats: dict) -> None:
    for phase, seconds in stats["phase_s"].items():
        total["phase_s"][phase] += seconds
    total["tokens"] += stats["tokens"]


def new_stats() -> dict:
    return {"phase_s": defaultdict(float), "tokens": 0, "start": time.perf_counter()}
