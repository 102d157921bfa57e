"""Reward scoring of candidate prefixes: (prompt text, response-prefix text) in, one float out.

``HFRewardScorer`` wraps any transformers ``AutoModelForSequenceClassification`` with its own
tokenizer (GPT-2, Llama, DeBERTa, ...). The text is re-tokenised with the reward model's tokenizer,
so it need not share a vocabulary with the LLM. Inputs longer than the reward model allows are cut
from the left: the start of the prompt goes first, the response is kept.
"""

from __future__ import annotations

import logging

import numpy as np

from pargs_batch.config import RewardConfig

log = logging.getLogger(__name__)


def length_sorted_batches(lengths: list[int], batch_size: int) -> list[np.ndarray]:
    """Indices grouped into batches of similar length (longest first), so padding stays small."""
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class HFRewardScorer:
    """A sequence-classification reward model; ``score`` runs length-sorted batches."""

    def __init__(self, config: RewardConfig):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.config = config
        self.device = _resolve_device(config.device)
        tokenizer = AutoTokenizer.from_pretrained(config.path)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
            log.warning("reward tokenizer %s has no pad token; using its EOS token", config.path)
        tokenizer.padding_side = "right"
        tokenizer.truncation_side = "left"  # cut the prompt's start, keep the response
        model = AutoModelForSequenceClassification.from_pretrained(
            config.path, dtype=getattr(torch, config.dtype))
        if model.config.num_labels != 1:
            log.warning("reward model %s has %d labels; using the first as the reward",
                        config.path, model.config.num_labels)
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        limits = [config.max_length, getattr(model.config, "max_position_embeddings", None)]
        if tokenizer.model_max_length < 10**6:
            limits.append(tokenizer.model_max_length)
        self.max_length = min(x for x in limits if x)

    def texts(self, prompts: list[str], responses: list[str]) -> list[str]:
        return [self.config.template.format(prompt=p, response=r) for p, r in zip(prompts, responses)]

    def score(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        """The reward of each (prompt, response prefix), as float32, in input order."""
        import torch

        out = np.zeros(len(prompts), dtype=np.float32)
        if not prompts:
            return out
        enc = self.tokenizer(self.texts(prompts, responses), truncation=True,
                             max_length=self.max_length)["input_ids"]
        with torch.inference_mode():
            for idx in length_sorted_batches([len(x) for x in enc], self.config.batch_size):
                batch = self.tokenizer.pad({"input_ids": [enc[i] for i in idx]}, return_tensors="pt")
                logits = self.model(**{k: v.to(self.device) for k, v in batch.items()}).logits
                out[idx] = logits[:, 0].float().cpu().numpy()
        return out
