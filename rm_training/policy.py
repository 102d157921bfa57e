"""`python -m rm_training.policy --config FILE [key=value ...]`: the fine-tuned baselines.

The paper compares PARGS, which keeps the LLM frozen, with policies fine-tuned by DPO and PPO
(Tables 1-2). This job trains those baselines with TRL so that they can be generated and scored
exactly like every guided run:

- ``method: dpo``: TRL's ``DPOTrainer`` on the same preference triples the reward models use;
- ``method: online-rl``: TRL's ``RLOOTrainer`` (TRL 1.x has no PPO trainer) - samples from the
  policy, scores them with a reward model of the user's choice (its own tokenizer allowed, read
  through ``pargs_batch.rewards.hf`` exactly as generation reads it) and subtracts a KL penalty to the
  reference policy.

LoRA adapters (peft) by default. The output directory is a merged Hugging Face checkpoint
(adapters folded into the weights) plus its tokenizer and ``training_summary.json``: vLLM loads it
as any model, ``pargs-batch generate model.path=<it> decode.method=topk``. Under ``torchrun`` /
``accelerate launch`` the same command trains data-parallel, with ZeRO-3 when ``training.deepspeed``
names ``rm_training/configs/zero3.json``. Bad input (missing columns, LoRA modules the model lacks,
a reward model that cannot read the policy's responses) stops before training with exit code 2.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from pargs_batch.configlib import ConfigError
from rm_training import data as prefs
from rm_training.adapters import lora_config, save_merged
from rm_training.policy_config import PolicyConfig

log = logging.getLogger("rm_training")

LABELS = {"dpo": "DPO", "online-rl": "online RL (RLOO)"}  # the name every report row carries
MAX_UNKNOWN_SHARE = 0.02  # of the policy's response tokens the reward tokenizer may read as unknown


def label(method: str) -> str:
    return LABELS[method]


# ---------------------------------------------------------------- checks before training

def check_policy_model(cfg: PolicyConfig) -> list[str]:
    """The policy must be a causal LM whose modules include every LoRA target; returns the names of
    its adaptable modules. Only the config is read: the skeleton is built on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    config = AutoConfig.from_pretrained(cfg.model)
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ConfigError("model", cfg.model, f"its architecture ({config.model_type}) is not a causal LM")
    from transformers.pytorch_utils import Conv1D

    positions = getattr(config.get_text_config(), "max_position_embeddings", None)
    needed = cfg.training.max_length if cfg.method == "dpo" else cfg.online_rl.max_completion_length
    if positions and needed > positions:
        key = "training.max_length" if cfg.method == "dpo" else "online_rl.max_completion_length"
        raise ConfigError(key, needed, f"{cfg.model} reads at most {positions} positions")
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    kinds = (torch.nn.Linear, torch.nn.Embedding, torch.nn.Conv1d, torch.nn.Conv2d, Conv1D)
    adaptable = {name for name, module in skeleton.named_modules() if name and isinstance(module, kinds)}
    if cfg.lora.enabled and cfg.lora.target_modules != ["all-linear"]:
        for target in cfg.lora.target_modules:
            if not any(name == target or name.endswith("." + target) for name in adaptable):
                kinds = sorted({name.rsplit(".", 1)[-1] for name in adaptable})
                raise ConfigError("lora.target_modules", target, f"{cfg.model} has no adaptable module of that name; "
                                  f"its linear/embedding modules are: {', '.join(kinds)}")
    return sorted(adaptable)


def check_reward_fits(cfg: PolicyConfig, triples: list[prefs.Triple]) -> None:
    """online-rl: the reward model must be a sequence classifier whose input settings work
    and whose tokenizer can read the policy's responses (this data's responses stand in for them)."""
    from transformers import AutoConfig, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

    from pargs_batch.rewards.hf import check_reward_input

    reward, key = cfg.online_rl.reward, "online_rl.reward.path"
    rm_config = AutoConfig.from_pretrained(reward.path)
    if rm_config.model_type not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES:
        raise ConfigError(key, reward.path, f"its architecture ({rm_config.model_type}) has no sequence-classification "
                          "head, so it cannot score responses")
    check_reward_input(reward, "online_rl.reward")
    positions = getattr(rm_config, "max_position_embeddings", None)
    if reward.max_length and positions and reward.max_length > positions:
        raise ConfigError("online_rl.reward.max_length", reward.max_length,
                          f"the reward model reads at most {positions} positions")
    tokenizer = AutoTokenizer.from_pretrained(reward.path)
    if tokenizer.unk_token_id is None:
        return  # byte-level tokenizers read any text
    ids = [i for t in triples[:256] for side in (t.chosen, t.rejected)
           for i in tokenizer(side, add_special_tokens=False)["input_ids"]]
    share = sum(i == tokenizer.unk_token_id for i in ids) / max(1, len(ids))
    if share > MAX_UNKNOWN_SHARE:
        raise ConfigError(key, reward.path, f"its tokenizer reads {share:.0%} of the tokens of the policy's responses "
                          f"(the responses in {cfg.data.source}) as {tokenizer.unk_token}; it was trained on "
                          f"other text - choose a reward model whose tokenizer covers the policy's outputs")


