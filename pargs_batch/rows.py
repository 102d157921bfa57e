"""Making rows: what every runner and the driver share below them.

``RowMaker`` fills the columns a run's rows share (method, beta, k, models, ...), so a runner
names only what differs per row. ``tokenize_prompts`` turns a micro-batch into token ids and says
which prompts cannot be generated; ``whole_request_jobs`` does the same for runners that hand
whole responses to vLLM (best-of-n, fused).
"""

from __future__ import annotations

from pargs_batch.batch import PromptRow, ResponseRow
from pargs_batch.config import DecodeConfig


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

    def errors(self, prompts: list[PromptRow], error: str) -> list[ResponseRow]:
        """Rows for prompts that could not be generated at all (every sample)."""
        return [self.error(p, s, error) for p in prompts for s in range(self.decode.num_samples)]


def tokenize_prompts(prompts: list[PromptRow], tokenizer, max_model_len: int
                     ) -> list[tuple[PromptRow, list[int] | None, str | None]]:
    """(row, prompt token ids, why it cannot be generated) for each prompt, in order."""
    good = [i for i, p in enumerate(prompts) if p.error is None]
    encoded = dict(zip(good, tokenizer([prompts[i].prompt for i in good])["input_ids"] if good else []))
    out = []
    for i, p in enumerate(prompts):
        ids, error = encoded.get(i), p.error
        if error is None and len(ids) >= max_model_len:
            error = f"prompt has {len(ids)} tokens; the LLM's context is {max_model_len} tokens"
        out.append((p, ids if error is None else None, error))
    return out


def whole_request_jobs(prompts: list[PromptRow], tokenizer, max_model_len: int, rows: RowMaker
                       ) -> tuple[list[tuple[PromptRow, list[int], int]], dict[tuple[str, int], ResponseRow]]:
    """One job (prompt row, prompt ids, sample index) per generatable (prompt, sample), and the
    error rows of the others keyed by (id, sample)."""
    usable = tokenize_prompts(prompts, tokenizer, max_model_len)
    samples = range(rows.decode.num_samples)
    jobs = [(p, ids, s) for p, ids, error in usable if error is None for s in samples]
    errors = {(p.id, s): rows.error(p, s, error) for p, _, error in usable if error is not None for s in samples}
    return jobs, errors


def in_input_order(prompts: list[PromptRow], num_samples: int, rows: dict[tuple[str, int], ResponseRow]
                   ) -> list[ResponseRow]:
    """Rows keyed by (id, sample) as one list in the micro-batch's order."""
    return [rows[(p.id, s)] for p in prompts for s in range(num_samples)]
