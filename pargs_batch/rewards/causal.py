"""The ``causal`` reward backend: score k candidates of a prefix without recomputing the prefix.

A causal reward model that shares the LLM's tokenizer (GPT-2, Llama, Qwen, Mistral with a
sequence-classification head) computes its reward at every position from that position's hidden
state, and a position only sees what precedes it. So the reward model's KV state of x + y can be
kept between steps, exactly as the LLM's is:

- ``start``: one forward over the micro-batch's prompts (left-padded), keeping the KV cache;
- ``score_candidates``: all k candidates of every sequence in *one* forward of B x k new tokens against the
  cache, each candidate at the sequence's next position and, through a 4-D attention mask,
  seeing the cached prefix and itself only - about k new tokens of work per sequence per step,
  whatever the prefix length;
- ``commit``: keep the chosen candidate's key/value column, drop the other k - 1;
- ``keep``: drop the rows of sequences that finished.

The hf backend re-tokenises the text of every whole candidate prefix instead: its cost per step
grows with the prefix. Both give the reward model's score of the same token sequence (the test
compares them to 1e-4 over a 64-step generation).
"""

from __future__ import annotations

import numpy as np

from pargs_batch.config import RewardConfig
from pargs_batch.configlib import ConfigError
from pargs_batch.rewards.kv_cache import BufferedLayer, left_padded, stack_sessions


class CausalSession:
    """One micro-batch's reward-model state: the KV cache, its padding mask and next positions."""

    def __init__(self, cache, mask, positions, last):
        self.cache, self.mask, self.positions = cache, mask, positions
        self.last = last  # (B,) reward of each sequence as it stands
        self.rewards = None  # (B, k) rewards of the candidates being considered
        self.pending = None  # cache length before the k candidates' columns (set by score_candidates)

    @property
    def rows(self) -> int:
        return int(self.mask.shape[0])


