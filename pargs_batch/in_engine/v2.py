"""The guidance on vLLM's Model Runner V2 interface (the default on CUDA in vLLM 0.32).

V2 hands a processor requests by *slot* through ``add_request`` (the only time their
``SamplingParams`` are seen); nothing says when one finishes or is preempted, and
``apply(logits, ctx)`` maps each logits row to a slot through ``ctx.idx_mapping_np``. A slot's
committed tokens - prompt, then every output so far, the last step's sampled token included - are in
``req_states.all_token_ids`` on the device. Each step reads only what a row has not seen: its new
tokens (one, normally), gathered for the whole batch in one indexing call; a request that has just
been added (new, or preempted and added back, maybe in another slot) is read whole once, so it
continues its row - found by its key - and a resume with fewer tokens than the row committed cuts
the row back (``Guide.resume``). Rows still in chunked prefill (their token is discarded) are left
alone. The rule, the scorer and the records are ``guide.Guide``'s, shared with ``v1``.

This module imports no vLLM: ``processor.PargsLogitsProcessor`` is what vLLM loads, and
``jobs/gpu_check.py`` drives this class directly on a GPU where vLLM cannot be installed.
"""

from __future__ import annotations

import numpy as np

from pargs_batch.guidance import GuideArgs
from pargs_batch.in_engine.guide import Guide
from pargs_batch.in_engine.state import Row


class PargsLogitsProcessorV2:
    """The guidance on the V2 interface: ``__init__(vllm_config, req_states)``, ``add_request``,
    ``apply(logits, ctx)``."""

    def __init__(self, vllm_config, req_states):
        self.guide = Guide(vllm_config)
        self.records = self.guide.records
        self.req_states = req_states
        self.slots: dict[int, Row] = {}
        self.fresh: set[int] = set()  # slots added since the last step: read whole once

    def add_request(self, req_idx: int, sampling_params) -> bool:
        args = GuideArgs.from_params(sampling_params)
        if args is None:
            self.slots.pop(req_idx, None)  # a recycled slot: not ours any more
            self.fresh.discard(req_idx)
            return False
        self.slots[req_idx] = self.guide.row_for(args, None, None)
        self.fresh.add(req_idx)
        return True

    def apply(self, logits, ctx):
        slots = np.asarray(ctx.idx_mapping_np)
        if logits.shape[0] != len(slots):  # refused at engine build (Guide); a guard all the same
            raise RuntimeError("engine.mode=fused does not support speculative decoding (several logits rows "
                               "per request)")
        state = self.req_states
        index, rows, spans = [], [], []
        for i, slot in enumerate(slots):
            slot = int(slot)
            row = self.slots.get(slot)
            length = int(ctx.seq_lens_upper_bound_np[i])
            if row is None or length < int(state.prefill_len.np[slot]):
                continue  # not ours, or still in chunked prefill
            index.append(i)
            rows.append(row)
            spans.append((slot, int(state.prompt_len.np[slot]), length))
        if not rows:
            return logits
        self._read(rows, spans)
        live = {id(r) for r in rows}
        # rows that left the batch silently (finished, aborted, preempted, or still prefilling)
        for row in [*self.slots.values(), *self.guide.order]:
            if id(row) not in live and row.alive:
                self.guide.leave(row)
        self.guide.commit(rows)
        return self.guide.guide(logits, index, rows)

    def _read(self, rows: list[Row], spans: list[tuple[int, int, int]]) -> None:
        """Bring each row's token lists up to the slot's committed length with one device gather:
        the positions it has not seen, or - for a slot added since the last step - all of them."""
        import torch

        whole = [slot in self.fresh for slot, _, _ in spans]
        starts = [0 if w else p + len(row.out_ids) for row, (_, p, _), w in zip(rows, spans, whole)]
        counts = [max(n - s, 0) for s, (_, _, n) in zip(starts, spans)]
        total = sum(counts)
        ids = np.zeros(0, dtype=np.int64)
        if total:
            slot_of = np.repeat([slot for slot, _, _ in spans], counts)
            position = np.concatenate([np.arange(s, s + c) for s, c in zip(starts, counts)])
            device = self.req_states.all_token_ids.gpu.device
            ids = self.req_states.all_token_ids.gpu[torch.as_tensor(slot_of, device=device),
                                                    torch.as_tensor(position, device=device)].cpu().numpy()
        at = 0
        for row, (slot, prompt_len, _), w, c in zip(rows, spans, whole, counts):
            got = ids[at:at + c].tolist()
            at += c
            row.alive = True
            if not w:
                row.out_ids.extend(got)
                continue
            if row.prompt_ids != got[:prompt_len]:
                self.guide.set_prompt(row, got[:prompt_len])
            self.guide.resume(row, got[prompt_len:])
        self.fresh.difference_update(slot for slot, _, _ in spans)
