"""Room on the engine's device for the reward model's activations.

vLLM sizes its KV cache from a profile of the LLM alone: its profiling run never calls logits
processors (no request carries our arguments then), it resets the device's peak-memory statistics
just before that run, and it counts only memory still *allocated* when profiling ends. So the
reward model's weights are counted (they stay allocated), but the activations of a guided step are
not, and with ``gpu_memory_utilization`` 0.9 the KV cache takes the rest: the first large guided
step could run out of memory.

``Reservation`` runs the largest guided step the engine can schedule once, at processor start
(before vLLM profiles), measures its peak above what was allocated before, and holds a buffer of
that size through vLLM's profiling, so vLLM leaves room for it. The step's shape is the memory
plan's: vLLM's ``max_num_seqs`` and ``max_model_len`` (both chosen by the plan on a GPU), and the
reward model reads it ``reward.batch_tokens`` tokens a forward, so the reservation is a chunk's
activations (and the KV state of the rows), not one forward over every row at the full context.
Several reward models (``reward.models``) are measured one by one; they score one after another, so
each device holds the largest of its members' peaks. The buffers are freed when the first guided
request arrives; the freed memory stays in torch's cache for the reward model's steps. On CPU
nothing is reserved: vLLM's CPU backend sizes its KV cache by ``kv_cache_memory_bytes``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LargestStep:
    """The largest guided step the engine can run: ``rows`` sequences (vLLM's ``max_num_seqs``),
    ``k`` candidates each (``model.max_logprobs``, the largest k a run may ask), ``tokens`` long (its
    ``max_model_len``)."""

    rows: int
    k: int
    tokens: int

    @classmethod
    def of(cls, vllm_config) -> LargestStep:
        model = vllm_config.model_config
        return cls(rows=int(vllm_config.scheduler_config.max_num_seqs), k=max(int(model.max_logprobs), 1),
                   tokens=int(model.max_model_len))


def run_largest_step(scorer, step: LargestStep) -> None:
    """One reward step at ``step``'s shape. The causal backend keeps a KV session for every row, so
    all rows go in; the hf backend's peak is one forward of ``batch_size`` candidates at full
    length, so that many suffice."""
    if getattr(scorer, "incremental", False):
        session = scorer.start([[1] * (step.tokens - 1)] * step.rows)
        scorer.score_candidates(session, np.ones((step.rows, step.k), dtype=np.int64))
        return
    n = min(step.rows * step.k, scorer.config.batch_size)
    scorer.score_costed(["a"] * n, [" a" * step.tokens] * n)


def members(scorer) -> list:
    """The single-model scorers of ``scorer`` (a ``WeightedScorer``'s members, or itself)."""
    return list(getattr(scorer, "scorers", None) or [scorer])


def step_peak(scorer, step: LargestStep) -> int:
    """Bytes the largest step of one single-model scorer holds at its peak on its CUDA device, above
    what was allocated before it (0 off CUDA)."""
    import torch

    device = torch.device(getattr(scorer, "device", "cpu"))
    if device.type != "cuda":
        return 0
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    with torch.inference_mode():
        run_largest_step(scorer, step)
    torch.cuda.synchronize(device)
    peak = int(torch.cuda.max_memory_allocated(device) - before)
    torch.cuda.empty_cache()
    return peak


class Reservation:
    """Device memory held through vLLM's profiling for the reward models' largest step: one
    measurement per reward model, one buffer per device (the largest of its members' peaks)."""

    def __init__(self, scorer, step: LargestStep):
        import torch

        self.step = step
        self.member_bytes = [step_peak(member, step) for member in members(scorer)]
        per_device: dict[str, int] = {}
        for member, size in zip(members(scorer), self.member_bytes):
            if size:
                device = str(torch.device(member.device))
                per_device[device] = max(per_device.get(device, 0), size)
        self.bytes = sum(per_device.values())
        self.buffers = [torch.empty(size, dtype=torch.uint8, device=device) for device, size in per_device.items()]

    def release(self) -> None:
        """Give the held memory back to the reward models (vLLM has sized its KV cache by now)."""
        self.buffers = []
