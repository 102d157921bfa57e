"""The schema of `pargs-batch generate`: one dataclass per concern, checked before any model loads.

Loaded with ``configlib.load_config(GenerateConfig, path, overrides)``; every field's help text is
its one-line documentation (the README's key table follows it).
"""

from __future__ import annotations

import dataclasses
import json
import os
import math
import re
import string
from dataclasses import dataclass

from pargs_batch.configlib import ConfigError, Loadable, check_model_path, one_of, option, positive
from pargs_batch.decoding import METHODS, SMC_PROPOSALS, SMC_RESAMPLING, SMC_RETURNS

_WARNED: set = set()  # warnings already given in this process

@dataclass
class ModelConfig:
    """The frozen LLM, served by vLLM."""

    path: str = option("local checkpoint directory or Hugging Face hub id of the LLM", "")
    tokenizer: str | None = option("tokenizer directory or hub id; defaults to `path`", None)
    dtype: str = option("weights dtype: auto, float32, float16, bfloat16", "auto")
    max_model_len: int | None = option("context length in tokens; defaults to the model's", None)
    max_logprobs: int = option("largest top-k the engine will return (vLLM max_logprobs)", 20)
    max_num_seqs: int | None = option("sequences vLLM schedules in one step (vLLM max_num_seqs); on a GPU the "
                                      "memory plan chooses it (vLLM's default, lowered until a fused reward "
                                      "model's step and KV state fit), on CPU vLLM's default", None)
    gpu_memory_utilization: float | None = option(
        "share of device memory vLLM may use (on CPU: share of RAM for the KV cache); default on a GPU: the "
        "memory plan's (0.9, less what a reward model beside vLLM on the same GPU needs), 0.2 on CPU", None)
    kv_cache_memory_bytes: int | None = option(
        "fixed KV-cache size in bytes; overrides gpu_memory_utilization", None)
    block_size: int | None = option("KV-cache block size in tokens; prefix caching reuses whole blocks, so the "
                                    "stepped loop wants small ones (default: 16 on GPU, 32 on CPU, where vLLM's "
                                    "own default of 128 would re-prefill every sequence shorter than that)", None)
    tensor_parallel_size: int = option("GPUs per engine (vLLM tensor parallelism)", 1)
    enforce_eager: bool | None = option("skip CUDA graphs / compilation (faster start, slower steps); default: "
                                        "true for a fused engine on CPU (compiling bought it nothing measurable "
                                        "and cost 11-25 s a start), vLLM's own (false) otherwise", None)
    trust_remote_code: bool = option("allow model code from the hub", False)
    seed: int = option("engine seed (decoding draws use decode.seed, not this)", 0)
    log_stats: bool = option("collect vLLM's engine statistics (preemptions, KV-cache use); the run's summary "
                             "then reports the preemptions", False)

    def __post_init__(self):
        check_model_path("model.path", self.path)
        one_of("model.dtype", self.dtype, ["auto", "float32", "float16", "bfloat16"])
        positive("model.max_model_len", self.max_model_len)
        positive("model.max_num_seqs", self.max_num_seqs)
        positive("model.max_logprobs", self.max_logprobs)
        positive("model.kv_cache_memory_bytes", self.kv_cache_memory_bytes)
        positive("model.tensor_parallel_size", self.tensor_parallel_size)
        positive("model.block_size", self.block_size)
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            raise ConfigError("model.gpu_memory_utilization", self.gpu_memory_utilization,
                              "must be in (0, 1]")


BACKENDS = ("hf", "causal", "autoregressive")