def check_batches(cfg: PolicyConfig, world_size: int | None = None) -> None:
    """online-rl: a generation batch (per device x ranks x accumulation) holds whole prompt groups."""
    import os

    t = cfg.training
    ranks = world_size or int(os.environ.get("WORLD_SIZE", "1"))
    if cfg.method == "online-rl" and (t.per_device_train_batch_size * ranks * t.gradient_accumulation_steps) \
            % cfg.online_rl.num_generations:
        raise ConfigError("training.per_device_train_batch_size", t.per_device_train_batch_size,
                          f"per_device_train_batch_size x ranks x gradient_accumulation_steps "
                          f"({t.per_device_train_batch_size} x {ranks} x {t.gradient_accumulation_steps}) must be a "
                          f"multiple of online_rl.num_generations ({cfg.online_rl.num_generations}): each prompt's "
                          "samples share one generation batch")


def prepare(cfg: PolicyConfig):
    """Every check that needs no weights; returns (train triples, held-out triples, data reports)."""
    from rm_training.train import load_triples

    check_batches(cfg)
    check_policy_model(cfg)
    train_triples, held, reports = load_triples(cfg)
    if cfg.method == "online-rl":
        check_reward_fits(cfg, train_triples)
    return train_triples, held, reports


# ---------------------------------------------------------------- pieces

def load_tokenizer(cfg: PolicyConfig, padding_side: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer or cfg.model)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ConfigError("tokenizer", cfg.tokenizer or cfg.model, "has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def common_args(cfg: PolicyConfig) -> dict:
    """TrainingArguments shared by DPOConfig and RLOOConfig."""
    from rm_training.train import ddp_backend_for

    t = cfg.training
    return dict(output_dir=t.output_dir, learning_rate=t.learning_rate,
                per_device_train_batch_size=t.per_device_train_batch_size,
                per_device_eval_batch_size=t.per_device_eval_batch_size,
                gradient_accumulation_steps=t.gradient_accumulation_steps, num_train_epochs=t.num_train_epochs,
                max_steps=t.max_steps, warmup_steps=t.warmup_ratio,  # a float in [0, 1) is a ratio
                weight_decay=t.weight_decay, logging_steps=t.logging_steps, seed=t.seed, data_seed=t.seed,
                bf16=t.bf16, fp16=t.fp16, gradient_checkpointing=t.gradient_checkpointing, deepspeed=t.deepspeed,
                report_to=t.report_to, save_strategy="no", eval_strategy="no", ddp_backend=ddp_backend_for(t.deepspeed))


class RewardModelFunction:
    """A TRL reward function: (prompts, completions) -> one reward each, scored by
    the scorer ``pargs_batch.rewards.factory.make_scorer`` picks for it - the RM's own tokenizer and the same input rule
    (template, pair or chat) that generation and evaluation use."""

    __name__ = "reward_model"

    def __init__(self, reward):
        from pargs_batch.rewards.factory import make_scorer

        self.scorer = make_scorer(reward)

    def __call__(self, prompts, completions, **_) -> list[float]:
        return [float(x) for x in self.scorer.score(list(prompts), list(completions))]


def reward_on_this_rank(reward):
    """``device: auto`` on a multi-GPU launch means this rank's GPU (LOCAL_RANK), not GPU 0."""
    import dataclasses
    import os

    import torch

    if reward.device == "auto" and torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        return dataclasses.replace(reward, device=f"cuda:{int(os.environ['LOCAL_RANK'])}")
    return reward


def unique_prompts(triples: list[prefs.Triple]) -> list[str]:
    return list(dict.fromkeys(t.prompt for t in triples))


def heldout_reward(model, tokenizer, reward_fn, prompts: list[str], max_new_tokens: int, temperature: float,
                   seed: int, samples: int = 2, batch_size: int = 32) -> dict:
    """Mean reward of ``samples`` sampled responses per held-out prompt, ± SE over prompts (each
    prompt's samples averaged first), with a fixed seed."""
    import numpy as np
    import torch

    torch.manual_seed(seed)
    model.eval()
    per_prompt = []
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i:i + batch_size]
        enc = tokenizer(chunk, return_tensors="pt", padding=True).to(model.device)
        with torch.inference_mode():
            out = model.generate(**enc, do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                                 max_new_tokens=max_new_tokens, num_return_sequences=samples,
                                 pad_token_id=tokenizer.pad_token_id)
        texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        rewards = np.asarray(reward_fn([p for p in chunk for _ in range(samples)], texts)).reshape(len(chunk), samples)
        per_prompt += rewards.mean(axis=1).tolist()
    values = np.asarray(per_prompt)
    se = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0
    return {"mean": round(float(values.mean()), 4), "se": round(se, 4), "prompts": len(values), "samples": samples}


