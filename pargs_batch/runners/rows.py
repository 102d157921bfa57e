"""Making rows: what every runner and the driver share below them.

``RowMaker`` fills the columns a run's rows share (method, beta, k, models, ...), so a runner
names only what differs per row. ``tokenize_prompts`` turns a micro-batch into token ids and says
which prompts cannot be generated; ``whole_request_jobs`` does the same for runners that hand
whole responses to vLLM (best-of-n, fused), ``start_sequences`` for those that grow responses a
token at a time (stepped, smc), which end where ``finish_reason`` says.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pargs_batch import decoding
from pargs_batch.io.batch import Cost, PromptRow, ResponseRow
from pargs_batch.models.detok import DetokState
from pargs_batch.config import DecodeConfig, GenerateConfig
from pargs_batch.configlib import ConfigError


NONFINITE = "non-finite reward"  # how such error messages start (the summary counts them)


class RowMaker:
    """The output rows of one run."""

    def __init__(self, decode: DecodeConfig, llm: str, reward_model: str | None):
        self.decode, self.llm, self.reward_model = decode, llm, reward_model

    def row(self, id: str, sample_index: int, prompt, response: str, token_ids: list[int], finish_reason: str,
            rewards: list[float] | None, error: str | None = None) -> ResponseRow:
        """One output row; a prompt that is not a string is stored as null."""
        d = self.decode
        return ResponseRow(
            id=id, sample_index=sample_index, prompt=prompt if isinstance(prompt, str) else None,
            response=response, response_token_ids=token_ids, finish_reason=finish_reason,
            method=d.method, beta=d.beta, k=d.top_k, temperature=d.temperature, seed=d.seed,
            rewards=rewards, llm=self.llm, reward_model=self.reward_model, error=error)

    def error(self, prompt: PromptRow, sample_index: int, error: str) -> ResponseRow:
        """The row of a (prompt, sample) that could not be generated."""
        return self.row(prompt.id, sample_index, prompt.prompt, "", [], "error", None, error)

    def nonfinite_error(self, candidates: int, where: str) -> str:
        """Why a row ended when none of its candidates got a finite reward (``decoding.unscorable``)."""
        return (f"{NONFINITE}: reward model {self.reward_model} gave no finite reward to any of the "
                f"{candidates} candidates {where}")

    def errors(self, prompts: list[PromptRow], error: str) -> list[ResponseRow]:
        """Rows for prompts that could not be generated at all (every sample)."""
        return [self.error(p, s, error) for p in prompts for s in range(self.decode.num_samples)]


@dataclass
class Sequence:
    """One (prompt, sample) being grown a token at a time: its prompt, its response so far, its cost."""

    id: str
    sample_index: int
    prompt: str
    context: Any                  # what the reward model is told the prompt was (PromptRow.context)
    prompt_ids: list[int]
    id_hash: np.uint64
    detok: DetokState
    weights: list[float] | None = None  # its reward models' own weights
    position: int = 0             # its prompt's place in the micro-batch (ids may repeat)
    token_ids: list[int] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    cost: Cost = field(default_factory=Cost)


def start_sequences(prompts: list[PromptRow], tokenizer, max_model_len: int, rows: RowMaker, detok
                    ) -> tuple[list[Sequence], list[tuple[tuple[int, int], ResponseRow]]]:
    """Tokenise the prompts into one ``Sequence`` per (prompt, sample) (``detok``: an
    ``IncrementalDetokenizer``); rows that cannot be generated become error rows at once, each keyed
    by (position, sample) as finished rows are."""
    seqs, errors = [], []
    usable = tokenize_prompts(prompts, tokenizer, max_model_len)
    hashes = decoding.id_hashes([p.id for p, _, _ in usable])
    for position, ((p, prompt_ids, error), id_hash) in enumerate(zip(usable, hashes)):
        for s in range(rows.decode.num_samples):
            if error is not None:
                errors.append(((position, s), rows.error(p, s, error)))
            else:
                seqs.append(Sequence(p.id, s, p.prompt, p.context, prompt_ids, id_hash, detok.start(prompt_ids),
                                     p.weights, position))
    return seqs, errors


def finish_reason(seq, token: int, old_len: int, decode: DecodeConfig, eos_ids, max_model_len: int) -> str | None:
    """Why a sequence (anything with ``prompt_ids``, ``token_ids`` and a ``detok`` state) that has just
    taken ``token`` ends - ``eos``, ``stop`` (its text cut at the stop string) or ``length`` - or None.
    ``old_len``: its text's length before the token."""
    if token in eos_ids and not decode.ignore_eos:
        return "eos"
    if decode.stop:
        cut = first_stop(seq.detok.text, old_len, decode.stop)
        if cut >= 0:
            seq.detok.text = seq.detok.text[:cut]
            return "stop"
    if len(seq.token_ids) >= decode.max_new_tokens:
        return "length"
    if len(seq.prompt_ids) + len(seq.token_ids) >= max_model_len:
        return "length"
    return None