@dataclass
class RewardConfig:
    """The reward model that scores every candidate prefix."""

    path: str = option("checkpoint directory or hub id of a sequence-classification reward model", "")
    backend: str = option("scorer: hf (any AutoModelForSequenceClassification, own tokenizer, rescores whole "
                          "prefixes), causal (a causal RM sharing the LLM's tokenizer, KV state kept between "
                          "steps, runs inside the decode worker) or autoregressive (a causal LM sharing the LLM's "
                          "tokenizer whose reward is the sum of its token log-probabilities: every next token's "
                          "reward from one forward, one token a step whatever k; rm_training mode "
                          "autoregressive)", "hf")
    input: str = option("what the reward model reads: auto (what the checkpoint says: the input rm_training recorded "
                        "when it trained it, else chat when its tokenizer has a chat template, pair when it encodes "
                        "segment pairs, else template), template (reward.template's text), pair (prompt and response "
                        "as a segment pair, tokenizer(prompt, response), as OpenAssistant's DeBERTa RMs were "
                        "trained), chat (the user/assistant turns rendered by the RM tokenizer's chat template), hh "
                        "(the conversation as an Anthropic HH transcript, '\\n\\nHuman: ... \\n\\nAssistant:', then "
                        "the response, as rm_training's hh format trains)", "auto")
    template: str = option("how prompt and response prefix are joined for the reward model (reward.input: template)",
                          "{prompt}{response}")
    batch_size: int = option("candidates per reward-model forward pass (length-sorted); the causal and "
                             "autoregressive backends encode new rows this many at a time; on a GPU the memory plan "
                             "lowers it until the largest step fits", 64)
    batch_tokens: int | None = option("most tokens (padded) in one reward-model forward: a batch of long inputs holds "
                                      "fewer than batch_size; default: unlimited, or on a GPU the memory plan's, so "
                                      "the largest step fits", None)
    max_length: int | None = option("reward-model input limit in tokens; defaults to the model's", None)
    device: str = option("torch device: auto (cuda if available), cpu, cuda, cuda:N", "auto")
    dtype: str = option("reward-model dtype: auto (the checkpoint's own; a float32 checkpoint runs in bfloat16 on a "
                        "GPU), float32, float16, bfloat16", "auto")
    models: list[dict] = option("several reward models instead of reward.path, each {path, weight (default 1), and "
                                "any reward.* key of its own}; the guidance reward is sum_j weight_j * r_j "
                                "(per prompt from data.weights_column), so score = log pi_ref + beta * sum_j w_j r_j; "
                                "hf backend only", factory=list)

    def __post_init__(self):
        if self.path and self.models:
            raise ConfigError("reward.models", self.models, "give reward.path or reward.models, not both")
        if self.path:
            check_model_path("reward.path", self.path)
        # checked once here; a config is not changed after it is built (dataclasses.replace builds anew)
        self._members = [self._member(i, entry) for i, entry in enumerate(self.models)]
        one_of("reward.backend", self.backend, BACKENDS)
        one_of("reward.input", self.input, ["auto", "template", "pair", "chat", "hh"])
        if self.backend != "hf" and self.input not in ("auto", "template"):
            raise ConfigError("reward.input", self.input, f"the {self.backend} backend reads the LLM's own token ids "
                              "(prompt then response); use reward.input: template, or reward.backend: hf")
        positive("reward.batch_size", self.batch_size)
        positive("reward.max_length", self.max_length)
        positive("reward.batch_tokens", self.batch_tokens)
        one_of("reward.dtype", self.dtype, ["auto", "float32", "float16", "bfloat16"])
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ConfigError("reward.device", self.device, "expected auto, cpu, cuda or cuda:N")
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(self.template) if f is not None]
        except ValueError:
            fields = []
        if fields != ["prompt", "response"]:
            raise ConfigError("reward.template", self.template,
                              "must contain {prompt} followed by {response}, once each, and no other field")

    def _member(self, i: int, entry: dict) -> tuple[RewardConfig, float]:
        """Entry ``i`` of ``models`` as a checked single-model config (the shared keys as defaults) and its weight."""
        from pargs_batch.configlib import build

        key = f"reward.models[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(key, entry, "expected a mapping with at least a path")
        if "models" in entry:
            raise ConfigError(f"{key}.models", entry["models"], "reward models do not nest")
        if not entry.get("path"):
            raise ConfigError(f"{key}.path", entry.get("path"), "a model directory or a Hugging Face hub id is required")
        weight = entry.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise ConfigError(f"{key}.weight", weight, "expected a finite number")
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("path", "models")}
        own = {k: v for k, v in entry.items() if k != "weight"}
        try:
            member = build(RewardConfig, {**shared, **own}, "reward.")
        except ConfigError as e:
            raise ConfigError(e.key.replace("reward.", f"{key}.", 1), e.value, e.allowed) from None
        if member.backend != "hf":
            raise ConfigError(f"{key}.backend", member.backend, "several reward models are scored by the hf backend "
                              f"(the {member.backend} one keeps a single model's KV state per sequence)")
        return member, float(weight)

    @property
    def members(self) -> list[tuple[RewardConfig, float]]:
        """(single-model config, weight) of each reward model: ``models``, or ``path`` with weight 1."""
        if not self.models:
            return [(self, 1.0)] if self.path else []
        return self._members

    @property
    def label(self) -> str:
        """What the ``reward_model`` column says: the path, or each model's weight and path."""
        return reward_label(dataclasses.asdict(self))


