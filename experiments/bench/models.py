"""The bench's model sets: an LLM with the two reward models it is guided by, on disk.

``world``: the default world's LLM, partial DeBERTa RM and causal GPT-2 RM. ``paper-ratio``:
random weights with the paper's parameter ratio (LLM about 20x the RM, as Llama-2-7B to
DeBERTa-v3-large). ``curve_model``: the causal RM of the reward-vs-prefix curve.
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
