"""The fine-tuned baselines (`python -m rm_training.policy`): real TRL DPO / RLOO, real peft LoRA, on
the reduced default world; bad input stops before training with exit code 2."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from experiments.world.policies import policy_config
from pargs_batch.configlib import ConfigError, build
from rm_training.policy import main, train_policy
from rm_training.policy_config import PolicyConfig

from helpers import free_port

ROOT = Path(__file__).resolve().parents[1]


def weights(path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "model.safetensors"))


def assert_merged_and_changed(out: Path, base: str) -> None:
    """A plain checkpoint (LoRA folded in: same tensors as the base), whose weights moved."""
    trained, original = weights(out), weights(base)
    assert set(trained) == set(original) and not any("lora" in k for k in trained)
    changed = [k for k in trained if not torch.equal(trained[k], original[k])]
    assert changed and any(".attn." in k for k in changed), changed
    assert (out / "tokenizer.json").exists() and (out / "adapter" / "adapter_config.json").exists()


@pytest.mark.slow
def test_dpo_steps_change_the_weights_and_move_the_heldout_margin(reduced_world, tmp_path):
    cfg = build(PolicyConfig, policy_config(reduced_world, "dpo", tmp_path, reduced=True))
    summary = train_policy(cfg)
    assert summary["label"] == "DPO" and summary["steps"] == 20
    margin = summary["heldout_implicit_reward"]
    # LoRA starts as the reference (B = 0): no margin before; after, held-out chosen replies gain on rejected ones
    assert margin["before"]["margin"] == pytest.approx(0, abs=1e-6)
    assert margin["after"]["margin"] > 0.001 and margin["after"]["loss"] < margin["before"]["loss"]
    assert_merged_and_changed(tmp_path / "dpo", reduced_world["llm"])
    on_disk = json.loads((tmp_path / "dpo" / "training_summary.json").read_text())
    assert on_disk["train_seconds"] > 0 and on_disk["config"]["lora"]["r"] == 16


def gold_per_prompt(model_dir: str, prompts: list[str], samples: int, max_new_tokens: int):
    """The world's gold reward of ``samples`` replies a prompt sampled from ``model_dir`` (temperature 1,
    no top-k, a fixed seed), each prompt's replies averaged."""
    import numpy as np
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from experiments.world.gold import gold_reward

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    torch.manual_seed(0)
    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.inference_mode():
        out = model.generate(**enc, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
                             num_return_sequences=samples, pad_token_id=tokenizer.pad_token_id)
    replies = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    gold = gold_reward([p for p in prompts for _ in range(samples)], replies)
    return np.asarray(gold, dtype=np.float64).reshape(len(prompts), samples).mean(axis=1)


@pytest.mark.slow
def test_online_rl_steps_raise_the_heldout_gold_reward(reduced_world, tmp_path):
    """RLOO against rm_full, judged by the world's gold reward rather than by rm_full: a policy can game
    the reward model it is trained on (experiments/world/policies.py: at a weak KL penalty it learned to
    answer " ." - rm_full's favourite, gold -0.5), so only the gold reward says it got better."""
    import numpy as np

    cfg = build(PolicyConfig, policy_config(reduced_world, "online-rl", tmp_path, reduced=True))
    summary = train_policy(cfg)
    assert summary["label"] == "online RL (RLOO)" and summary["algorithm"] == "RLOO" and summary["steps"] == 40
    assert summary["heldout_reward"]["before"]["prompts"] == summary["heldout_reward"]["after"]["prompts"] == 64
    assert_merged_and_changed(tmp_path / "online-rl", reduced_world["llm"])
    # the 64 held-out prompts the summary's figures used, 16 replies each (with 4 the sampling noise hides a
    # gain of 0.1), as long as training's completions
    rows = [json.loads(line) for line in Path(reduced_world["preferences"]["heldout"]).read_text().splitlines()]
    prompts = list(dict.fromkeys(r["prompt"] for r in rows))[:64]
    length = cfg.online_rl.max_completion_length
    before = gold_per_prompt(reduced_world["llm"], prompts, 16, length)
    after = gold_per_prompt(str(tmp_path / "online-rl"), prompts, 16, length)
    # paired on prompt: the policy's gold mean is above the LM's by more than twice the difference's SE
    diff = after - before
    se = diff.std(ddof=1) / np.sqrt(len(diff))
    assert diff.mean() > 2 * se, (before.mean(), after.mean(), se)