def reward_label(reward: dict) -> str:
    """A reward section (as a dict, e.g. from a run's metadata) as the ``reward_model`` column names
    it: the path, or each model's weight and path (``1*org/helpful + 0.5*org/harmless``)."""
    models = reward.get("models") or []
    if not models:
        return reward.get("path") or ""
    return " + ".join(f"{float(m.get('weight', 1.0)):g}*{m['path']}" for m in models)


@dataclass
class DecodeConfig:
    """The decoding rule of the paper's Algorithm 1 and its stopping conditions."""

    method: str = option("; ".join(f"{m.name}: {m.help}" for m in METHODS.values()), "pargs")
    beta: float = option("reward weight: score = log pi_ref + beta * r", 1.0)
    top_k: int = option("candidates per step (k); 0: the whole vocabulary (reward.backend autoregressive, "
                        "engine.mode fused, tokenwise methods: the exact pi_ref * pi_r^beta)", 10)
    temperature: float = option("divides the scores before sampling (sampling methods only)", 1.0)
    max_new_tokens: int = option("response length limit in tokens", 64)
    num_samples: int = option("responses per prompt (n)", 1)
    stop: list[str] = option("strings that end a response (not included in it)", factory=list)
    ignore_eos: bool = option("keep going past EOS until max_new_tokens (for benchmarks)", False)
    seed: int = option("seed of the per-(prompt, sample, step) random draws", 0)
    n_candidates: int | None = option("best-of-n and early-rejection: responses sampled per prompt (N); blockwise: "
                                      "samples per block (K); default: top_k", None)
    block_tokens: int = option("blockwise: tokens per block; early-rejection: tokens between two reward checks", 8)
    reject_fraction: float = option("early-rejection: share of the candidates still alive dropped at each check "
                                    "(the worst by the reward model; at least one is kept), in [0, 1)", 0.5)
    n_particles: int = option("smc: partial responses per (prompt, sample) (N)", 16)
    smc_proposal: str = option("smc: how a particle's next token is drawn: ref (top-k sampling of pi_ref) or guided "
                               "(the PARGS rule, softmax((log pi_ref + beta * r) / temperature) over the top k, "
                               "importance-corrected)", "guided")
    resampling: str = option("smc: multinomial (N independent draws by weight) or systematic (N evenly spaced "
                             "points of one draw: less variance)", "systematic")
    ess_threshold: float = option("smc: resample at a block boundary when the effective sample size is below "
                                  "ess_threshold * N; 1.0: at every boundary, 0: never", 0.5)
    smc_return: str = option("smc: the response written: sample (drawn by final weight, the consistent choice) or "
                             "best (the highest final reward)", "sample")
    micro_batch_size: int = option("prompts stepped together through engine and reward model", 64)

    def __post_init__(self):
        one_of("decode.method", self.method, METHODS)
        positive("decode.beta", self.beta, allow_zero=True)
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ConfigError("decode.top_k", self.top_k, "must be an integer >= 1, or 0 (the whole vocabulary)")
        positive("decode.temperature", self.temperature)
        positive("decode.max_new_tokens", self.max_new_tokens)
        positive("decode.num_samples", self.num_samples)
        positive("decode.micro_batch_size", self.micro_batch_size)
        positive("decode.n_candidates", self.n_candidates)
        if self.n_candidates is not None and self.n_candidates >= 2**20:
            raise ConfigError("decode.n_candidates", self.n_candidates, "must be < 1048576 (2**20)")
        if not isinstance(self.block_tokens, int) or self.block_tokens < 1:
            raise ConfigError("decode.block_tokens", self.block_tokens, "must be an integer >= 1")
        if not 0 <= self.reject_fraction < 1:
            raise ConfigError("decode.reject_fraction", self.reject_fraction, "must be in [0, 1)")
        if isinstance(self.n_particles, bool) or not isinstance(self.n_particles, int) or not 1 <= self.n_particles < 2**20:
            raise ConfigError("decode.n_particles", self.n_particles, "must be an integer in [1, 1048576)")
        one_of("decode.smc_proposal", self.smc_proposal, SMC_PROPOSALS)
        one_of("decode.resampling", self.resampling, SMC_RESAMPLING)
        one_of("decode.smc_return", self.smc_return, SMC_RETURNS)
        if isinstance(self.ess_threshold, bool) or not isinstance(self.ess_threshold, (int, float)) or \
                not 0 <= self.ess_threshold <= 1:
            raise ConfigError("decode.ess_threshold", self.ess_threshold, "must be a number in [0, 1]")
        if any(not s for s in self.stop):
            raise ConfigError("decode.stop", self.stop, "stop strings must be non-empty")


