"""Loading the models a run needs: the one home for how engines, tokenizers and scorers are made,
following the plan's decisions (``plan.placement.reward_placement``: in the engine, in the worker,
or on Ray reward actors).

``Models`` loads each engine, tokenizer and reward scorer once in this process and hands the same
one to every run that asks for it (the demo's runs share one engine; a bench's runs share engines
and scorers across batch sizes). A decode worker holds one ``Models``; ``load_models`` is the
one-off form. ``engine_kwargs`` is what vLLM needs to load the in-engine guide (and its reward model);
``reward_actors`` loads a scorer on Ray actors and ``RemoteScorer`` calls them like a local one.
"""

from __future__ import annotations

import json
from dataclasses import asdict

from pargs_batch.config import GenerateConfig, ModelConfig, RewardConfig
from pargs_batch.decoding import METHODS
from pargs_batch.guidance import GuideSetup
from pargs_batch.plan.placement import guides_in_engine
from pargs_batch.rewards.factory import make_scorer


class Models:
    """Engines, tokenizers and scorers of this process, keyed by the config that decides them."""

    def __init__(self):
        self.engines: dict[str, object] = {}
        self.tokenizers: dict[str, object] = {}
        self.scorers: dict[str, object] = {}

    def engine(self, model: ModelConfig, fused_reward: RewardConfig | None = None, fused: bool = False):
        """A vLLM engine for ``model``; ``fused`` loads the guidance logits processor into it, with
        ``fused_reward``'s scorer beside it (None: unguided, e.g. top-k in fused mode)."""
        from pargs_batch.models.engine import Engine

        tokenizer = model.tokenizer or model.path
        key = engine_key(model, fused_reward, fused)
        if key not in self.engines:
            self.engines[key] = fused_engine(model, fused_reward, tokenizer) if fused else Engine(model)
        return self.engines[key]

    def tokenizer(self, path: str):
        from transformers import AutoTokenizer

        if path not in self.tokenizers:
            self.tokenizers[path] = AutoTokenizer.from_pretrained(path)
        return self.tokenizers[path]

    def scorer(self, reward: RewardConfig, llm_vocab_size: int | None = None):
        key = json.dumps([asdict(reward), llm_vocab_size], sort_keys=True)
        if key not in self.scorers:
            self.scorers[key] = make_scorer(reward, llm_vocab_size)
        return self.scorers[key]

    def for_config(self, config: GenerateConfig, load_scorer: bool = True):
        """(engine, LLM tokenizer, reward scorer or None) for ``config``. In fused mode the scorer
        lives inside the engine and None is returned; ``load_scorer=False`` when the caller
        brings its own (a Ray reward actor)."""
        guided = METHODS[config.decode.method].uses_reward
        tokenizer = self.tokenizer(config.model.tokenizer or config.model.path)
        if guides_in_engine(config):
            reward = config.reward if guided else None
            return self.engine(config.model, reward, fused=True), tokenizer, None
        scorer = self.scorer(config.reward, len(tokenizer)) if guided and load_scorer else None
        return self.engine(config.model), tokenizer, scorer

    @staticmethod
    def engine_key_for(config: GenerateConfig) -> str:
        """Which engine ``for_config(config)`` uses (equal keys share one)."""
        if guides_in_engine(config):
            return engine_key(config.model, config.reward if METHODS[config.decode.method].uses_reward else None, True)
        return engine_key(config.model, None, False)

    def release(self, keep: set[str]) -> None:
        """Close the engines whose keys are not in ``keep`` (what later runs need): on a GPU two
        engines at the default memory share do not fit side by side."""
        for key in [k for k in self.engines if k not in keep]:
            self.engines.pop(key).close()

    def close(self) -> None:
        """Stop every engine's vLLM engine core now rather than at interpreter exit."""
        for engine in self.engines.values():
            engine.close()
        self.engines.clear()

    def __enter__(self) -> Models:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def engine_key(model: ModelConfig, fused_reward: RewardConfig | None, fused: bool) -> str:
    return json.dumps([asdict(model), fused, asdict(fused_reward) if fused_reward else None], sort_keys=True)


def fused_engine(model: ModelConfig, reward: RewardConfig | None, tokenizer: str):
    """An engine with the guidance processor (one class for either of vLLM's model runners) and its
    reward model inside."""
    from pargs_batch.models.engine import Engine
    return Engine(model, fused=engine_kwargs(reward, tokenizer))


def load_models(config: GenerateConfig):
    """(engine, tokenizer, scorer) for one run, loaded in this process."""
    return Models().for_config(config)


def engine_kwargs(reward: RewardConfig | None, tokenizer: str) -> dict:
    """What ``vllm.LLM`` needs to load the guidance (and its reward model) into the engine: one
    processor class that either model runner takes, and the records extension."""
    from dataclasses import asdict

    setup = GuideSetup(tokenizer=tokenizer, reward=asdict(reward) if reward and reward.members else None)
    return {"logits_processors": ["pargs_batch.in_engine.processor:PargsLogitsProcessor"],
            "worker_extension_cls": "pargs_batch.in_engine.records.RecordsExtension",
            "additional_config": setup.to_wire()}



class ScorerActor:
    """The body of a Ray reward actor: the scorer ``make_scorer`` picks, loaded in the actor."""

    def __init__(self, reward: RewardConfig):
        self.scorer = make_scorer(reward)

    def score(self, prompts: list, responses: list[str], weights: list | None = None):
        return self.score_costed(prompts, responses, weights)[0]

    def score_costed(self, prompts: list, responses: list[str], weights: list | None = None):
        if weights is None:
            return self.scorer.score_costed(prompts, responses)
        return self.scorer.score_costed(prompts, responses, weights=weights)


class RemoteScorer:
    """A reward scorer on one or more Ray actors, called like a local one: a call is split evenly
    across the actors and the scores come back in input order."""

    def __init__(self, actors: list):
        self.actors = list(actors)

    def score(self, prompts: list[str], responses: list[str], weights: list | None = None):
        return self.score_costed(prompts, responses, weights)[0]

    def score_costed(self, prompts: list[str], responses: list[str], weights: list | None = None):
        """Scores, tokens read and model calls per input, as ``HFRewardScorer.score_costed``
        (``weights``: per input, for a ``WeightedScorer``)."""
        import numpy as np
        import ray

        n = len(self.actors)
        extra = (lambda i: {}) if weights is None else (lambda i: {"weights": weights[i::n]})
        if n == 1:
            return ray.get(self.actors[0].score_costed.remote(prompts, responses, **extra(0)))
        parts = [a.score_costed.remote(prompts[i::n], responses[i::n], **extra(i)) for i, a in enumerate(self.actors)]
        out = np.zeros(len(prompts), dtype=np.float32)
        tokens, calls = np.zeros(len(prompts), dtype=np.int64), np.zeros(len(prompts), dtype=np.int64)
        for i, (part, part_tokens, part_calls) in enumerate(ray.get(parts)):
            out[i::n], tokens[i::n], calls[i::n] = part, part_tokens, part_calls
        return out, tokens, calls


def reward_actors(reward: RewardConfig, options: list[dict], max_retries: int = 0) -> list:
    """One Ray actor per entry of ``options`` (its resources and scheduling), each loading the scorer of
    ``reward`` through ``make_scorer`` (a first call waits for it)."""
    import ray

    cls = ray.remote(ScorerActor)
    return [cls.options(**o, max_restarts=max_retries, max_task_retries=max_retries).remote(reward) for o in options]

