"""Configuration of `python -m rm_training.train`: YAML + dotted overrides, checked before training."""

from __future__ import annotations

import os
from dataclasses import dataclass

from pargs_batch.configlib import ConfigError, check_model_path, one_of, option, positive
from rm_training.data import FORMATS
from rm_training.prefixes import STRATEGIES

MODES = ("full", "partial", "partial-causal", "autoregressive")


@dataclass
class PreferenceData:
    """Where the preference triples come from."""

    source: str = option("a .jsonl/.parquet file or a Hugging Face dataset name", "")
    format: str = option("row layout: hh (HH-RLHF transcripts), tldr (summarize-from-feedback comparisons), generic "
                         "(prompt/chosen/rejected strings), conversational (TRL's: chosen/rejected as lists of "
                         "messages, the prompt a string, a list of messages or the turns both share, as "
                         "UltraFeedback stores them)", "generic")
    subset: str | None = option("dataset configuration name (e.g. 'comparisons')", None)
    split: str = option("dataset split", "train")
    eval_source: str | None = option("held-out file or dataset; default: a share of `source`", None)
    eval_split: str | None = option("held-out split of `source` (e.g. 'validation'), instead of a share", None)
    eval_fraction: float = option("share of triples held out when no eval source/split is given", 0.1)
    prompt_column: str = option("generic/conversational layout: prompt column (conversational: optional)", "prompt")
    chosen_column: str = option("generic/hh/conversational layout: preferred response column", "chosen")
    rejected_column: str = option("generic/hh layout: other response column", "rejected")
    limit: int | None = option("read only the first N rows", None)
    max_malformed_fraction: float = option("stop when more than this share of rows is malformed", 0.05)

    def __post_init__(self):
        if not self.source:
            raise ConfigError("data.source", self.source, "a .jsonl/.parquet path or dataset name is required")
        for key in ("source", "eval_source"):
            path = getattr(self, key)
            if path and path.endswith((".jsonl", ".json", ".parquet")) and not os.path.exists(path):
                raise ConfigError(f"data.{key}", path, "no such file")
        one_of("data.format", self.format, FORMATS)
        if not 0 <= self.eval_fraction < 1:
            raise ConfigError("data.eval_fraction", self.eval_fraction, "must be in [0, 1)")
        if not 0 <= self.max_malformed_fraction <= 1:
            raise ConfigError("data.max_malformed_fraction", self.max_malformed_fraction, "must be in [0, 1]")
        positive("data.limit", self.limit)

    @property
    def columns(self) -> dict:
        return {"prompt": self.prompt_column, "chosen": self.chosen_column, "rejected": self.rejected_column}


@dataclass
class PrefixOptions:
    """Which prefix lengths become pairs in `partial` mode (Eq. 5)."""

    strategy: str = option("every, stride or sample", "every")
    stride: int = option("step between prefix lengths (strategy: stride)", 4)
    num_samples: int = option("prefix lengths drawn per triple (strategy: sample)", 8)
    min_length: int = option("shortest prefix, in reward-model tokens", 1)
    seed: int = option("seed of the sampled lengths", 0)

    def __post_init__(self):
        one_of("prefixes.strategy", self.strategy, STRATEGIES)
        positive("prefixes.stride", self.stride)
        positive("prefixes.num_samples", self.num_samples)
        positive("prefixes.min_length", self.min_length)


@dataclass
class Training:
    """Optimisation, handed to TRL's RewardConfig (a transformers TrainingArguments)."""

    output_dir: str = option("where the checkpoint and training_summary.json go", "outputs/rm")
    learning_rate: float = option("peak learning rate", 5e-6)
    per_device_train_batch_size: int = option("pairs per device per step", 16)
    per_device_eval_batch_size: int = option("pairs per device per evaluation step", 32)
    gradient_accumulation_steps: int = option("steps per optimiser update", 16)
    num_train_epochs: float = option("passes over the training pairs", 1.0)
    max_steps: int = option("stop after this many updates (-1: run the epochs)", -1)
    warmup_ratio: float = option("share of updates spent warming up the learning rate", 0.0)
    weight_decay: float = option("AdamW weight decay", 0.0)
    max_length: int = option("reward-model input limit in tokens (prompts are cut from the left)", 512)
    eval_prefix_stride: int = option("held-out accuracy per prefix-length bucket (partial modes): every n-th prefix "
                                     "length of each held-out pair (1: every one; each is scored whole, so the "
                                     "cost grows with the square of the reply length)", 1)
    logging_steps: int = option("log every N updates", 10)
    seed: int = option("seed of initialisation, shuffling and the held-out split", 0)
    bf16: bool = option("train in bfloat16", False)
    fp16: bool = option("train in float16", False)
    gradient_checkpointing: bool = option("trade compute for activation memory", False)
    deepspeed: str | None = option("DeepSpeed config JSON (e.g. rm_training/configs/zero3.json)", None)
    report_to: str = option("experiment tracker for transformers (none, wandb, tensorboard)", "none")

    def __post_init__(self):
        positive("training.learning_rate", self.learning_rate)
        positive("training.per_device_train_batch_size", self.per_device_train_batch_size)
        positive("training.per_device_eval_batch_size", self.per_device_eval_batch_size)
        positive("training.eval_prefix_stride", self.eval_prefix_stride)
        positive("training.gradient_accumulation_steps", self.gradient_accumulation_steps)
        positive("training.num_train_epochs", self.num_train_epochs)
        positive("training.max_length", self.max_length)
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError("training.warmup_ratio", self.warmup_ratio, "must be in [0, 1)")
        if self.deepspeed and not os.path.exists(self.deepspeed):
            raise ConfigError("training.deepspeed", self.deepspeed, "no such file")
        if self.bf16 and self.fp16:
            raise ConfigError("training.fp16", self.fp16, "choose one of bf16 and fp16")


