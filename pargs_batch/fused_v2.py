"""Fused mode on vLLM's Model Runner V2 (the default on CUDA in vLLM 0.32).

V2 takes only subclasses of its own ``LogitsProcessor``: requests arrive by *slot* through
``add_request`` (the only time their ``SamplingParams`` are seen), nothing says when one finishes or
is preempted, and ``apply(logits, ctx)`` maps each logits row to a slot through
``ctx.idx_mapping_np``. Each slot's committed tokens - prompt, then every output so far, the last
step's sampled token included - are read from ``req_states.all_token_ids`` in one gather per step,
so there is no mirror to keep in step: a request preempted and added back (maybe in another slot)
continues its row, found by its key, and the causal backend re-encodes a row whose history is not
the one its session holds. The rule, the scorer and the records are ``fused.Guide``'s, shared with
the V1 processor. Rows still in chunked prefill (their token is discarded) are left alone.
"""

from __future__ import annotations

import numpy as np
from vllm.v1.worker.gpu.sample.logits_processor import LogitsProcessor

from pargs_batch.fused import EXTRA_KEY, Guide, _Row

# what vLLM 0.32's V2 loader says of a processor written for the V1 interface
V2_REFUSAL = "is not a subclass of vllm.v1.worker.gpu.sample.logits_processor.LogitsProcessor"


class PargsLogitsProcessorV2(LogitsProcessor):
    """The guidance on the V2 interface."""

    def __init__(self, vllm_config, req_states):
        self.guide = Guide(vllm_config)
        self.records = self.guide.records
        self.req_states = req_states
        self.slots: dict[int, _Row] = {}

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        Guide.check(sampling_params)

    def add_request(self, req_idx: int, sampling_params) -> bool:
        args = (sampling_params.extra_args or {}).get(EXTRA_KEY)
        if args is None:
            self.slots.pop(req_idx, None)  # a recycled slot: not ours any more
            return False
        self.slots[req_idx] = self.guide.row_for(args, None, [])
        return True

    def apply(self, logits, ctx):
        import torch

        slots = np.asarray(ctx.idx_mapping_np)
        if logits.shape[0] != len(slots):
            raise RuntimeError("engine.mode=fused does not support speculative decoding (several logits rows "
                               "per request)")
        state = self.req_states
        index, rows, where = [], [], []
        for i, slot in enumerate(slots):
            row = self.slots.get(int(slot))
            length = int(ctx.seq_lens_upper_bound_np[i])
            if row is None or length < int(state.prefill_len.np[slot]):
                continue  # not ours, or still in chunked prefill
            index.append(i)
            rows.append(row)
            where.append((int(slot), length))
        if not rows:
            return logits
        width = max(n for _, n in where)
        at = torch.tensor([s for s, _ in where], device=state.all_token_ids.gpu.device)
        committed = state.all_token_ids.gpu[at, :width].cpu().numpy()  # one copy for the whole step
        for row, (slot, length), ids in zip(rows, where, committed):
            prompt_len = int(state.prompt_len.np[slot])
            history = ids[:prompt_len].tolist()
            if row.prompt_ids != history:
                self.guide.set_prompt(row, history)
            row.out_ids, row.alive = ids[prompt_len:length].tolist(), True
        for row in self.guide.order:  # rows that left the batch silently (finished, preempted)
            if all(row is not r for r in rows):
                row.alive = False
        self.guide.commit(rows)
        return self.guide.guide(logits, index, rows)