@dataclass
class DataConfig:
    """Where prompts come from."""

    source: str = option("a .jsonl, .json (JSON Lines, or one JSON array of objects as AlpacaEval ships) or .parquet "
                         "file (a local path or a pyarrow.fs URI: s3://, gs://, file://), or a Hugging Face dataset "
                         "name", "")
    subset: str | None = option("dataset configuration name (Hugging Face datasets only)", None)
    split: str = option("dataset split (Hugging Face datasets only)", "train")
    format: str = option("how a row holds its prompt: prompts (a text column, prompt_column, or a conversation, "
                         "messages_column) or hh (Anthropic HH-RLHF transcripts, '\\n\\nHuman: ... \\n\\nAssistant: "
                         "...', in prompt_column, default chosen: the prompt is the conversation before the last "
                         "assistant reply, rendered with the LLM's chat template)", "prompts")
    prompt_column: str = option("column holding the prompt text (format hh: the transcript; default chosen)", "prompt")
    messages_column: str | None = option("column holding a conversation (a list of {role, content}) to render with "
                                         "the LLM tokenizer's chat template instead of prompt_column; assistant turns "
                                         "at its end (a reply to regenerate) are left out; the stored prompt is its "
                                         "last user message", None)
    chat_template: bool = option("render each prompt as one user turn with the LLM tokenizer's chat template "
                                 "(generation prompt added); implied by messages_column and format hh", False)
    system_prompt: str | None = option("a system message put first in every conversation that has none (chat runs: "
                                       "chat_template, messages_column or format hh)", None)
    id_column: str | None = option("column holding a stable row id; default: the row index", None)
    weights_column: str | None = option("column holding each prompt's reward-model weights (a list of numbers, one per "
                                        "entry of reward.models, in order); rows without one use the configured "
                                        "weights", None)
    limit: int | None = option("use only the first N rows", None)

    def __post_init__(self):
        local = self.is_file and "://" not in self.source
        if local and not os.path.isfile(self.source):
            raise ConfigError("data.source", self.source, "no such file")
        if local and not os.access(self.source, os.R_OK):
            raise ConfigError("data.source", self.source, "the file is not readable (permissions)")
        positive("data.limit", self.limit)
        one_of("data.format", self.format, ["prompts", "hh"])
        if self.format == "hh":
            if self.messages_column:
                raise ConfigError("data.messages_column", self.messages_column,
                                  "format hh reads transcripts from prompt_column; leave messages_column unset")
            if self.prompt_column == "prompt":  # the default names HH-RLHF's column
                self.prompt_column = "chosen"
        if self.system_prompt is not None and not self.chat:
            raise ConfigError("data.system_prompt", self.system_prompt, "needs a chat run: data.chat_template: true, "
                              "data.messages_column or data.format: hh")

    @property
    def is_file(self) -> bool:
        """A prompt file (.jsonl, .json, .parquet; a URI may carry ?options), not a dataset name."""
        return self.source.split("?")[0].endswith((".jsonl", ".json", ".parquet"))

    @property
    def chat(self) -> bool:
        return self.chat_template or self.messages_column is not None or self.format == "hh"


