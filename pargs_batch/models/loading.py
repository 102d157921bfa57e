"""Loading the models a run needs: the one home for how engines, tokenizers and scorers are made.

``Models`` loads each engine, tokenizer and reward scorer once in this process and hands the same
one to every run that asks for it (the demo's runs share one engine; a bench's runs share engines
and scorers across batch sizes). A decode worker holds one ``Models``; ``load_models`` is the
one-off form.
"""

from __future__ import annotations

import json
from dataclasses import asdict

from pargs_batch.config import GenerateConfig, ModelConfig, RewardConfig
from pargs_batch.decoding import METHODS
from pargs_batch.rewards.factory import guides_in_engine, make_scorer


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
    from pargs_batch.runners.fused import engine_kwargs

    return Engine(model, fused=engine_kwargs(reward, tokenizer))


def load_models(config: GenerateConfig):
    """(engine, tokenizer, scorer) for one run, loaded in this process."""
    return Models().for_config(config)
