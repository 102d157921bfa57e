"""The ``autoregressive`` reward backend: a causal LM π_r whose reward of a response is the sum of
its token log-probabilities, r(x, y) = Σ_t log π_r(y_t | x, y<t) (the idea of GenARM, Xu et al.,
ICLR 2025; trained by `rm_training` mode ``autoregressive``).

One forward of π_r at a prefix gives log π_r(v | x, y) for *every* next token v, so the reward of
every candidate prefix y·v is r(x, y) + log π_r(v | x, y): scoring k candidates - or the whole
vocabulary - costs no forward at all, and the step's one forward is the chosen token's, one token
per sequence whatever k is. A prefix's reward is well defined by construction: the partial-sequence
property PARGS asks of its reward model.

It shares the LLM's tokenizer (it reads the LLM's own token ids) and keeps its KV state between
steps as the ``causal`` backend does, with the same session interface (``start``,
``score_candidates``, ``commit``, ``keep``, ``merge``), so the stepped loop and the fused processor
drive both alike. A commit only records the chosen tokens; their forward runs when the session is
next read, after the finished rows have left it.
"""

from __future__ import annotations

import numpy as np

from pargs_batch.config import RewardConfig
from pargs_batch.configlib import ConfigError
from pargs_batch.rewards.kv_cache import BufferedLayer, left_padded, stack_sessions
from pargs_batch.plan.shapes import LOGIT_POSITIONS

MARKER = "pargs_batch_reward"  # the checkpoint config's record of what kind of reward model it is


class ARSession:
    """One micro-batch's π_r state: its KV cache, padding mask and next positions, each sequence's
    reward so far, the log-probabilities of its next token, and tokens chosen but not yet read."""

    def __init__(self, cache, mask, positions, last, logp):
        self.cache, self.mask, self.positions = cache, mask, positions
        self.last = last          # (B,) numpy: r(x, y) of each sequence as it stands
        self.logp = logp          # (B, V) torch: log π_r(v | x, y)
        self.rewards = self.candidates = None  # of the step being considered
        self.pending = None       # set while a step's candidates wait for their commit (as CausalSession's)
        self.todo = None          # (B,) chosen tokens whose forward has not run yet

    @property
    def rows(self) -> int:
        return int(self.mask.shape[0])


def is_autoregressive(path: str) -> bool:
    """Whether ``path`` is a checkpoint `rm_training` trained in autoregressive mode."""
    from transformers import AutoConfig

    return (getattr(AutoConfig.from_pretrained(path), MARKER, None) or {}).get("kind") == "autoregressive"


