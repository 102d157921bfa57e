"""The memory plan: what each device of a run holds, computed before any model loads, and the
settings it decides where the user left them unset.

Inputs: the config, each checkpoint's ``config.json`` (shapes and dtype; no weights are read: the
parameter count comes from building the model on torch's meta device) and the devices (detected, or
given: ``pargs-batch plan --gpus 8 --gpu-memory 80GiB``). Per device it counts

- the LLM's weights (its share under tensor parallelism), vLLM's runtime outside torch's tensors,
  the activations of vLLM's largest step (``max_num_batched_tokens``) and its sampler's logits;
- each reward model's weights at its dtype, the activations of the largest guided step the run can
  schedule (rows x k candidate prefixes, ``reward.batch_tokens`` padded tokens a forward), the KV state the
  causal and autoregressive backends keep per row, and, in fused mode, the guide's per-step buffers;
- what is left for vLLM's KV cache, and how many tokens it holds.

On a GPU the plan then decides, in this order of sacrifice, the reward model's tokens a forward, then the most
sequences a step (``max_num_seqs``), then the longest context that fit; vLLM's memory share follows
from what the reward model beside it needs, and so does the GPU share of a Ray reward actor (a GPU of
its own when it needs more than half of one and the cluster has GPUs to spare). When nothing fits it
refuses in one line naming the largest item and the key to change. On CPU nothing is decided: the
plan is printed for information (vLLM sizes its CPU KV cache by ``model.kv_cache_memory_bytes``).

Shapes, dtypes, devices and the activation formulas per architecture family are ``shapes``'.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass, field

from pargs_batch.config import GenerateConfig, RewardConfig
from pargs_batch.configlib import ConfigError
from pargs_batch.decoding import METHODS
from pargs_batch.plan.placement import reward_placement
from pargs_batch.plan.shapes import GIB, LOGIT_POSITIONS, Architecture, Devices, resolved_dtype, vllm_defaults

log = logging.getLogger(__name__)

VLLM_SHARE = 0.9               # vLLM's own default gpu_memory_utilization
ENGINE_RUNTIME = 2 * GIB       # vLLM's process outside torch's tensors: CUDA context, CUDA graphs, NCCL
PROCESS_RUNTIME = GIB // 2     # another process on the GPU (a Ray reward actor): its CUDA context, cuBLAS
REWARD_FORWARD_TOKENS = 16384  # the most padded tokens a reward forward is planned with: as vLLM's own step
                               # budget (max_num_batched_tokens), a forward this large already fills a GPU
KV_SPARE = 64                  # tokens a causal / autoregressive KV session keeps beyond its rows (kv_cache)
MIN_CONTEXT = 512              # the shortest context the plan will cap model.max_model_len to
SAMPLER_COPIES = 2             # vLLM's sampler: float32 logits and their log-softmax, max_num_seqs x vocab
GUIDE_COPIES = 3               # the fused guide: logits, log pi_ref and scores, rows x vocab float32


# ---------------------------------------------------------------------------- the plan

@dataclass
class Line:
    what: str
    bytes: int


@dataclass
class DevicePlan:
    name: str
    capacity: int
    lines: list[Line] = field(default_factory=list)

    @property
    def used(self) -> int:
        return sum(line.bytes for line in self.lines)


@dataclass
class MemoryPlan:
    """What each device holds, and the settings decided (dotted key -> value, with the reason)."""

    devices: Devices
    mode: str                      # where the reward model runs: engine, worker, actor, none
    layout: list[DevicePlan]       # one engine's devices (every worker alike)
    workers: int
    kv_tokens: int
    max_model_len: int
    max_num_seqs: int
    largest_step: dict             # rows, k, tokens, batch_tokens of the largest guided step
    settings: dict = field(default_factory=dict)
    reasons: dict = field(default_factory=dict)
    reward_gpu: str | None = None  # shared, dedicated (a GPU of its own), engine (inside vLLM's process)
    reward_share: float | None = None

    def summary(self) -> str:
        """One line: the devices, the KV cache, the batch and what limits it."""
        where = f"{self.devices.count} x {self.devices.bytes / GIB:.1f} GiB {self.devices.kind.upper()}"
        full = self.kv_tokens // max(self.max_model_len, 1)
        limit = "the KV cache" if full < self.max_num_seqs else "max_num_seqs"
        step = self.largest_step
        reward = "" if not step else (f"; reward step {step['rows']} rows x k {step['k']} at {step['tokens']} tokens, "
                                      f"{step['batch_tokens']:,} tokens a forward")
        changed = ", ".join(f"{k}={_show(v)}" for k, v in self.settings.items())
        return (f"memory plan: {where}; KV cache {self.kv_tokens:,} tokens ({full} sequences at the full "
                f"{self.max_model_len}-token context), max_num_seqs {self.max_num_seqs}: the batch is limited by "
                f"{limit}{reward}" + (f"; set {changed}" if changed else ""))

    def table(self) -> str:
        """Every device's lines in GiB, the settings and why."""
        width = max([len(line.what) + 2 for d in self.layout for line in d.lines] +
                    [len(d.name) for d in self.layout] + [24])
        out = [self.summary(), ""]
        for device in self.layout:
            out.append(f"{device.name:<{width}} {'GiB':>7}")
            rows = [(line.what, line.bytes) for line in device.lines]
            rows += [("free", device.capacity - device.used), ("total", device.capacity)]
            out += [f"  {what:<{width - 2}} {size / GIB:>7.2f}" for what, size in rows]
        if self.workers > 1:
            out.append(f"(x {self.workers} workers, each alike)")
        if self.settings:
            out += ["", "settings the plan chose (left unset in the config):"]
            out += [f"  {key} = {_show(value)}  # {self.reasons.get(key, '')}" for key, value in self.settings.items()]
        return "\n".join(out)

    def apply(self, config: GenerateConfig) -> GenerateConfig:
        """``config`` with the plan's settings (a new config; the one given is not changed)."""
        return with_settings(config, self.settings)

    def to_dict(self) -> dict:
        """The plan's decisions (the run summary's ``memory``); the per-device lines are the table's."""
        d = dataclasses.asdict(self)
        d.pop("layout")
        d["devices"] = f"{self.devices.count} x {self.devices.bytes / GIB:.1f} GiB {self.devices.kind}"
        return d


