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
        """The guidance's own start-up facts in this worker (``Guide.info``, a ``GuideInfo`` on the
        wire), None without it."""
        guides = self._guides()
        return guides[0].info().to_wire() if guides else None

    def pargs_batch_records(self, keys: list[str], last_tokens: list[int] | None = None) -> dict[str, dict]:
        """Pop the records of ``keys`` from this worker's processor, each a ``GuideRecord`` on the wire
        (``last_tokens``: each request's final token, whose reward a whole-vocabulary row looks up)."""
        found = {}
        finals = dict(zip(keys, last_tokens)) if last_tokens is not None else {}
        for guide in self._guides():
            for key in keys:
                row = guide.records.pop(key, None)
                if row is not None:
                    found[key] = row.record(finals.get(key)).to_wire()
        return found

    def pargs_batch_counters(self) -> dict[str, float]:
        """The guidance's totals in this worker (``Guide.counters``), summed over its processors:
        what a server's ``/metrics`` shows."""
        total: dict[str, float] = {}
        for guide in self._guides():
            for name, value in guide.counters().items():
                total[name] = total.get(name, 0.0) + value
        return total