@dataclass
class OutputConfig:
    """Where and how the Parquet output is written."""

    path: str = option("output directory: a local path or a pyarrow.fs URI (s3://bucket/run, gs://..., file://...); "
                       "its part-*.parquet files read as one table", "outputs/run")
    overwrite: bool = option("replace an existing non-empty output directory", False)
    compression: str = option("Parquet compression: zstd, snappy, gzip, none", "zstd")
    rows_per_file: int = option("rows after which a part file is closed", 1_000_000)
    target_file_mb: float = option("size in MB (compressed) after which a part file is closed", 128.0)
    max_error_fraction: float = option("share of error rows above which `generate` exits with status 3 "
                                       "(1.0: never)", 1.0)
    keep_all_candidates: bool = option("best-of-n: also write every candidate with its reward "
                                       "(.pargs/candidates/part-*.parquet)", False)

    def __post_init__(self):
        one_of("output.compression", self.compression, ["zstd", "snappy", "gzip", "none"])
        positive("output.rows_per_file", self.rows_per_file)
        if not self.target_file_mb > 0:
            raise ConfigError("output.target_file_mb", self.target_file_mb, "must be > 0")
        if not 0 <= self.max_error_fraction <= 1:
            raise ConfigError("output.max_error_fraction", self.max_error_fraction, "must be in [0, 1]")


RESOURCE_KEYS = ("num_cpus", "num_gpus")


def _resources(key: str, value: dict) -> None:
    for name, amount in value.items():
        if name not in RESOURCE_KEYS:
            raise ConfigError(f"{key}.{name}", amount, "expected num_cpus or num_gpus")
        if not isinstance(amount, (int, float)) or isinstance(amount, bool) or amount < 0:
            raise ConfigError(f"{key}.{name}", amount, "expected a number >= 0 (fractions share a device)")


@dataclass
class RayConfig:
    """The Ray pool: decode workers (one vLLM engine each) paired with reward-model actors."""

    enabled: bool = option("run on Ray (false: everything in this process, no Ray)", True)
    address: str | None = option("cluster to join ('auto', 'ray://host:10001'); default: RAY_ADDRESS "
                                 "when set (as under `ray job submit`), else a local Ray", None)
    num_workers: int = option("decode workers, each owning one vLLM engine", 1)
    num_reward_actors: int | None = option("reward-model actors (<= num_workers, shared round-robin); "
                                           "default: one per worker", None)
    engine_resources: dict | None = option(
        "Ray resources of each decode worker; default: 1 CPU, and on a cluster with GPUs "
        "model.tensor_parallel_size GPUs (what its reward actor leaves of one when they share it: the memory plan)", None)
    reward_resources: dict | None = option(
        "Ray resources of each reward actor; default: 1 CPU, and on a cluster with GPUs the share of its worker's "
        "GPU its reward model needs (the memory plan; a GPU of its own when it needs more than half of one and "
        "the cluster has one to spare, or beside a tensor-parallel worker)", None)
    inflight_per_worker: int = option("micro-batches in flight per worker (>= 2 overlaps engine and reward)", 2)
    max_retries: int = option("restarts of a dead actor and retries of its micro-batches before error rows", 2)

    def __post_init__(self):
        positive("ray.num_workers", self.num_workers)
        positive("ray.num_reward_actors", self.num_reward_actors)
        if self.num_reward_actors is not None and self.num_reward_actors > self.num_workers:
            raise ConfigError("ray.num_reward_actors", self.num_reward_actors,
                              f"must be <= ray.num_workers ({self.num_workers})")
        for key in ("engine_resources", "reward_resources"):
            if getattr(self, key) is not None:
                _resources(f"ray.{key}", getattr(self, key))
        positive("ray.inflight_per_worker", self.inflight_per_worker)
        positive("ray.max_retries", self.max_retries, allow_zero=True)
        if not self.enabled:
            pool = ("address", "num_workers", "num_reward_actors", "engine_resources", "reward_resources")
            set_keys = [f"ray.{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self)
                        if f.name in pool and getattr(self, f.name) != f.default]
            if set_keys and tuple(set_keys) not in _WARNED:  # once: configs are rebuilt (compare, replace)
                import logging

                _WARNED.add(tuple(set_keys))
                logging.getLogger("pargs_batch.config").warning(
                    "ray.enabled is false, so %s %s no effect: everything runs in this process on one engine "
                    "(set ray.enabled=true for the Ray pool)", ", ".join(set_keys), "has" if len(set_keys) == 1 else "have")