def _show(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def with_settings(config: GenerateConfig, settings: dict) -> GenerateConfig:
    sections: dict[str, dict] = {}
    for key, value in settings.items():
        section, name = key.split(".", 1)
        sections.setdefault(section, {})[name] = value
    return dataclasses.replace(config, **{s: dataclasses.replace(getattr(config, s), **v) for s, v in sections.items()})


@dataclass
class _Reward:
    """One reward model as planned: its shape, dtype and config."""

    config: RewardConfig
    arch: Architecture
    dtype: str

    @property
    def weights(self) -> int:
        return self.arch.weight_bytes(self.dtype)


def plan_memory(config: GenerateConfig, devices: Devices | None = None) -> MemoryPlan:
    """The memory plan of ``config`` on ``devices`` (default: detected). Raises ``ConfigError`` when
    nothing fits."""
    devices = devices or Devices.detect()
    m, d = config.model, config.decode
    method = METHODS[d.method]
    on_ray = config.ray.enabled
    mode = reward_placement(config, on_ray) or "none"
    tp = m.tensor_parallel_size
    llm = Architecture.read(m.path, "lm", m.trust_remote_code)
    llm_dtype = resolved_dtype(m.dtype, llm.dtype, devices.gpu)
    rewards = []
    for member, _ in (config.reward.members if method.uses_reward else []):
        head = "lm" if member.backend == "autoregressive" else "classifier"
        arch = Architecture.read(member.path, head)
        rewards.append(_Reward(member, arch, resolved_dtype(member.dtype, arch.dtype, devices.gpu)))
    workers = config.ray.num_workers if on_ray else 1
    if devices.gpu:
        needed = workers * tp
        if needed > devices.count:
            key = "ray.num_workers" if workers > 1 else "model.tensor_parallel_size"
            raise ConfigError(key, workers if workers > 1 else tp,
                              f"{workers} engine(s) x {tp} GPU(s) need {needed} GPUs; {devices.count} available")
    planner = _Planner(config, devices, llm, llm_dtype, rewards, mode, workers)
    return planner.plan()


class _Planner:
    def __init__(self, config, devices, llm, llm_dtype, rewards, mode, workers):
        self.config, self.devices, self.llm, self.llm_dtype = config, devices, llm, llm_dtype
        self.rewards, self.mode, self.workers = rewards, mode, workers
        m, d = config.model, config.decode
        self.method = METHODS[d.method]
        self.tp = m.tensor_parallel_size
        self.seqs_default, self.batched = vllm_defaults(devices, self.tp)
        self.k = d.top_k if d.top_k > 0 else 1
        self.whole_vocab = d.top_k == 0

    # -------------------------------------------------------------- the pieces

    def step_rows(self, seqs: int) -> int:
        """Rows in the largest guided step: the engine's batch in fused mode, else a micro-batch's."""
        d = self.config.decode
        if self.mode == "engine":
            return seqs
        if self.method.tokenwise:
            return d.micro_batch_size * d.num_samples
        if self.method.runner == "smc":  # every particle is a row of the step
            return d.micro_batch_size * d.num_samples * d.n_particles
        return d.micro_batch_size * d.num_samples * (d.n_candidates or d.top_k or 1)

    @property
    def scores_candidates(self) -> bool:
        """Whether a step's reward reads each row's k candidates (not one response per row)."""
        guided_smc = self.method.runner == "smc" and self.config.decode.smc_proposal == "guided"
        return self.method.tokenwise or guided_smc

    def rows_alive(self, seqs: int) -> int:
        """Rows whose reward KV state is held at once (fused: the engine's; Ray: every micro-batch in flight)."""
        if self.mode == "engine":
            return seqs
        inflight = self.config.ray.inflight_per_worker if self.config.ray.enabled else 1
        return self.step_rows(seqs) * inflight

    def reward_tokens(self, context: int, reward: _Reward) -> int:
        limits = [context, reward.config.max_length, reward.arch.max_positions]
        return min(x for x in limits if x)

    def chunk_rows(self, budget: int, tokens: int, most: int) -> int:
        """Inputs of ``tokens`` tokens in one reward forward under a ``budget`` of padded tokens."""
        return max(1, min(most, budget // max(tokens, 1)))

    def reward_step(self, reward: _Reward, seqs: int, context: int, budget: int) -> int:
        """Peak activations of ``reward``'s largest step, ``budget`` padded tokens a forward."""
        rows, t = self.step_rows(seqs), self.reward_tokens(context, reward)
        a, dtype, size = reward.arch, reward.dtype, self.config.reward.batch_size
        if reward.config.backend == "hf":
            inputs = rows * (self.k if self.scores_candidates else 1)
            return a.forward_bytes(self.chunk_rows(budget, t, min(size, inputs)), t, t, dtype)
        start = a.forward_bytes(self.chunk_rows(budget, t, rows), t, t, dtype)
        if reward.config.backend == "causal":  # new rows encoded; then every row's k candidates at once
            return max(start, a.forward_bytes(rows, self.k, t + self.k, dtype))
        reread = LOGIT_POSITIONS * a.vocab * 8  # a resumed row's response, its log-softmax a slice at a time
        return max(start + reread, a.forward_bytes(rows, 1, t + 1, dtype, logits=1))

    def reward_kv(self, reward: _Reward, seqs: int, context: int) -> int:
        if reward.config.backend == "hf":
            return 0
        tokens = self.reward_tokens(context, reward) + KV_SPARE + self.k
        return self.rows_alive(seqs) * tokens * reward.arch.kv_bytes_per_token(reward.dtype)

    def llm_step(self, seqs: int, context: int) -> int:
        """vLLM's profiled peak: one step of max_num_batched_tokens (the whole context on CPU, where
        chunked prefill is off), and its sampler's logits."""
        tokens = max(self.batched, context) if not self.devices.gpu else self.batched
        act = self.llm.forward_bytes(1, tokens, 0, self.llm_dtype, mask=False) // self.tp
        return act + seqs * self.llm.vocab * 4 * SAMPLER_COPIES

    def guide_buffers(self, seqs: int) -> int:
        if self.mode != "engine":
            return 0
        copies = GUIDE_COPIES + (1 if self.whole_vocab else 0)
        return seqs * self.llm.vocab * 4 * copies

    # -------------------------------------------------------------- the search

    def plan(self) -> MemoryPlan:
        m, r = self.config.model, self.config.reward
        seqs_options = [m.max_num_seqs] if m.max_num_seqs else _halvings(self.seqs_default, 1)
        attempt = None
        for context in self._contexts():
            for seqs in seqs_options:
                for budget in self._budgets(context):
                    attempt = self._layout(context, seqs, budget)
                    if attempt["fits"]:
                        return self._result(attempt, context, seqs, budget)
        self._refuse(attempt)

    def _budgets(self, context: int) -> list[int]:
        """Padded tokens a reward forward may hold: the user's, else batch_size full-length inputs up
        to ``REWARD_FORWARD_TOKENS`` (one input at least), halved down to one input."""
        r = self.config.reward
        if not self.rewards:
            return [0]
        if r.batch_tokens:
            return [r.batch_tokens]
        longest = max(self.reward_tokens(context, rw) for rw in self.rewards)
        return _halvings(min(r.batch_size * longest, max(longest, REWARD_FORWARD_TOKENS)), longest)

    def _contexts(self) -> list[int]:
        m = self.config.model
        own = self.llm.max_positions or 2048
        if m.max_model_len:
            return [m.max_model_len]
        if not self.devices.gpu:
            return [own]
        return [own] + [c for c in _halvings(own, MIN_CONTEXT) if c < own]

    def _layout(self, context: int, seqs: int, budget: int) -> dict:
        """Every device's lines at (context, seqs, budget), vLLM's share and whether it all fits."""
        m, dev = self.config.model, self.devices
        M = dev.bytes
        engine = [Line(f"LLM weights ({self.llm_dtype}, {self.llm.params / 1e9:.2f}B params"
                       + (f", 1/{self.tp} each" if self.tp > 1 else "") + ")",
                       self.llm.weight_bytes(self.llm_dtype) // self.tp)]
        if dev.gpu:
            engine.append(Line("vLLM runtime (CUDA context, CUDA graphs)", ENGINE_RUNTIME))
        engine.append(Line(f"LLM activations ({self.batched if dev.gpu else max(self.batched, context)}-token step"
                           f", sampler over {seqs} rows)", self.llm_step(seqs, context)))
        reward_lines, step_sizes = [], []
        for rw in self.rewards:
            name = os.path.basename(rw.config.path.rstrip("/")) or rw.config.path
            reward_lines.append(Line(f"reward weights {name} ({rw.dtype}, {rw.arch.params / 1e9:.2f}B params)",
                                     rw.weights))
            step_sizes.append(self.reward_step(rw, seqs, context, budget))
            kv = self.reward_kv(rw, seqs, context)
            if kv:
                reward_lines.append(Line(f"reward KV state ({self.rows_alive(seqs)} rows x "
                                         f"{self.reward_tokens(context, rw)} tokens)", kv))
        if step_sizes:  # members score one after another: the largest step is the peak
            rows = self.step_rows(seqs)
            tokens = max(self.reward_tokens(context, rw) for rw in self.rewards)
            reward_lines.append(Line(f"reward step ({rows} rows x k {self.k}, {tokens} tokens, {budget:,} a forward)",
                                     max(step_sizes)))
        guide = self.guide_buffers(seqs)
        if guide:
            reward_lines.append(Line(f"guide buffers ({seqs} rows x {self.llm.vocab} vocabulary, float32)", guide))
        reward_total = sum(line.bytes for line in reward_lines)
        kv_per_token = self.llm.kv_bytes_per_token(self.llm_dtype, self.tp)
        if not dev.gpu:
            kv_bytes = m.kv_cache_memory_bytes or int((m.gpu_memory_utilization or 0.2) * M)
            lines = engine + reward_lines + [Line(f"KV cache ({kv_bytes // kv_per_token:,} tokens)", kv_bytes)]
            layout = [DevicePlan("CPU memory (this machine)", M, lines)]
            return dict(layout=layout, fits=True, kv_tokens=kv_bytes // kv_per_token, util=None, share=None,
                        dedicated=False)
        fixed = sum(line.bytes for line in engine)
        runtime = PROCESS_RUNTIME if self.mode == "actor" and self.rewards else 0
        need = reward_total + runtime
        given = (self.config.ray.reward_resources or {}).get("num_gpus") if self.mode == "actor" else None
        dedicated = bool(self.rewards) and self.mode in ("actor", "worker") and (
            (given is not None and given >= 1) or (given is None and (
                (self.mode == "actor" and self.tp > 1) or (need > M / 2 and self._dedicated_room()))))
        share = None
        if self.mode == "engine":  # the reward model is inside vLLM's share (its profile counts the weights,
            util = m.gpu_memory_utilization or VLLM_SHARE  # the reservation holds the step's room)
            kv_bytes = int(util * M) - fixed - reward_total
        elif self.rewards and not dedicated:  # beside vLLM on its first GPU: vLLM gets what is left
            share = given if given else min(1.0, math.ceil(need / M * 100) / 100)
            util = m.gpu_memory_utilization or round(min(VLLM_SHARE, 1 - share - 0.01), 2)
            kv_bytes = int(util * M) - fixed
        else:
            util = m.gpu_memory_utilization or VLLM_SHARE
            kv_bytes = int(util * M) - fixed
        if m.kv_cache_memory_bytes:  # the user's fixed KV cache: vLLM takes it whatever its share
            kv_bytes = m.kv_cache_memory_bytes
        kv_bytes = max(kv_bytes, 0)
        kv_line = Line(f"KV cache ({kv_bytes // kv_per_token:,} tokens" + (", its heads' share" if self.tp > 1 else "")
                       + ")", kv_bytes)
        first = list(engine)
        if self.mode == "engine":
            first += reward_lines
        elif self.rewards and not dedicated:
            label = "Ray reward actor" if self.mode == "actor" else "reward model in this process"
            first += [Line(f"[{label}] {line.what}", line.bytes) for line in reward_lines]
            if runtime:
                first.append(Line(f"[{label}] CUDA context", runtime))
        first.append(kv_line)
        beside = " + reward model" if self.rewards and not dedicated else ""
        layout = [DevicePlan("GPU 0: engine" + (" (tensor-parallel rank 0)" if self.tp > 1 else "") + beside, M, first)]
        for i in range(1, self.tp):
            layout.append(DevicePlan(f"GPU {i}: engine (tensor-parallel rank {i})", M, list(engine) + [kv_line]))
        if dedicated:
            extra = [Line("CUDA context", runtime)] if runtime else []
            layout.append(DevicePlan(f"GPU {self.tp}: reward model (a GPU of its own)", M, reward_lines + extra))
        kv_tokens = kv_bytes // kv_per_token
        fits = util > 0 and kv_tokens >= context and all(p.used <= p.capacity for p in layout)
        if share is not None and given:  # the user's share must hold the reward model
            fits = fits and need <= given * M
        return dict(layout=layout, fits=fits, kv_tokens=kv_tokens, util=util, share=share, dedicated=dedicated)

    def _dedicated_room(self) -> bool:
        """Whether the run has a spare GPU for each engine's reward model: a Ray reward actor's (as
        many GPUs again as the engines take), or a local run's second visible GPU."""
        if self.mode == "actor":
            return self.devices.count >= self.workers * (self.tp + 1)
        return not self.config.ray.enabled and self.tp == 1 and self.devices.count >= 2 \
            and self.config.reward.device == "auto"

    def _result(self, attempt: dict, context: int, seqs: int, budget: int) -> MemoryPlan:
        m, r, rr = self.config.model, self.config.reward, self.config.ray
        settings, reasons = {}, {}
        gpu = self.devices.gpu
        if gpu:
            vllm_sized = m.gpu_memory_utilization is None and m.kv_cache_memory_bytes is None
            if vllm_sized and attempt["util"] is not None:
                settings["model.gpu_memory_utilization"] = attempt["util"]
                reasons["model.gpu_memory_utilization"] = (
                    "vLLM's share of the GPU: what the reward model beside it leaves" if attempt["share"]
                    else "vLLM's default share (the reward model inside it is counted in that share)"
                    if self.mode == "engine" else "vLLM's default share")
            if m.max_num_seqs is None:
                settings["model.max_num_seqs"] = seqs
                reasons["model.max_num_seqs"] = ("vLLM's default" if seqs == self.seqs_default else
                                                 f"lowered from vLLM's {self.seqs_default} so the reward model's "
                                                 "step and KV state fit")
            if m.max_model_len is None and context != (self.llm.max_positions or context):
                settings["model.max_model_len"] = context
                reasons["model.max_model_len"] = (f"the checkpoint's {self.llm.max_positions} tokens do not fit "
                                                  "the KV cache beside everything else")
            longest = max((self.reward_tokens(context, rw) for rw in self.rewards), default=0)
            if self.rewards and r.batch_tokens is None and budget < r.batch_size * longest:
                settings["reward.batch_tokens"] = budget
                reasons["reward.batch_tokens"] = (f"{self.chunk_rows(budget, longest, r.batch_size)} inputs of "
                                                  f"{longest} tokens a forward (of reward.batch_size {r.batch_size}): "
                                                  f"at most {REWARD_FORWARD_TOKENS} tokens, less where the step "
                                                  "would not fit")
            if self.rewards and r.max_length is None:
                own = max(rw.arch.max_positions or 0 for rw in self.rewards)
                if own > context:
                    settings["reward.max_length"] = context
                    reasons["reward.max_length"] = f"the reward model's {own} tokens capped at the LLM's context"
            if self.rewards and r.dtype == "auto":
                settings["reward.dtype"] = self.rewards[0].dtype
                reasons["reward.dtype"] = "auto: the checkpoint's dtype" + (
                    " (float32 checkpoints run in bfloat16 on a GPU)" if self.rewards[0].arch.dtype == "float32" else "")
            if self.rewards and attempt["dedicated"] and self.mode != "actor" and r.device == "auto":
                settings["reward.device"] = "cuda:1"
                reasons["reward.device"] = "the reward model needs more than half a GPU: it gets the second one"
            if self.mode == "actor" and rr.enabled:
                if rr.reward_resources is None:
                    gpus = 1 if attempt["dedicated"] else attempt["share"]
                    settings["ray.reward_resources"] = {"num_cpus": 1, "num_gpus": gpus}
                    reasons["ray.reward_resources"] = ("a GPU of its own" if attempt["dedicated"] else
                                                       "the reward model's bytes as a share of its worker's GPU")
                if rr.engine_resources is None:
                    gpus = self.tp if attempt["dedicated"] or self.tp > 1 else round(1 - attempt["share"], 2)
                    settings["ray.engine_resources"] = {"num_cpus": 1, "num_gpus": gpus}
                    reasons["ray.engine_resources"] = "the rest of the GPU" if not attempt["dedicated"] else \
                        "whole GPUs (its reward actor has its own)"
        largest = {}
        if self.rewards:
            largest = dict(rows=self.step_rows(seqs), k=self.k, batch_tokens=budget,
                           tokens=max(self.reward_tokens(context, rw) for rw in self.rewards))
        reward_gpu = None if not self.rewards else "engine" if self.mode == "engine" else \
            "dedicated" if attempt["dedicated"] else "shared"
        return MemoryPlan(devices=self.devices, mode=self.mode, layout=attempt["layout"], workers=self.workers,
                          kv_tokens=attempt["kv_tokens"], max_model_len=context, max_num_seqs=seqs,
                          largest_step=largest, settings=settings, reasons=reasons, reward_gpu=reward_gpu,
                          reward_share=attempt["share"])

    def _refuse(self, attempt: dict) -> None:
        """The last layout tried (the smallest) does not fit: name its largest item and the key to
        change - a weight first when the weights alone leave no room."""
        device = max(attempt["layout"], key=lambda p: p.used)
        lines = [x for x in device.lines if not x.what.startswith("KV cache")]
        weights = [x for x in lines if "weights" in x.what]
        fixed = sum(x.bytes for x in lines if "weights" in x.what or "runtime" in x.what or "context" in x.what)
        big = max(weights if fixed > VLLM_SHARE * device.capacity else lines, key=lambda x: x.bytes)
        m, r, d = self.config.model, self.config.reward, self.config.decode
        if "reward weights" in big.what and any(rw.dtype == "float32" for rw in self.rewards):
            key, value, hint = "reward.dtype", r.dtype, "bfloat16 (or auto: a float32 checkpoint runs in bfloat16 on a GPU)"
        elif "reward weights" in big.what and self.mode == "actor":
            key, value, hint = "ray.reward_resources", self.config.ray.reward_resources, \
                "{num_gpus: 1} (a GPU of its own for each reward actor), or more GPUs"
        elif "reward weights" in big.what:
            key, value, hint = "reward.device", r.device, "a GPU of its own (cuda:1), or a smaller reward model"
        elif "reward step" in big.what:
            key, value, hint = "reward.max_length", r.max_length, \
                "fewer tokens for the reward model to read (or model.max_model_len)"
        elif "reward KV" in big.what or "guide" in big.what:
            key, value = ("model.max_num_seqs", m.max_num_seqs) if self.mode == "engine" else \
                ("decode.micro_batch_size", d.micro_batch_size)
            hint = "fewer rows at once"
        elif "LLM weights" in big.what:
            key, value, hint = "model.tensor_parallel_size", m.tensor_parallel_size, \
                "more GPUs per engine (or a smaller model.dtype)"
        else:
            key, value, hint = "model.max_model_len", m.max_model_len, "a shorter context"
        raise ConfigError(key, value, f"the memory plan does not fit {device.name.split(':')[0]} "
                          f"({device.capacity / GIB:.1f} GiB): its largest item is {big.what}, {big.bytes / GIB:.1f} "
                          f"GiB, and the KV cache left holds {attempt['kv_tokens']:,} tokens; try {hint}")


def plan_run(config: GenerateConfig, devices=None, say: bool = True) -> MemoryPlan | None:
    """The run's memory plan, said in one line (``say``; else logged) with the table in the log. On a
    GPU a plan that does not fit is refused (``ConfigError``); on CPU, where nothing is decided, a
    checkpoint whose shape cannot be read only loses the plan."""
    from pargs_batch.console import console

    devices = devices or Devices.detect()
    try:
        plan = plan_memory(config, devices)
    except ConfigError as e:
        if devices.gpu or e.key != "memory plan":
            raise
        log.warning("no memory plan: %s", e)
        return None
    if say:
        console.say(plan.summary())
    log.info("%s", plan.table())
    return plan


def _halvings(start: int, floor: int) -> list[int]:
    """start, start/2, ... while >= floor (floor itself last when the halving skips it)."""
    out, x = [int(start)], int(start)
    while x // 2 >= floor:
        x //= 2
        out.append(x)
    if out[-1] > floor:
        out.append(floor)
    return out