class CausalRewardScorer:
    """``reward.backend: causal``: an incremental scorer over token ids of the LLM's vocabulary."""

    incremental = True

    @staticmethod
    def step_tokens(k: int) -> int:
        """Tokens it reads in a step of ``k`` candidates: each candidate's one new token."""
        return k

    def __init__(self, config: RewardConfig, llm_vocab_size: int | None = None):
        import torch
        from transformers import (
            AutoConfig,
            AutoModelForSequenceClassification,
            AutoTokenizer,
        )
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        )

        from pargs_batch.rewards.hf import load_dtype, one_kernel_activations, resolve_device

        model_type = AutoConfig.from_pretrained(config.path).model_type
        if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
            raise ConfigError("reward.backend", config.backend,
                              f"needs a causal reward model; {config.path} is {model_type} (use backend: hf)")
        if config.template != "{prompt}{response}":
            raise ConfigError("reward.template", config.template,
                              "the causal backend scores the LLM's own token ids: use {prompt}{response}")
        self.config, self.device = config, resolve_device(config.device)
        model = AutoModelForSequenceClassification.from_pretrained(config.path, dtype=load_dtype(config, self.device))
        self.model = one_kernel_activations(model).to(self.device).eval()
        self.body = model.base_model  # the transformer without its head
        self.head = next(getattr(model, name) for name in ("score", "classifier") if hasattr(model, name))
        self.tokenizer = AutoTokenizer.from_pretrained(config.path)
        vocab = model.config.vocab_size
        if llm_vocab_size is not None and llm_vocab_size > vocab:
            raise ConfigError("reward.path", config.path, f"its vocabulary ({vocab}) is smaller than the LLM's "
                              f"({llm_vocab_size}); the causal backend needs the LLM's tokenizer")
        self.max_positions = getattr(model.config, "max_position_embeddings", None) or \
            getattr(model.config, "n_positions", None)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    # ------------------------------------------------------------ stateful scoring

    def start(self, prompt_ids: list[list[int]], response_lengths: list[int] | None = None) -> CausalSession:
        """Encode the prompts (left-padded) once - with tokens already generated, for a row that
        joins late (``response_lengths``: a head's reward at the last position needs no more); returns
        the session the steps continue. Rows are encoded ``reward.batch_tokens`` padded tokens at a
        time (the memory plan's chunk)."""
        from pargs_batch.rewards.hf import row_chunks

        session = None
        for part in row_chunks([len(p) for p in prompt_ids], self.config.batch_tokens):
            session = self.merge(session, self._start(prompt_ids[part]))
        return session

    def _start(self, prompt_ids: list[list[int]]) -> CausalSession:
        import torch

        ids, mask = left_padded(prompt_ids, self.pad_id)
        width = ids.shape[1]
        positions = mask.long().cumsum(1) - 1
        with torch.inference_mode():
            out = self.body(input_ids=ids.to(self.device), attention_mask=mask.long().to(self.device),
                            position_ids=positions.clamp(min=0).to(self.device), use_cache=True)
            # the reward sits at the last token that is not the pad token (as the steps keep it:
            # a sequence re-encoded after EOS tokens scores as the one that went through them)
            real = mask & (ids != self.pad_id)
            at = torch.where(real.any(1), width - 1 - real.flip(1).int().argmax(1), width - 1)
            hidden = out.last_hidden_state[torch.arange(len(prompt_ids)), at.to(self.device)]
            last = self.head(hidden)[:, 0].float().cpu().numpy()
        for layer in out.past_key_values.layers:
            layer.__class__ = BufferedLayer
            layer.adopt(spare=64)
        return CausalSession(out.past_key_values, mask.to(self.device),
                             torch.tensor([len(p) for p in prompt_ids], device=self.device), last)

    def score_candidates(self, session: CausalSession, candidates: np.ndarray) -> np.ndarray:
        """Rewards (B, k) of appending each candidate token to each sequence."""
        import torch

        b, k = candidates.shape
        cand = torch.as_tensor(np.where(candidates < 0, self.pad_id, candidates), device=self.device)
        past = session.mask.shape[1]
        mask = torch.zeros((b, 1, k, past + k), dtype=torch.bool, device=self.device)
        mask[:, 0, :, :past] = session.mask[:, None, :]
        mask[:, 0, :, past:] = torch.eye(k, dtype=torch.bool, device=self.device)
        positions = session.positions[:, None].expand(b, k)
        with torch.inference_mode():
            hidden = self.body(input_ids=cand, attention_mask=mask, position_ids=positions,
                               past_key_values=session.cache, use_cache=True).last_hidden_state
            rewards = self.head(hidden)[..., 0].float().cpu().numpy()
        # transformers' sequence-classification heads read the reward at the last token that is not
        # the pad token (often EOS): a pad candidate leaves the reward where it was, as the hf
        # backend (which scores text, without special tokens) also finds
        rewards = np.where((candidates == self.pad_id) | (candidates < 0), session.last[:, None], rewards)
        session.pending, session.rewards = past, rewards
        return rewards

    def commit(self, session: CausalSession, choice: np.ndarray) -> None:
        """Keep the chosen candidate's key/value column of every layer; the sequences advance one token."""
        import torch

        with torch.inference_mode():
            self._commit(session, choice)

    def _commit(self, session: CausalSession, choice: np.ndarray) -> None:
        import torch

        past = session.pending
        rows = torch.arange(session.rows, device=self.device)
        cols = past + torch.as_tensor(choice, device=self.device)
        for layer in session.cache.layers:
            layer.keep_chosen(rows, cols)
        session.mask = torch.cat([session.mask, torch.ones((session.rows, 1), dtype=torch.bool,
                                                            device=self.device)], dim=1)
        session.positions = session.positions + 1
        session.last = session.rewards[np.arange(session.rows), choice]
        session.pending = session.rewards = None

    def keep(self, session: CausalSession, rows: list[int]) -> None:
        """Keep ``rows`` in that order - dropping finished sequences, copying a row that repeats - and drop
        columns no row needs any more."""
        import torch

        if list(rows) == list(range(session.rows)):  # rows may repeat (smc's copies): only the identity is a no-op
            return
        with torch.inference_mode():
            self._keep(session, rows)

    def _keep(self, session: CausalSession, rows: list[int]) -> None:
        import torch

        idx = torch.as_tensor(rows, dtype=torch.long, device=self.device)
        mask = session.mask[idx]
        used = mask.any(0).nonzero()
        first = int(used[0]) if len(used) else mask.shape[1]
        for layer in session.cache.layers:
            layer.select(idx, first)
        session.mask = mask[:, first:]
        session.positions = session.positions[idx]
        session.last = session.last[np.asarray(rows, dtype=np.int64)]

    def merge(self, a: CausalSession | None, b: CausalSession) -> CausalSession:
        """One session holding a's rows then b's (caches left-padded to a common length)."""
        import torch

        if a is None or a.rows == 0:
            return b
        with torch.inference_mode():
            return self._merge(a, b)

    def _merge(self, a: CausalSession, b: CausalSession) -> CausalSession:
        import torch

        a.mask = stack_sessions(a.cache.layers, b.cache.layers, a.mask, b.mask)
        a.positions = torch.cat([a.positions, b.positions])
        a.last = np.concatenate([a.last, b.last])
        return a

    # ------------------------------------------------------------ stateless scoring (evaluation, best-of-n)

    def score_ids(self, sequences: list[list[int]]) -> np.ndarray:
        """The reward of whole token-id sequences, recomputed from scratch (for checks and Best-of-N)."""
        import torch

        from pargs_batch.rewards.hf import length_sorted_batches

        out = np.zeros(len(sequences), dtype=np.float32)
        with torch.inference_mode():
            for idx in length_sorted_batches([len(s) for s in sequences], self.config.batch_size, self.config.batch_tokens):
                width = max(len(sequences[i]) for i in idx)
                ids = torch.full((len(idx), width), self.pad_id, dtype=torch.long)
                for row, i in enumerate(idx):
                    ids[row, : len(sequences[i])] = torch.tensor(sequences[i])
                hidden = self.body(input_ids=ids.to(self.device)).last_hidden_state
                # the last token that is not the pad token, as the steps and transformers' heads read it
                last = torch.tensor([max([j for j, t in enumerate(sequences[i]) if t != self.pad_id], default=0)
                                     for i in idx], device=self.device)
                out[idx] = self.head(hidden[torch.arange(len(idx)), last])[:, 0].float().cpu().numpy()
        return out

    def score(self, contexts: list, responses: list[str]) -> np.ndarray:
        """Whole (context, response) texts, tokenised with the shared tokenizer (as ``HFRewardScorer.score``).
        A conversation is rendered as the LLM saw it (its chat template, generation prompt added), so
        whole responses are read as the steps read their prefixes."""
        return self.score_costed(contexts, responses)[0]

    def score_costed(self, contexts: list, responses: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``score``, the tokens read for each input and the model calls it took (one)."""
        tok, out = self.tokenizer, [None] * len(contexts)
        plain = [i for i, c in enumerate(contexts) if not isinstance(c, list)]
        chat = [i for i, c in enumerate(contexts) if isinstance(c, list)]
        if plain:
            texts = [self.config.template.format(prompt=contexts[i], response=responses[i]) for i in plain]
            for i, ids in zip(plain, tok(texts)["input_ids"]):
                out[i] = ids
        if chat:
            texts = [tok.apply_chat_template(contexts[i], tokenize=False, add_generation_prompt=True) + responses[i]
                     for i in chat]
            for i, ids in zip(chat, tok(texts, add_special_tokens=False)["input_ids"]):
                out[i] = ids
        return (self.score_ids(out), np.array([len(ids) for ids in out], dtype=np.int64),
                np.ones(len(out), dtype=np.int64))
