"""The default world's fine-tuned baselines: DPO and online RL (RLOO) policies trained from the
world's LM by `rm_training.policy`, exactly as a user trains theirs.

Both start from the frozen LM that every decode-time method uses, with LoRA (r = 16, alpha = 16:
the paper's DPO adapters) merged into the weights at the end:

- ``dpo``: the guidance preference pairs (the ones rm_full and rm_partial learn from), one epoch;
- ``online-rl``: RLOO on the guidance prompts, rewarded by rm_full (the full-sequence RM, as RLHF's
  PPO uses one) with a KL penalty to the LM. The penalty is strong (beta 0.5): at 0.05 (TRL's
  default) and lr 3e-3 the policy learned to answer " ." - rm_full scores it 4.5, above any real
  reply, while its gold reward is -0.5 - the reward over-optimisation the KL term is there to stop.

``rm_training/configs/world_dpo.yaml`` and ``world_online_rl.yaml`` hold the same recipes
(a test checks they agree).
"""

from __future__ import annotations

import time
from pathlib import Path

POLICIES = ("dpo", "online-rl")
BATCH = 16  # pairs (dpo) / completions = 4 prompts x 4 samples (online-rl) per update


def policy_config(world: dict, method: str, out: str | Path, reduced: bool = False) -> dict:
    """The training config of one baseline, as a plain dict (what a YAML file would hold)."""
    cfg = {
        "method": method, "model": world["llm"],
        "data": {"source": world["preferences"]["guidance"], "format": "generic",
                 "eval_source": world["preferences"]["heldout"]},
        "lora": {"enabled": True, "r": 16, "alpha": 16, "dropout": 0.05, "target_modules": ["all-linear"]},
        "training": {"output_dir": str(Path(out) / method), "per_device_train_batch_size": BATCH,
                     "gradient_accumulation_steps": 1, "warmup_ratio": 0.05, "max_length": 128, "seed": 0},
    }
    if method == "dpo":
        cfg["dpo"] = {"beta": 0.1}
        cfg["training"].update({"learning_rate": 1e-3, "num_train_epochs": 1.0,
                                "max_steps": 20 if reduced else -1, "logging_steps": 5 if reduced else 50})
    else:
        cfg["online_rl"] = {"algorithm": "rloo",
                            "reward": {"path": world["rm_full"], "template": world["template"], "max_length": 128,
                                       "batch_size": 256},
                            # the reduced world's RMs tell replies apart by ~0.01: a KL term sized for the
                            # full world's (rewards 2-5) would drown that in a 40-step test
                            "beta": 0.05 if reduced else 0.5, "num_generations": 4,
                            "max_completion_length": 40 if reduced else 48, "temperature": 1.0, "heldout_prompts": 64}
        cfg["training"].update({"learning_rate": 3e-3 if reduced else 1e-3, "max_steps": 40 if reduced else 300,
                                "logging_steps": 10 if reduced else 50})
    return cfg


def train_policies(world: dict, out: str | Path, reduced: bool = False, log=None) -> dict:
    """Train both baselines into ``out``/<method>; returns what the demo's table needs of each."""
    from pargs_batch.configlib import build
    from rm_training.policy import train_policy
    from rm_training.policy_config import PolicyConfig

    results = {}
    for method in POLICIES:
        t0 = time.perf_counter()
        summary = train_policy(build(PolicyConfig, policy_config(world, method, out, reduced)))
        results[method] = {"path": summary["output"], "label": summary["label"], "steps": summary["steps"],
                           "train_seconds": summary["train_seconds"], "seconds": round(time.perf_counter() - t0, 1),
                           **{k: summary[k] for k in ("heldout_implicit_reward", "heldout_reward") if k in summary}}
        if log:
            log(f"demo: {summary['label']} trained: {summary['steps']} updates in {results[method]['seconds']} s")
    return results