@pytest.mark.slow
def test_dpo_with_lora_under_zero3_through_torchrun(reduced_world, tmp_path):
    """The cluster path on CPU: torchrun, DeepSpeed ZeRO-3 (gloo), LoRA; the adapters are merged into
    whole weights after training, not into ZeRO-3's empty partitions."""
    import os
    import subprocess
    import sys

    import yaml

    cfg = policy_config(reduced_world, "dpo", tmp_path, reduced=True)
    cfg["training"].update({"max_steps": 3, "per_device_train_batch_size": 8,
                            "deepspeed": str(ROOT / "rm_training/configs/zero3.json")})
    (tmp_path / "z3.yaml").write_text(yaml.safe_dump(cfg))
    torchrun = str(Path(sys.executable).parent / "torchrun")
    result = subprocess.run([torchrun, "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
                             "-m", "rm_training.policy", "--config", str(tmp_path / "z3.yaml")],
                            cwd=ROOT, capture_output=True, text=True, timeout=1800,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "dpo" / "training_summary.json").read_text())
    assert summary["deepspeed_zero_stage"] == 3 and summary["steps"] == 3
    assert_merged_and_changed(tmp_path / "dpo", reduced_world["llm"])
    assert all(t.abs().sum() > 0 for k, t in weights(tmp_path / "dpo").items() if "bias" not in k)


def run_main(world, tmp_path, method, capsys, **overrides) -> str:
    cfg = policy_config(world, method, tmp_path, reduced=True)
    args = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in overrides.items()]
    path = tmp_path / "policy.yaml"
    import yaml

    path.write_text(yaml.safe_dump(cfg))
    assert main(["--config", str(path), *args]) == 2
    err = capsys.readouterr().err
    assert not (tmp_path / method).exists()  # nothing trained, nothing written
    return err


def test_a_preference_set_missing_a_column_stops_before_training(reduced_world, tmp_path, capsys):
    bad = tmp_path / "prefs.jsonl"
    bad.write_text("".join(json.dumps({"prompt": "q", "chosen": "a"}) + "\n" for _ in range(4)))
    err = run_main(reduced_world, tmp_path, "dpo", capsys, **{"data.source": str(bad)})
    assert "config error: data.format='generic'" in err and "needs column(s) rejected" in err


def test_a_lora_module_the_model_lacks_stops_before_training(reduced_world, tmp_path, capsys):
    err = run_main(reduced_world, tmp_path, "dpo", capsys, **{"lora.target_modules": ["q_proj", "v_proj"]})
    # GPT-2 names its projections c_attn / c_proj / c_fc: the message lists what it has
    assert "lora.target_modules='q_proj'" in err and "c_attn" in err and "c_fc" in err


def test_a_reward_model_that_cannot_read_the_policy_outputs_stops_before_training(reduced_world, tmp_path, capsys):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    # the world's rm_full with a tokenizer that knows digits only: every word of a reply is [UNK]
    rm = tmp_path / "digits-rm"
    shutil.copytree(reduced_world["rm_full"], rm)
    for f in rm.glob("*token*"):
        f.unlink()
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *"0123456789"])}
    core = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                            sep_token="[SEP]").save_pretrained(rm)
    err = run_main(reduced_world, tmp_path, "online-rl", capsys, **{"online_rl.reward.path": str(rm)})
    assert f"online_rl.reward.path='{rm}'" in err and "as [UNK]" in err
    # a chat-reading reward model needs a chat template its tokenizer does not have
    err = run_main(reduced_world, tmp_path, "online-rl", capsys, **{"online_rl.reward.input": "chat"})
    assert "online_rl.reward.input='chat'" in err and "no chat template" in err