def clip_prompts(tokenizer, prompts: list[str], limit: int) -> tuple[list[str], int]:
    """Prompts longer than ``limit`` tokens keep their last ``limit`` (the question is at the end, as
    the reward scorer cuts too); returns them and how many were cut."""
    out, cut = [], 0
    for prompt in prompts:
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if len(ids) > limit:
            prompt, cut = tokenizer.decode(ids[-limit:]), cut + 1
        out.append(prompt)
    return out, cut


# ---------------------------------------------------------------- the two methods

def train_dpo(cfg: PolicyConfig, train_triples, held) -> tuple[tuple, dict]:
    import datasets
    from trl import DPOConfig, DPOTrainer

    tokenizer = load_tokenizer(cfg, "right")
    limit = cfg.training.max_length
    too_long = sum(len(tokenizer(t.prompt)["input_ids"]) >= limit for t in train_triples)
    if too_long == len(train_triples):
        raise ConfigError("training.max_length", limit, "every training prompt is at least this long: DPO would "
                          "drop every pair")
    if too_long:
        log.warning("%d of %d training prompts reach training.max_length (%d): DPO drops their pairs",
                    too_long, len(train_triples), limit)
    d = cfg.dpo
    args = DPOConfig(**common_args(cfg), beta=d.beta, loss_type=[d.loss_type], max_length=cfg.training.max_length)
    trainer = DPOTrainer(model=cfg.model, args=args,
                         train_dataset=datasets.Dataset.from_list(prefs.as_dicts(train_triples)),
                         eval_dataset=datasets.Dataset.from_list(prefs.as_dicts(held)) if held else None,
                         processing_class=tokenizer, peft_config=lora_config(cfg))
    heldout = {}
    if held and not cfg.training.deepspeed:  # (an evaluation first would leave DeepSpeed in inference mode)
        heldout["before"] = _dpo_eval(trainer)
    elif held:
        log.warning("DeepSpeed: the held-out margin is measured after training only")
    result, seconds = _fit(trainer)
    if held:
        heldout["after"] = _dpo_eval(trainer)
    extra = {"dropped_long_prompts": too_long}
    if heldout:
        extra["heldout_implicit_reward"] = heldout
    return (trainer, result, seconds), extra


def _dpo_eval(trainer) -> dict:
    m = trainer.evaluate()
    return {"margin": round(m["eval_rewards/margins"], 4), "accuracy": round(m["eval_rewards/accuracies"], 4),
            "loss": round(m["eval_loss"], 4)}