MODES = ("stepped", "fused")


@dataclass
class EngineConfig:
    """How guidance meets the engine."""

    mode: str = option("stepped: one engine call per token, reward scored outside the engine (any backend, "
                       "Ray reward actors); fused: guidance inside vLLM as a logits processor, reward model "
                       "in the engine's process", "stepped")

    def __post_init__(self):
        one_of("engine.mode", self.mode, MODES)


@dataclass
class GenerateConfig(Loadable):
    """Everything `pargs-batch generate` needs."""

    model: ModelConfig = option("the frozen LLM", factory=ModelConfig)
    engine: EngineConfig = option("stepped or fused guidance", factory=EngineConfig)
    reward: RewardConfig = option("the guidance reward model", factory=RewardConfig)
    decode: DecodeConfig = option("the decoding rule", factory=DecodeConfig)
    data: DataConfig = option("the prompts", factory=DataConfig)
    output: OutputConfig = option("the Parquet output", factory=OutputConfig)
    ray: RayConfig = option("the Ray pool", factory=RayConfig)

    def __post_init__(self):
        if self.decode.top_k == 0:
            self._check_whole_vocabulary()
        if self.decode.top_k > self.model.max_logprobs:
            raise ConfigError("decode.top_k", self.decode.top_k,
                              f"must be <= model.max_logprobs ({self.model.max_logprobs})")
        if self.engine.mode == "fused" and METHODS[self.decode.method].tokenwise and \
                self.model.tensor_parallel_size > 1:
            raise ConfigError("engine.mode", self.engine.mode,
                              "fused with model.tensor_parallel_size > 1 is not supported: every tensor-parallel "
                              "rank would load and run its own copy of the reward model; use stepped mode")
        if METHODS[self.decode.method].uses_reward and not self.reward.members:
            raise ConfigError("reward.path", self.reward.path,
                              f"decode.method={self.decode.method} needs a reward model (reward.path or reward.models)")
        if self.data.weights_column and not self.reward.models:
            raise ConfigError("data.weights_column", self.data.weights_column,
                              "per-prompt weights need reward.models (a list of reward models)")
        if self.data.weights_column and not METHODS[self.decode.method].uses_reward:
            raise ConfigError("data.weights_column", self.data.weights_column,
                              f"decode.method={self.decode.method} uses no reward model")

    def _check_whole_vocabulary(self) -> None:
        """``decode.top_k: 0`` guides over every token: only inside the engine, and only with a reward
        model that scores every next token at once."""
        method = METHODS[self.decode.method]
        if not method.tokenwise:
            raise ConfigError("decode.top_k", 0, f"the whole vocabulary is for the tokenwise methods; "
                              f"decode.method={self.decode.method} samples whole candidates: give k >= 1")
        if self.engine.mode != "fused":
            raise ConfigError("decode.top_k", 0, "the whole vocabulary is guided in engine.mode: fused (on the "
                              "engine's logits); stepped mode reads the engine's top-k log-probabilities, which it "
                              "returns for a whole vocabulary only as per-token Python objects (model.max_logprobs: "
                              "-1), far too slow to guide with")
        if method.uses_reward and self.reward.backend != "autoregressive":
            raise ConfigError("decode.top_k", 0, "the whole vocabulary needs reward.backend: autoregressive (one "
                              "forward scores every next token); the hf and causal backends score k candidates")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def identity(self) -> dict:
        """What decides the outputs: the config less the pool, the micro-batch size and the output.

        A rerun into the same directory must match it; the rest may change between runs."""
        d = self.to_dict()
        for key in ("ray", "output"):
            d.pop(key)
        d["decode"].pop("micro_batch_size")
        return d