@dataclass
class LoraOptions:
    """LoRA adapters through peft (the paper's DPO models: r = 16, alpha = 16); merged into the
    weights at the end, so the output is a plain checkpoint."""

    enabled: bool = option("train LoRA adapters (false: every weight, with a full reference copy)", True)
    r: int = option("adapter rank", 16)
    alpha: int = option("adapter scale numerator (lora_alpha)", 16)
    dropout: float = option("dropout on the adapter's input", 0.05)
    target_modules: list[str] = option("module names (or suffixes) to adapt; all-linear: every linear layer but "
                                       "the output head", factory=lambda: ["all-linear"])

    def __post_init__(self):
        positive("lora.r", self.r)
        positive("lora.alpha", self.alpha)
        if not 0 <= self.dropout < 1:
            raise ConfigError("lora.dropout", self.dropout, "must be in [0, 1)")
        if not self.target_modules:
            raise ConfigError("lora.target_modules", self.target_modules, "name at least one module, or all-linear")
        if "all-linear" in self.target_modules and len(self.target_modules) > 1:
            raise ConfigError("lora.target_modules", self.target_modules, "all-linear stands alone")


@dataclass
class AdapterOptions(LoraOptions):
    """LoRA adapters for an autoregressive reward model (off by default: every weight trains)."""

    enabled: bool = option("train LoRA adapters (autoregressive mode) instead of every weight", False)


@dataclass
class TrainConfig:
    """Everything `python -m rm_training.train` needs."""

    mode: str = option("full (Eq. 1), partial (Eq. 5 on prefix pairs), partial-causal (Eq. 5, one pass) or "
                       "autoregressive (a causal LM whose reward is its summed token log-probabilities, "
                       "Bradley-Terry on that sum)", "partial")
    model: str = option("checkpoint or hub id to start from (a base LM gets a fresh reward head; autoregressive "
                        "mode: a causal LM, trained as it is)", "")
    tokenizer: str | None = option("tokenizer directory or hub id; defaults to `model`", None)
    template: str = option("how prompt and response are joined; use the same as reward.template when generating",
                           "{prompt}{response}")
    data: PreferenceData = option("preference triples", factory=PreferenceData)
    prefixes: PrefixOptions = option("prefix pairs (partial mode)", factory=PrefixOptions)
    training: Training = option("optimisation", factory=Training)
    autoregressive_scale: float = option("autoregressive mode: s in -log sigma(s * (r(y_w) - r(y_l))), the "
                                         "Bradley-Terry scale of the summed log-probabilities", 0.1)
    lora: AdapterOptions = option("autoregressive mode: LoRA adapters through peft, merged into the checkpoint",
                                  factory=AdapterOptions)

    def __post_init__(self):
        one_of("mode", self.mode, MODES)
        positive("autoregressive_scale", self.autoregressive_scale)
        if self.lora.enabled and self.mode != "autoregressive":
            raise ConfigError("lora.enabled", True, "LoRA adapters train the autoregressive mode's causal LM; "
                              "the other modes train every weight of a reward model")
        check_model_path("model", self.model)
        if self.tokenizer:
            check_model_path("tokenizer", self.tokenizer)
        from pargs_batch.config import RewardConfig

        try:  # the same rule as generation's reward.template
            RewardConfig(template=self.template)
        except ConfigError as e:
            raise ConfigError("template", self.template, e.allowed) from None