def train_online_rl(cfg: PolicyConfig, train_triples, held) -> tuple[tuple, dict]:
    import datasets
    from trl import RLOOConfig, RLOOTrainer

    tokenizer = load_tokenizer(cfg, "left")
    o = cfg.online_rl
    # made before RLOOConfig turns ZeRO-3 on for every from_pretrained; each rank's copy on its own GPU
    reward_fn = RewardModelFunction(reward_on_this_rank(o.reward))
    args = RLOOConfig(**common_args(cfg), beta=o.beta, num_generations=o.num_generations,
                      max_completion_length=o.max_completion_length, temperature=o.temperature, top_k=0,
                      log_completions=False)
    prompts, cut = clip_prompts(tokenizer, unique_prompts(train_triples),
                                cfg.training.max_length - o.max_completion_length)
    if cut:
        log.warning("%d of %d prompts kept only their last %d tokens (training.max_length - max_completion_length)",
                    cut, len(prompts), cfg.training.max_length - o.max_completion_length)
    trainer = RLOOTrainer(model=cfg.model, reward_funcs=reward_fn, args=args,
                          train_dataset=datasets.Dataset.from_dict({"prompt": prompts}),
                          processing_class=tokenizer, peft_config=lora_config(cfg))
    eval_prompts, _ = clip_prompts(tokenizer, unique_prompts(held)[:o.heldout_prompts],
                                   cfg.training.max_length - o.max_completion_length)
    measure = (lambda model: heldout_reward(model, tokenizer, reward_fn, eval_prompts, o.max_completion_length,
                                            o.temperature, cfg.training.seed)) if eval_prompts else None
    heldout = {"before": measure(trainer.model)} if measure and not cfg.training.deepspeed else {}
    if measure and cfg.training.deepspeed:
        log.warning("DeepSpeed: the held-out reward is not measured (the policy is partitioned across ranks)")
    result, seconds = _fit(trainer)
    if measure and not cfg.training.deepspeed:
        heldout["after"] = measure(trainer.model)
    extra = {"algorithm": "RLOO", "kl_beta": o.beta, "train_prompts": len(prompts), "clipped_prompts": cut}
    if heldout:
        extra["heldout_reward"] = heldout
    return (trainer, result, seconds), extra


def _fit(trainer):
    start = time.perf_counter()
    result = trainer.train()
    return result, time.perf_counter() - start


# ---------------------------------------------------------------- main

def train_policy(cfg: PolicyConfig) -> dict:
    """Run one policy-training job; returns (and writes) the training summary."""
    import dataclasses

    import torch

    from rm_training.train import zero_stage

    start = time.perf_counter()
    train_triples, held, reports = prepare(cfg)
    log.info("%s: %d training triples, %d held out", label(cfg.method), len(train_triples), len(held))
    torch.manual_seed(cfg.training.seed)
    runner = train_dpo if cfg.method == "dpo" else train_online_rl
    (trainer, result, fit_seconds), extra = runner(cfg, train_triples, held)
    save_merged(cfg, trainer)
    if not trainer.is_world_process_zero():
        return {}
    summary = {
        "method": cfg.method, "label": label(cfg.method), "model": cfg.model, "output": cfg.training.output_dir,
        "data": reports, "train_triples": len(train_triples), "heldout_triples": len(held),
        "steps": result.global_step, "train_loss": result.training_loss,
        "deepspeed_zero_stage": zero_stage(trainer),
        "lora": {"r": cfg.lora.r, "alpha": cfg.lora.alpha, "targets": cfg.lora.target_modules} if cfg.lora.enabled
        else None,
        **extra,
        "train_seconds": round(fit_seconds, 2),
        "wall_seconds": round(time.perf_counter() - start, 2),
        "config": dataclasses.asdict(cfg),
    }
    Path(cfg.training.output_dir, "training_summary.json").write_text(json.dumps(summary, indent=2))
    print_summary(summary)
    return summary


def print_summary(s: dict) -> None:
    print(f"\n{s['label']} policy -> {s['output']} (merged checkpoint; vLLM loads it as model.path)")
    print(f"  {s['train_triples']} training triples, {s['steps']} updates in {s['train_seconds']} s "
          f"({s['wall_seconds']} s in all)")
    for key, name in (("heldout_implicit_reward", "held-out implicit reward margin"),
                      ("heldout_reward", "held-out mean reward")):
        m = s.get(key)
        if m and "after" in m:
            fmt = (lambda x: f"{x['margin']:+.4f} (accuracy {x['accuracy']:.3f})") if key.endswith("implicit_reward") \
                else (lambda x: f"{x['mean']:.4f} ± {x['se']:.4f} over {x['prompts']} prompts")
            print(f"  {name}: " + (f"{fmt(m['before'])} -> " if "before" in m else "") + fmt(m["after"]))


def main(argv: list[str] | None = None) -> int:
    from rm_training.train import job_main

    return job_main(argv, "python -m rm_training.policy", __doc__, PolicyConfig, train_policy,
                    "rm_training/configs/dpo.yaml, online_rl.yaml")


if __name__ == "__main__":
    sys.exit(main())