class AutoregressiveRewardScorer:
    """``reward.backend: autoregressive``: rewards as summed token log-probabilities of a causal LM
    over the LLM's vocabulary, KV state kept."""

    incremental = True
    whole_vocabulary = True  # it gives the reward of every next token at once

    @staticmethod
    def step_tokens(k: int) -> int:
        """Tokens it reads in a step, whatever ``k``: the chosen token (one forward gives every
        candidate's reward)."""
        return 1

    def __init__(self, config: RewardConfig, llm_vocab_size: int | None = None):
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        from pargs_batch.rewards.hf import load_dtype, one_kernel_activations, resolve_device

        model_type = AutoConfig.from_pretrained(config.path).model_type
        if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
            raise ConfigError("reward.backend", config.backend,
                              f"needs a causal language model; {config.path} is {model_type}")
        self.config, self.device = config, resolve_device(config.device)
        model = AutoModelForCausalLM.from_pretrained(config.path, dtype=load_dtype(config, self.device))
        self.model = one_kernel_activations(model).to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(config.path)
        self.vocab = model.config.vocab_size
        if llm_vocab_size is not None and llm_vocab_size > self.vocab:
            raise ConfigError("reward.path", config.path, f"its vocabulary ({self.vocab}) is smaller than the LLM's "
                              f"({llm_vocab_size}); the autoregressive backend needs the LLM's tokenizer")
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    # ------------------------------------------------------------ stateful scoring

    def _forward(self, ids, mask, positions, cache=None, keep: int = 1):
        """Log-probabilities of the next token at each row's last ``keep`` positions, and the KV cache."""
        import torch

        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                         use_cache=True, logits_to_keep=keep)
        return torch.log_softmax(out.logits.float(), dim=-1), out.past_key_values

    def _response_logprob(self, hidden, row: int, first: int, targets) -> float:
        """Σ log π_r of ``targets`` read at positions ``first``, ``first + 1``, ... of ``hidden[row]``:
        the vocabulary's log-softmax is taken ``LOGIT_POSITIONS`` positions at a time, so a long
        response never holds its whole (positions x vocabulary) logits."""
        import torch

        total = 0.0
        for s in range(0, len(targets), LOGIT_POSITIONS):
            part = torch.as_tensor(targets[s:s + LOGIT_POSITIONS], device=hidden.device)
            logp = self._logp(hidden[row, first + s:first + s + len(part)])
            total += float(logp[torch.arange(len(part), device=hidden.device), part].sum())
        return total

    def _body(self, ids, mask, positions):
        """Last hidden states and the KV cache of one encoding (the LM head is applied where needed)."""
        out = self.model.base_model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        return out.last_hidden_state, out.past_key_values

    def _logp(self, hidden):
        """log π_r over the vocabulary at these hidden states (float32)."""
        import torch

        return torch.log_softmax(self.model.get_output_embeddings()(hidden).float(), dim=-1)

    def start(self, sequences: list[list[int]], response_lengths: list[int] | None = None) -> ARSession:
        """Encode each sequence (left-padded) once: a prompt, or - for a row that joins with tokens
        already generated (the fused processor's late or resumed rows) - the prompt and its last
        ``response_lengths[b]`` tokens of response, whose log-probabilities start its reward. Rows are
        encoded ``reward.batch_tokens`` padded tokens at a time (the memory plan's chunk)."""
        from pargs_batch.rewards.hf import row_chunks

        done = [0] * len(sequences) if response_lengths is None else [int(n) for n in response_lengths]
        session = None
        for part in row_chunks([len(s) for s in sequences], self.config.batch_tokens):
            session = self.merge(session, self._start(sequences[part], done[part]))
        return session

    def _start(self, sequences: list[list[int]], done: list[int]) -> ARSession:
        import torch

        ids, mask = left_padded(sequences, self.pad_id)
        width = ids.shape[1]
        positions = (mask.long().cumsum(1) - 1).clamp(min=0)
        last = np.zeros(len(sequences), dtype=np.float32)
        with torch.inference_mode():
            hidden, cache = self._body(ids.to(self.device), mask.long().to(self.device), positions.to(self.device))
            for b, n in enumerate(done):  # its response's tokens, each read at the position before it
                if n:
                    last[b] = self._response_logprob(hidden, b, width - 1 - n, ids[b, width - n:].tolist())
            logp = self._logp(hidden[:, -1])
        for layer in cache.layers:
            layer.__class__ = BufferedLayer
            layer.adopt(spare=64)
        return ARSession(cache, mask.to(self.device), torch.tensor([len(p) for p in sequences], device=self.device),
                         last, logp)

    def _flush(self, session: ARSession) -> None:
        """Run the forward of the tokens chosen at the last commit: one token per sequence."""
        import torch

        if session.todo is None:
            return
        ids = torch.as_tensor(session.todo, device=self.device)[:, None]
        session.mask = torch.cat([session.mask, torch.ones((session.rows, 1), dtype=torch.bool, device=self.device)], 1)
        with torch.inference_mode():
            logp, _ = self._forward(ids, session.mask.long(), session.positions[:, None], session.cache)
        session.logp = logp[:, -1]
        for layer in session.cache.layers:
            layer.length += 1
            layer._view()
        session.positions = session.positions + 1
        session.todo = None

    def next_logprobs(self, session: ARSession):
        """(B, V) log π_r of every next token of each sequence (a torch tensor on the scorer's device)."""
        self._flush(session)
        return session.logp

    def score_candidates(self, session: ARSession, candidates: np.ndarray) -> np.ndarray:
        """Rewards (B, k) of appending each candidate token: r(x, y) + log π_r(v | x, y). A slot
        without a candidate (id < 0) keeps the sequence's reward."""
        import torch

        logp = self.next_logprobs(session)
        safe = np.where((candidates < 0) | (candidates >= self.vocab), 0, candidates)
        step = torch.gather(logp, 1, torch.as_tensor(safe, device=logp.device)).cpu().numpy()
        rewards = np.where((candidates < 0) | (candidates >= self.vocab), session.last[:, None],
                           session.last[:, None] + step).astype(np.float32)
        session.rewards, session.candidates, session.pending = rewards, candidates, True
        return rewards

    def commit(self, session: ARSession, choice: np.ndarray) -> None:
        """Each sequence takes its chosen candidate; the forward runs when the session is next read."""
        rows = np.arange(session.rows)
        session.last = session.rewards[rows, choice].astype(np.float32)
        token = session.candidates[rows, choice]
        session.todo = np.where(token < 0, self.pad_id, token).astype(np.int64)
        session.rewards = session.candidates = session.pending = None

    def commit_tokens(self, session: ARSession, tokens: np.ndarray, rewards: np.ndarray) -> None:
        """As ``commit``, for tokens chosen over the whole vocabulary (with their rewards)."""
        session.last = np.asarray(rewards, dtype=np.float32)
        session.todo = np.asarray(tokens, dtype=np.int64)
        session.rewards = session.candidates = session.pending = None

    def keep(self, session: ARSession, rows: list[int]) -> None:
        """Keep ``rows`` in that order - dropping finished sequences, copying a row that repeats - and drop
        columns no row needs any more."""
        import torch

        if list(rows) == list(range(session.rows)):  # rows may repeat (smc's copies): only the identity is a no-op
            return
        idx = torch.as_tensor(rows, dtype=torch.long, device=self.device)
        mask = session.mask[idx]
        used = mask.any(0).nonzero()
        first = int(used[0]) if len(used) else mask.shape[1]
        with torch.inference_mode():
            for layer in session.cache.layers:
                layer.select(idx, first)
        at = np.asarray(rows, dtype=np.int64)
        session.mask, session.positions = mask[:, first:], session.positions[idx]
        session.last, session.logp = session.last[at], session.logp[idx]
        if session.todo is not None:
            session.todo = session.todo[at]

    def merge(self, a: ARSession | None, b: ARSession) -> ARSession:
        """One session holding a's rows then b's (caches left-padded to a common length)."""
        import torch

        if a is None or a.rows == 0:
            return b
        self._flush(a)
        with torch.inference_mode():
            a.mask = stack_sessions(a.cache.layers, b.cache.layers, a.mask, b.mask)
        a.positions = torch.cat([a.positions, b.positions])
        a.last, a.logp = np.concatenate([a.last, b.last]), torch.cat([a.logp, b.logp])
        return a

    # ------------------------------------------------------------ stateless scoring (evaluation, best-of-n)

    def sequence_rewards(self, prompts: list[list[int]], responses: list[list[int]]) -> np.ndarray:
        """Σ_t log π_r(y_t | x, y<t) of each response after its prompt, recomputed from scratch."""
        import torch

        from pargs_batch.rewards.hf import length_sorted_batches

        out = np.zeros(len(prompts), dtype=np.float32)
        with torch.inference_mode():
            for idx in length_sorted_batches([len(prompts[i]) + len(responses[i]) for i in range(len(prompts))],
                                             self.config.batch_size, self.config.batch_tokens):
                width = max(len(prompts[i]) + len(responses[i]) for i in idx)
                ids = torch.full((len(idx), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                for row, i in enumerate(idx):
                    seq = prompts[i] + responses[i]
                    ids[row, : len(seq)], mask[row, : len(seq)] = torch.tensor(seq), 1
                hidden = self.model.base_model(input_ids=ids.to(self.device),
                                               attention_mask=mask.to(self.device)).last_hidden_state
                for row, i in enumerate(idx):
                    if responses[i]:
                        out[i] = self._response_logprob(hidden, row, len(prompts[i]) - 1, responses[i])
        return out

    def score(self, contexts: list, responses: list[str]) -> np.ndarray:
        return self.score_costed(contexts, responses)[0]

    def score_costed(self, contexts: list, responses: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Whole (context, response) texts: the prompt as the LLM reads it (its chat template for a
        conversation), the response tokenised on its own, as `rm_training` does."""
        tok = self.tokenizer
        prompts = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) if isinstance(c, list)
                   else self.config.template.format(prompt=c, response="") for c in contexts]
        prompt_ids = [tok(p, add_special_tokens=not isinstance(c, list))["input_ids"] for p, c in zip(prompts, contexts)]
        response_ids = [tok(r, add_special_tokens=False)["input_ids"] for r in responses]
        return (self.sequence_rewards(prompt_ids, response_ids),
                np.array([len(p) + len(r) for p, r in zip(prompt_ids, response_ids)], dtype=np.int64),
                np.ones(len(contexts), dtype=np.int64))
