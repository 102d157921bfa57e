"""Configuration of `pargs-batch evaluate`."""

from __future__ import annotations

import os
from dataclasses import dataclass

from pargs_batch.config import RewardConfig

from pargs_batch.configlib import ConfigError, Loadable, option, positive


@dataclass
class JudgeConfig:
    """The LLM judge: any OpenAI-compatible chat endpoint."""

    pairs: list[list[str]] = option("run labels to compare, [[A, B], ...]; empty: no judging", factory=list)
    base_url: str = option("endpoint, e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1", "")
    model: str = option("judge model name", "")
    api_key_env: str = option("environment variable holding the API key (never written anywhere)", "OPENAI_API_KEY")
    template: str = option("judge prompt: dialogue, summary, or a template file", "dialogue")
    seed: int = option("seed of the per-prompt order of the two responses", 0)
    max_concurrency: int = option("requests in flight", 8)
    max_retries: int = option("retries with backoff on 429, 5xx and timeouts", 3)
    parse_retries: int = option("asks again, in the same run, when the first line holds no two grades "
                                "(never past max_attempts)", 1)
    max_attempts: int = option("requests per comparison over all runs: an unparsable answer is kept in the "
                               "cache but asked again by the next run until this many were made", 3)
    timeout: float = option("seconds per request", 60.0)
    max_tokens: int = option("reply length limit", 128)
    max_tokens_param: str = option("the request field carrying it: max_tokens (vLLM, most servers) or "
                                   "max_completion_tokens (OpenAI reasoning models)", "max_tokens")
    temperature: float | None = option("sampling temperature; null leaves it out of the request", 0.0)
    extra_body: dict = option("more request fields, sent as they are (e.g. {top_k: 1} for vLLM, "
                              "{reasoning_effort: low})", factory=dict)
    max_prompts: int | None = option("judge at most this many shared prompts per pair", None)

    def __post_init__(self):
        for pair in self.pairs:
            if len(pair) != 2:
                raise ConfigError("judge.pairs", pair, "each pair is [label A, label B]")
        if self.pairs:
            for key in ("base_url", "model"):
                if not getattr(self, key):
                    raise ConfigError(f"judge.{key}", getattr(self, key), "required when judge.pairs is set")
        positive("judge.max_concurrency", self.max_concurrency)
        positive("judge.max_retries", self.max_retries, allow_zero=True)
        positive("judge.parse_retries", self.parse_retries, allow_zero=True)
        positive("judge.max_attempts", self.max_attempts)
        if self.max_tokens_param not in ("max_tokens", "max_completion_tokens"):
            raise ConfigError("judge.max_tokens_param", self.max_tokens_param, "one of: max_tokens, max_completion_tokens")
        positive("judge.max_prompts", self.max_prompts)


@dataclass
class EvalRay:
    """Scoring on Ray reward actors (each scores a share of the responses)."""

    enabled: bool = option("score on Ray actors instead of in this process", False)
    address: str | None = option("cluster to join; default: RAY_ADDRESS, else a local Ray", None)
    num_actors: int = option("reward-model actors", 1)
    resources: dict = option("Ray resources per actor", factory=lambda: {"num_cpus": 1, "num_gpus": 0})

    def __post_init__(self):
        positive("ray.num_actors", self.num_actors)


@dataclass
class EvalConfig(Loadable):
    """Everything `pargs-batch evaluate` needs."""

    runs: list[str] = option("generation output directories (local paths or pyarrow.fs URIs)", factory=list)
    labels: list[str] = option("a label per run; default: 'method beta=...'", factory=list)
    output_dir: str = option("where report.md, report.json, scores.parquet, judge.parquet and plots/ go",
                             "outputs/eval")
    batch_rows: int = option("rows read and scored at a time: what memory holds of a run's text", 4096)
    reward: RewardConfig = option("the evaluation reward model (not the guidance one)", factory=RewardConfig)
    allow_same_model: bool = option("allow the guidance reward model to also evaluate", False)
    gold_reward: str | None = option("'module:function' scoring (prompts, responses) -> floats", None)
    paired: list[list[str]] = option("run label pairs [[A, B], ...] compared as A - B over their shared "
                                     "prompts; empty: every pair of runs", factory=list)
    judge: JudgeConfig = option("LLM-judge win-tie", factory=JudgeConfig)
    cache_dir: str | None = option("judge cache; default: output_dir/judge_cache.sqlite", None)
    ray: EvalRay = option("optional Ray reward actors for scoring", factory=EvalRay)

    def __post_init__(self):
        if not self.runs:
            raise ConfigError("runs", self.runs, "list at least one generation output directory")
        for run in self.runs:
            if "://" not in run and not os.path.isdir(run):
                raise ConfigError("runs", run, "no such directory")
        positive("batch_rows", self.batch_rows)
        for pair in self.paired:
            if len(pair) != 2:
                raise ConfigError("paired", pair, "each pair is [label A, label B]")
        if self.labels and len(self.labels) != len(self.runs):
            raise ConfigError("labels", self.labels, f"give one label per run ({len(self.runs)})")
        if self.reward.models:
            raise ConfigError("reward.models", self.reward.models, "the evaluation scores with one reward model: "
                              "give reward.path (evaluate again for another)")
        if not self.reward.path and not self.gold_reward:
            raise ConfigError("reward.path", self.reward.path, "an evaluation reward model or gold_reward is needed")
        if self.gold_reward and ":" not in self.gold_reward:
            raise ConfigError("gold_reward", self.gold_reward, "expected 'module.path:function'")
