"""LoRA adapters and the checkpoint they fold into, shared by the policy trainers (DPO, online RL)
and the autoregressive reward model: peft's ``LoraConfig`` from a config's ``lora`` section, and a
plain Hugging Face checkpoint at the end (adapters merged into the base weights, or the full ones)."""

from __future__ import annotations

from pathlib import Path


def lora_config(cfg):
    if not cfg.lora.enabled:
        return None
    from peft import LoraConfig

    targets = cfg.lora.target_modules
    return LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout, task_type="CAUSAL_LM",
                      target_modules="all-linear" if targets == ["all-linear"] else list(targets))


def stored_dtype(model: str):
    """The dtype a checkpoint's config records (float32 when it records none)."""
    import torch
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model)
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or torch.float32
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


def save_merged(cfg, trainer) -> None:
    """Write the output checkpoint: LoRA adapters folded into a fresh float32 copy of the base weights
    (so the same code serves ZeRO-3, where the trainer's model is partitioned), stored in the base's
    dtype; or the full weights. Every rank waits until rank 0 has written it."""
    import torch

    out = Path(cfg.training.output_dir)
    if not cfg.lora.enabled:
        trainer.save_model(str(out))
    else:
        adapter = out / "adapter"
        trainer.save_model(str(adapter))
        if trainer.is_world_process_zero():
            from peft import PeftModel
            from transformers import AutoModelForCausalLM

            if cfg.training.deepspeed:
                from transformers.integrations.deepspeed import unset_hf_deepspeed_config

                unset_hf_deepspeed_config()  # load whole weights, not ZeRO-3 partitions
            dtype = stored_dtype(cfg.model)
            base = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=torch.float32)
            merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
            merged.to(dtype).save_pretrained(str(out))
    if trainer.is_world_process_zero():
        from transformers import AutoTokenizer

        # the tokenizer as the user gave it (training changed its padding side and pad token)
        AutoTokenizer.from_pretrained(cfg.tokenizer or cfg.model).save_pretrained(str(out))
    trainer.accelerator.wait_for_everyone()
