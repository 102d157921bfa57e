"""Configuration of `python -m rm_training.policy`: the fine-tuned baselines (DPO, online RL).

The same YAML + dotted-override style as `rm_training.train`; the preference data section is the
reward models' own (``PreferenceData``), so a policy and a reward model can be trained on the same
file with the same keys. Values are checked here, before any model loads.
"""

from __future__ import annotations

from dataclasses import dataclass

from pargs_batch.config import RewardConfig
from pargs_batch.configlib import ConfigError, check_model_path, one_of, option, positive
from rm_training.config import LoraOptions, PreferenceData, Training

METHODS = ("dpo", "online-rl")
ONLINE_RL_ALGORITHMS = ("rloo",)  # TRL 1.x ships no PPO trainer; RLOO is its KL-penalised REINFORCE
DPO_LOSSES = ("sigmoid", "hinge", "ipo")


@dataclass
class DPOOptions:
    """Direct preference optimisation (Rafailov et al.), TRL's DPOTrainer."""

    beta: float = option("KL strength: the implicit reward is beta * log(pi / pi_ref)", 0.1)
    loss_type: str = option("sigmoid (the DPO paper's), hinge or ipo", "sigmoid")

    def __post_init__(self):
        positive("dpo.beta", self.beta)
        one_of("dpo.loss_type", self.loss_type, DPO_LOSSES)


@dataclass
class OnlineRLOptions:
    """Online RL against a reward model with a KL penalty to the reference policy: TRL's RLOOTrainer
    (REINFORCE with a leave-one-out baseline over ``num_generations`` samples of each prompt)."""

    algorithm: str = option("rloo (TRL 1.x has no PPO trainer; RLOO is its reward-model + KL-penalty trainer)", "rloo")
    reward: RewardConfig = option("the reward model (any sequence-classification RM with its own tokenizer; the same "
                                  "keys as generation's reward section)", factory=RewardConfig)
    beta: float = option("KL penalty to the reference policy, subtracted from the reward", 0.05)
    num_generations: int = option("samples per prompt (RLOO's leave-one-out baseline needs 2+)", 4)
    max_completion_length: int = option("tokens sampled per response during training", 64)
    temperature: float = option("sampling temperature during training", 1.0)
    heldout_prompts: int = option("held-out prompts on which the mean reward is measured before and after", 64)

    def __post_init__(self):
        one_of("online_rl.algorithm", self.algorithm, ONLINE_RL_ALGORITHMS)
        positive("online_rl.beta", self.beta, allow_zero=True)
        if self.num_generations < 2:
            raise ConfigError("online_rl.num_generations", self.num_generations, "must be >= 2 (leave-one-out baseline)")
        positive("online_rl.max_completion_length", self.max_completion_length)
        positive("online_rl.temperature", self.temperature)
        positive("online_rl.heldout_prompts", self.heldout_prompts, allow_zero=True)


@dataclass
class PolicyTraining(Training):
    """Optimisation, handed to TRL's DPOConfig / RLOOConfig (transformers TrainingArguments).
    Defaults: the paper's DPO recipe (Table 6, Llama-2-7B on HH-RLHF)."""

    output_dir: str = option("where the merged checkpoint and training_summary.json go", "outputs/policy")
    learning_rate: float = option("peak learning rate", 5e-5)
    per_device_train_batch_size: int = option("pairs (dpo) or completions (online-rl) per device per step", 1)
    per_device_eval_batch_size: int = option("pairs per device per evaluation step", 8)
    max_length: int = option("prompt + response limit in tokens (dpo: longer pairs are cut, the prompt keeps its "
                             "start; online-rl: prompts keep their last max_length - max_completion_length tokens)",
                             512)


def check_zero3_saves_weights(path: str) -> None:
    """Under ZeRO-3 the trainer writes whole weights only when the config asks it to gather them."""
    import json

    try:
        ds = json.loads(open(path).read())
    except (OSError, ValueError) as e:
        raise ConfigError("training.deepspeed", path, f"not a readable JSON file ({e.__class__.__name__})") from None
    zero = ds.get("zero_optimization", {})
    if zero.get("stage") == 3 and not zero.get("stage3_gather_16bit_weights_on_model_save"):
        raise ConfigError("training.deepspeed", path, "ZeRO-3 without zero_optimization."
                          "stage3_gather_16bit_weights_on_model_save: true saves no weights to merge")


@dataclass
class PolicyConfig:
    """Everything `python -m rm_training.policy` needs."""

    method: str = option("dpo (TRL's DPOTrainer on preference pairs) or online-rl (RLOO against a reward model)", "dpo")
    model: str = option("the policy to fine-tune: checkpoint or hub id of a causal LM (also the reference)", "")
    tokenizer: str | None = option("tokenizer directory or hub id; defaults to `model`", None)
    data: PreferenceData = option("preference triples (dpo trains on them; online-rl takes their prompts)",
                                  factory=PreferenceData)
    lora: LoraOptions = option("LoRA adapters (peft)", factory=LoraOptions)
    dpo: DPOOptions = option("DPO settings (method: dpo)", factory=DPOOptions)
    online_rl: OnlineRLOptions = option("online RL settings (method: online-rl)", factory=OnlineRLOptions)
    training: PolicyTraining = option("optimisation", factory=PolicyTraining)

    def __post_init__(self):
        one_of("method", self.method, METHODS)
        check_model_path("model", self.model)
        if self.tokenizer:
            check_model_path("tokenizer", self.tokenizer)
        if self.method == "online-rl" and not self.online_rl.reward.path:
            raise ConfigError("online_rl.reward.path", "", "online-rl needs a reward model")
        if self.method == "online-rl" and self.online_rl.max_completion_length >= self.training.max_length:
            raise ConfigError("online_rl.max_completion_length", self.online_rl.max_completion_length,
                              f"must be below training.max_length ({self.training.max_length}), which holds the "
                              "prompt too")
        if self.training.deepspeed:
            check_zero3_saves_weights(self.training.deepspeed)
        if self.method == "online-rl" and self.online_rl.reward.backend != "hf":
            raise ConfigError("online_rl.reward.backend", self.online_rl.reward.backend,
                              "online-rl scores whole responses with the hf scorer")
