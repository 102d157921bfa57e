"""The guidance on vLLM's V1 logits-processor interface (the CPU runner, and CUDA with
``VLLM_USE_V2_MODEL_RUNNER=0``): rows follow ``BatchUpdate``s, each added row with vLLM's live list
of its output tokens (a request added back after preemption brings the output it kept, and
``Guide.resume`` checks it against the row's)."""

from __future__ import annotations

from vllm.v1.sample.logits_processor import MoveDirectionality

from pargs_batch.guidance import GuideArgs
from pargs_batch.in_engine.guide import Guide
from pargs_batch.in_engine.state import Row


class PargsLogitsProcessorV1:
    """The guidance on the V1 interface: ``__init__(vllm_config, device, is_pin_memory)``,
    ``update_state(batch_update)``, ``apply(logits)``."""

    def __init__(self, vllm_config, device, is_pin_memory: bool):
        self.guide = Guide(vllm_config)
        self.records = self.guide.records
        self.rows: dict[int, Row] = {}  # vLLM's batch index -> row

    def update_state(self, batch_update) -> None:
        """Follow vLLM's batch: rows join, leave and move. Tokens are committed in ``apply``, where
        vLLM's output lists hold real ids (under async scheduling their newest entry is a -1
        placeholder here)."""
        if batch_update is None:
            return
        for index in batch_update.removed:
            self.guide.leave(self.rows.pop(index, None))
        for index, params, prompt_ids, out_ids in batch_update.added:
            self.guide.leave(self.rows.pop(index, None))
            args = GuideArgs.from_params(params)
            if args is not None:
                self.rows[index] = self.guide.row_for(args, prompt_ids or [], out_ids)
        for a, b, direction in batch_update.moved:
            row_a, row_b = self.rows.pop(a, None), self.rows.pop(b, None)
            if row_a is not None:
                self.rows[b] = row_a
            if direction == MoveDirectionality.SWAP:
                if row_b is not None:
                    self.rows[a] = row_b
            else:  # a one-way move replaces whatever request was at b
                self.guide.leave(row_b)

    def apply(self, logits):
        self.guide.commit(self.rows.values())
        index = sorted(i for i in self.rows if i < logits.shape[0])
        return self.guide.guide(logits, index, [self.rows[i] for i in index])