@pytest.mark.parametrize("overrides, message", [
    (["training.per_device_train_batch_size=6"], "must be a multiple of online_rl.num_generations (4)"),
    (["online_rl.num_generations=1"], "online_rl.num_generations=1"),
    (["online_rl.algorithm=ppo"], "online_rl.algorithm='ppo' is not allowed: expected one of rloo"),
    (["online_rl.reward.path="], "online_rl.reward.path=''"),
    (["lora.target_modules=[all-linear, c_attn]"], "all-linear stands alone"),
    (["method=ppo"], "method='ppo' is not allowed: expected one of dpo, online-rl"),
    (["online_rl.max_completion_length=128"], "must be below training.max_length (128)"),
    (["training.warmup_ratio=150"], "training.warmup_ratio=150.0 is not allowed: must be in [0, 1)"),
    (["dpo.loss_type=robust"], "expected one of sigmoid, hinge, ipo"),
])
def test_bad_policy_config_names_the_key(reduced_world, tmp_path, overrides, message):
    import re

    from pargs_batch.configlib import apply_overrides
    from rm_training.policy import check_batches

    cfg = policy_config(reduced_world, "online-rl", tmp_path, reduced=True)
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_batches(build(PolicyConfig, apply_overrides(cfg, overrides)))


def test_online_rl_batches_count_every_rank(reduced_world, tmp_path):
    from rm_training.policy import check_batches

    cfg = build(PolicyConfig, {**policy_config(reduced_world, "online-rl", tmp_path, reduced=True),
                               "training": {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 1}})
    check_batches(cfg, world_size=2)  # 2 per device x 2 GPUs: one prompt's 4 samples
    with pytest.raises(ConfigError, match=r"2 x 1 x 1\) must be a multiple"):
        check_batches(cfg, world_size=1)


def test_zero3_without_gathered_weights_is_refused(reduced_world, tmp_path):
    shipped = json.loads((ROOT / "rm_training/configs/zero3.json").read_text())
    shipped["zero_optimization"].pop("stage3_gather_16bit_weights_on_model_save")
    (tmp_path / "z3.json").write_text(json.dumps(shipped))
    cfg = policy_config(reduced_world, "dpo", tmp_path, reduced=True)
    cfg["training"]["deepspeed"] = str(tmp_path / "z3.json")
    with pytest.raises(ConfigError, match="stage3_gather_16bit_weights_on_model_save"):
        build(PolicyConfig, cfg)


@pytest.mark.parametrize("method", ["dpo", "online-rl"])
def test_the_world_policy_configs_hold_the_demos_recipe(method):
    """rm_training/configs/world_{dpo,online_rl}.yaml train what the demo's --with-trained-baselines trains."""
    import yaml

    shipped = yaml.safe_load((ROOT / "rm_training" / "configs" / f"world_{method.replace('-', '_')}.yaml").read_text())
    world = {"llm": "outputs/world/llm", "rm_full": "outputs/world/rm_full", "template": "{prompt}{response}",
             "preferences": {"guidance": "outputs/world/preferences_guidance.jsonl",
                             "heldout": "outputs/world/preferences_heldout.jsonl"}}
    built = policy_config(world, method, "outputs/policy")
    for section in ("method", "model", "data", "lora", "dpo", "online_rl"):
        assert shipped.get(section) == built.get(section), section
    for key in ("learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "warmup_ratio",
                "max_length", "max_steps"):
        assert shipped["training"].get(key, -1) == built["training"].get(key), key


@pytest.mark.parametrize("name", ["dpo.yaml", "online_rl.yaml"])
def test_the_paper_configs_are_valid(name, monkeypatch):
    import yaml

    monkeypatch.chdir(ROOT)
    from pargs_batch.configlib import build as build_config

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # hub ids, not downloaded here
    data = yaml.safe_load((ROOT / "rm_training" / "configs" / name).read_text())
    cfg = build_config(PolicyConfig, data)
    assert cfg.lora.r == cfg.lora.alpha == 16 and cfg.training.learning_rate in (5e-5, 1e-5)
    assert cfg.training.deepspeed == "rm_training/configs/zero3.json"
