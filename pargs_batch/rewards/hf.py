"""Reward scoring of candidate prefixes: (context, response-prefix text) in, one float out.

``HFRewardScorer`` wraps any transformers ``AutoModelForSequenceClassification`` with its own
tokenizer (GPT-2, Llama, DeBERTa, ...). The text is re-tokenised with the reward model's tokenizer,
so it need not share a vocabulary with the LLM. A context is the prompt text or, in a chat run, the
conversation (a list of ``{role, content}``). ``reward.input`` says how the model reads the pair:

- ``template``: one text, ``reward.template`` filled with the prompt (a conversation's last user
  message) and the response;
- ``pair``: a segment pair, ``tokenizer(prompt, response)`` - how OpenAssistant's DeBERTa RMs and
  other cross-encoders were trained (``[CLS] prompt [SEP] response [SEP]``);
- ``chat``: the conversation plus an assistant turn holding the response, rendered by the RM
  tokenizer's chat template. The template runs once per conversation: its text around the
  response is cached, and each step fills in the new prefix;
- ``hh``: the conversation as an Anthropic HH transcript, then the response after one space;
- ``auto``: what the checkpoint says (``rewards.reading``), decided when the scorer is built.

Inputs longer than the reward model allows are cut from the left: the start of the prompt goes
first, the response is kept.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np

from pargs_batch.io.contexts import prompt_of
from pargs_batch.config import RewardConfig
from pargs_batch.configlib import ConfigError
from pargs_batch.rewards.reading import chat_frame, hh_reply, hh_transcript

log = logging.getLogger(__name__)

_SAID: set = set()                      # (key, path) whose input was said
_CACHE_LIMIT = 1 << 16                  # rendered conversations kept (cleared when full: memory stays flat)


def check_reward_input(reward: RewardConfig, key: str = "reward") -> None:
    """How the reward model reads is decided (``input: auto``) and said; ``chat`` needs an RM
    tokenizer whose chat template renders a user turn and an assistant reply: checked (tokenizer
    only) before any model loads."""
    if not reward.path or reward.backend != "hf":
        return
    if reward.input == "auto":
        from pargs_batch.console import console
        from pargs_batch.rewards.reading import detect, resolved

        if (key, reward.path) not in _SAID:  # once a model: compare checks every run's config
            _SAID.add((key, reward.path))
            reading = detect(reward.path)
            console.say(f"{key}: {reward.path} reads input {reading.input} ({reading.why})")
        reward = resolved(reward)
    if reward.input != "chat":
        return
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(reward.path)
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"{key}.input", "chat", f"the reward tokenizer ({reward.path}) has no chat template")
    try:
        chat_frame(tokenizer, "a prompt")
    except Exception as e:  # a template may raise on its own terms (roles, order)
        raise ConfigError(f"{key}.input", "chat", f"the reward tokenizer ({reward.path}) cannot render "
                          f"a user turn and an assistant reply: {e}") from None


def length_sorted_batches(lengths: list[int], batch_size: int, max_tokens: int | None = None) -> list[np.ndarray]:
    """Indices grouped into batches of similar length (longest first), so padding stays small: at
    most ``batch_size`` inputs and, with ``max_tokens``, at most that many tokens once padded to the
    batch's longest (one input at least)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    if max_tokens is None:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    out, i = [], 0
    while i < len(order):
        n = max(1, min(batch_size, max_tokens // max(int(lengths[order[i]]), 1)))
        out.append(order[i:i + n])
        i += n
    return out


def row_chunks(widths: list[int], max_tokens: int | None) -> list[slice]:
    """Consecutive slices of rows, each padded to its longest at most ``max_tokens`` tokens (one row
    at least); one slice of all when unlimited. How the causal and autoregressive backends encode
    new rows within the memory plan, in order."""
    if max_tokens is None or not widths:
        return [slice(0, len(widths))]
    out, start, longest = [], 0, 0
    for i, width in enumerate(widths):
        longest_with = max(longest, width)
        if i > start and longest_with * (i - start + 1) > max_tokens:
            out.append(slice(start, i))
            start, longest_with = i, width
        longest = longest_with
    out.append(slice(start, len(widths)))
    return out


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_dtype(config: RewardConfig, device: str):
    """The torch dtype ``config``'s reward model loads in: ``reward.dtype``, or for ``auto`` the
    checkpoint's own (a float32 checkpoint runs in bfloat16 on a GPU; ``memory.resolved_dtype``)."""
    import torch

    from pargs_batch.plan.shapes import checkpoint_dtype, resolved_dtype

    checkpoint = checkpoint_dtype(config.path) if config.dtype == "auto" else config.dtype
    return getattr(torch, resolved_dtype(config.dtype, checkpoint, str(device).startswith("cuda")))


def one_kernel_activations(model):
    """Swap transformers' Python tanh-GELU (``gelu_new``, GPT-2's: eight elementwise kernels a call)
    for torch's fused ``gelu(approximate="tanh")``, the same function in one kernel (outputs agree
    to ~1e-6). A guided step runs the reward model's MLPs over B x k candidates; on CPU the eight
    passes over those activations were 7% of a fused step with the causal backend."""
    from transformers.activations import GELUTanh, NewGELUActivation

    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is NewGELUActivation:
                setattr(parent, name, GELUTanh())
    return model


class HFRewardScorer:
    """A sequence-classification reward model; ``score`` runs length-sorted batches."""

    def __init__(self, config: RewardConfig):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from pargs_batch.rewards.reading import resolved

        self.config = config = resolved(config)
        self.device = resolve_device(config.device)
        tokenizer = AutoTokenizer.from_pretrained(config.path)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
            log.warning("reward tokenizer %s has no pad token; using its EOS token", config.path)
        tokenizer.padding_side = "right"
        tokenizer.truncation_side = "left"  # cut the prompt's start, keep the response
        model = AutoModelForSequenceClassification.from_pretrained(config.path, dtype=load_dtype(config, self.device))
        if model.config.num_labels != 1:
            log.warning("reward model %s has %d labels; using the first as the reward",
                        config.path, model.config.num_labels)
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        self.model = one_kernel_activations(model).to(self.device).eval()
        self.tokenizer = tokenizer
        limits = [config.max_length, getattr(model.config, "max_position_embeddings", None)]
        if tokenizer.model_max_length < 10**6:
            limits.append(tokenizer.model_max_length)
        self.max_length = min(x for x in limits if x)

        self.frames: dict[str, tuple[str, str]] = {}  # chat input: rendered text around the reply
        if config.input == "chat" and not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"reward.input is chat but the reward tokenizer ({config.path}) has no chat template")

    def texts(self, contexts: list[Any], responses: list[str]) -> list[str]:
        """The text the model reads for each (context, response) - template and chat inputs."""
        if self.config.input == "chat":
            return [head + r + tail for (head, tail), r in zip(map(self._frame, contexts), responses)]
        if self.config.input == "hh":
            return [hh_transcript(c) + hh_reply(r) for c, r in zip(contexts, responses)]
        return [self.config.template.format(prompt=prompt_of(c), response=r) for c, r in zip(contexts, responses)]

    def _frame(self, context: Any) -> tuple[str, str]:
        key = context if isinstance(context, str) else json.dumps(context, sort_keys=True)
        frame = self.frames.get(key)
        if frame is None:
            if len(self.frames) >= _CACHE_LIMIT:
                self.frames.clear()
            frame = self.frames[key] = chat_frame(self.tokenizer, context)
        return frame

    def encode(self, contexts: list[Any], responses: list[str]) -> dict[str, list[list[int]]]:
        """Token ids (and whatever else the tokenizer returns per row) of each input, at most
        ``max_length`` long, cut from the left."""
        tok, limit = self.tokenizer, self.max_length
        if self.config.input != "pair":
            # a chat template writes its own special tokens
            enc = tok(self.texts(contexts, responses), truncation=True, max_length=limit,
                      add_special_tokens=self.config.input != "chat")
            return {k: list(v) for k, v in enc.items()}
        prompts = [prompt_of(c) for c in contexts]
        enc = {k: list(v) for k, v in tok(prompts, responses).items()}
        for i in [i for i, ids in enumerate(enc["input_ids"]) if len(ids) > limit]:
            # lists, not strings: transformers reads a lone empty second segment as "no pair"
            try:  # cut the prompt alone; when it is too short for that, both
                one = tok([prompts[i]], [responses[i]], truncation="only_first", max_length=limit)
            except Exception:
                one = tok([prompts[i]], [responses[i]], truncation="longest_first", max_length=limit)
            for k in enc:
                enc[k][i] = one[k][0]
        return enc

    def score(self, contexts: list[Any], responses: list[str]) -> np.ndarray:
        """The reward of each (context, response prefix), as float32, in input order."""
        return self.score_costed(contexts, responses)[0]

    def score_costed(self, contexts: list[Any], responses: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``score``, the tokens the model read for each input (padding not counted) and the model
        calls each input took (one)."""
        import torch

        out = np.zeros(len(contexts), dtype=np.float32)
        if not contexts:
            return out, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        enc = self.encode(contexts, responses)
        lengths = [len(x) for x in enc["input_ids"]]
        with torch.inference_mode():
            for idx in length_sorted_batches(lengths, self.config.batch_size, self.config.batch_tokens):
                batch = self.tokenizer.pad({k: [v[i] for i in idx] for k, v in enc.items()}, return_tensors="pt")
                logits = self.model(**{k: v.to(self.device) for k, v in batch.items()}).logits
                out[idx] = logits[:, 0].float().cpu().numpy()
        return out, np.asarray(lengths, dtype=np.int64), np.ones(len(contexts), dtype=np.int64)


class WeightedScorer:
    """Several reward models as one: the reward is sum_j w_j r_j, with each input's own weights
    (``data.weights_column``) or the configured ones. Each model reads the input its own way
    (tokenizer, ``input``, template) and runs only on the inputs that weigh it: a weight of 0 costs
    nothing, and a model's NaN never reaches a reward that does not weigh it."""

    def __init__(self, config: RewardConfig):
        members = config.members
        self.scorers = [HFRewardScorer(member) for member, _ in members]
        self.weights = np.array([w for _, w in members], dtype=np.float64)

    def score(self, contexts: list[Any], responses: list[str], weights: list | None = None) -> np.ndarray:
        return self.score_costed(contexts, responses, weights)[0]

    def score_costed(self, contexts: list[Any], responses: list[str], weights: list | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The weighted reward of each input (float32), the tokens it cost and the model calls it
        took; ``weights`` holds one list of per-model weights per input, or None for the configured ones."""
        n = len(contexts)
        w = np.tile(self.weights, (n, 1))
        for i, own in enumerate(weights or []):
            if own is not None:
                w[i] = own
        total = np.zeros(n, dtype=np.float64)
        tokens, calls = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
        for j, scorer in enumerate(self.scorers):
            rows = np.nonzero(w[:, j] != 0)[0]
            if not len(rows):
                continue
            r, t, c = scorer.score_costed([contexts[i] for i in rows], [responses[i] for i in rows])
            total[rows] += w[rows, j] * r.astype(np.float64)
            tokens[rows] += t
            calls[rows] += c
        return total.astype(np.float32), tokens, calls