def first_stop(text: str, start: int, stops: list[str]) -> int:
    """Earliest index in ``text`` where a stop string begins, among those that end after ``start``
    (the text before it was searched already); -1 if none."""
    hits = [i for i in (text.find(s, max(0, start - len(s) + 1)) for s in stops) if i >= 0]
    return min(hits) if hits else -1


def engine_text(prompt: PromptRow, tokenizer) -> str:
    """What the LLM sees: the prompt, or its conversation rendered by the tokenizer's chat template
    with the generation prompt (the template writes its own special tokens)."""
    if prompt.messages is None:
        return prompt.prompt
    return tokenizer.apply_chat_template(prompt.messages, tokenize=False, add_generation_prompt=True)


def tokenize_prompts(prompts: list[PromptRow], tokenizer, max_model_len: int
                     ) -> list[tuple[PromptRow, list[int] | None, str | None]]:
    """(row, prompt token ids, why it cannot be generated) for each prompt, in order."""
    good = [i for i, p in enumerate(prompts) if p.error is None]
    encoded = {}
    plain = [i for i in good if prompts[i].messages is None]
    chat = [i for i in good if prompts[i].messages is not None]
    if plain:
        encoded.update(zip(plain, tokenizer([prompts[i].prompt for i in plain])["input_ids"]))
    if chat:
        texts = [engine_text(prompts[i], tokenizer) for i in chat]
        encoded.update(zip(chat, tokenizer(texts, add_special_tokens=False)["input_ids"]))
    out = []
    for i, p in enumerate(prompts):
        ids, error = encoded.get(i), p.error
        if error is None and len(ids) >= max_model_len:
            error = f"prompt has {len(ids)} tokens; the LLM's context is {max_model_len} tokens"
        out.append((p, ids if error is None else None, error))
    return out


def whole_request_jobs(prompts: list[PromptRow], tokenizer, max_model_len: int, rows: RowMaker
                       ) -> tuple[list[tuple[int, PromptRow, list[int], int]], dict[tuple[int, int], ResponseRow]]:
    """One job (position in the micro-batch, prompt row, prompt ids, sample index) per generatable
    (prompt, sample), and the error rows of the others keyed by (position, sample). Keys are
    positions, not ids: a repeated id (an error row from the reader) never overwrites its first."""
    usable = tokenize_prompts(prompts, tokenizer, max_model_len)
    samples = range(rows.decode.num_samples)
    jobs = [(i, p, ids, s) for i, (p, ids, error) in enumerate(usable) if error is None for s in samples]
    errors = {(i, s): rows.error(p, s, error) for i, (p, _, error) in enumerate(usable) if error is not None
              for s in samples}
    return jobs, errors


def in_input_order(prompts: list[PromptRow], num_samples: int, rows: dict[tuple[int, int], ResponseRow]
                   ) -> list[ResponseRow]:
    """Rows keyed by (position, sample) as one list in the micro-batch's order."""
    return [rows[(i, s)] for i in range(len(prompts)) for s in range(num_samples)]


def check_chat_template(config: GenerateConfig) -> None:
    """A chat-rendered run needs an LLM tokenizer with a chat template: checked before any model loads."""
    if not config.data.chat:
        return
    from transformers import AutoTokenizer

    path = config.model.tokenizer or config.model.path
    if not getattr(AutoTokenizer.from_pretrained(path), "chat_template", None):
        key = "data.messages_column" if config.data.messages_column else "data.chat_template"
        value = config.data.messages_column or True
        raise ConfigError(key, value, f"the LLM tokenizer ({path}) has no chat template")
