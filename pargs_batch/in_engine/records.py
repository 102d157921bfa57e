"""The driver's way to what the processor in vLLM's worker recorded: a worker extension."""

from __future__ import annotations

from pargs_batch.in_engine.guide import Guide


class RecordsExtension:
    """Mixed into vLLM's worker class (``worker_extension_cls``): the driver's way to the records of
    the processor in this worker, through ``LLM.collective_rpc``."""

    def _guides(self) -> list[Guide]:
        runner = self.model_runner
        if hasattr(runner, "input_batch"):  # V1
            processors = list(runner.input_batch.logitsprocs.all)
        else:  # V2: the sampler holds them, beside vLLM's built-in ones
            processors = list(getattr(getattr(runner, "sampler", None), "logits_processors", None) or [])
        return [p.guide for p in processors if isinstance(getattr(p, "guide", None), Guide)]

    def pargs_batch_guide_info(self) -> dict | None:
        """The guidance's own start-up facts in this worker (``Guide.info``), None without it."""
        guides = self._guides()
        return guides[0].info() if guides else None

    def pargs_batch_records(self, keys: list[str]) -> dict[str, dict]:
        """Pop the records of ``keys`` from this worker's processor: the reward of each chosen token,
        the last step's [candidate token, reward] pairs, and the row's guidance seconds."""
        found = {}
        for guide in self._guides():
            for key in keys:
                row = guide.records.pop(key, None)
                if row is not None:
                    last = [] if row.pending is None else \
                        [[int(t), float(r)] for t, r in zip(row.pending[0], row.pending[1])]
                    found[key] = {"rewards": [None if r is None else float(r) for r in row.rewards],
                                  "last_token_rewards": last, "timings": dict(row.timings),
                                  "failed_at": row.failed_at, "reward_tokens": row.reward_tokens,
                                  "reward_calls": row.reward_calls}
        return found
