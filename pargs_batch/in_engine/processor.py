"""The one logits-processor class vLLM loads in fused mode, whichever model runner takes it.

vLLM 0.32 has two interfaces: the V1 runner (CPU; CUDA with ``VLLM_USE_V2_MODEL_RUNNER=0``) accepts
only subclasses of ``vllm.v1.sample.logits_processor.LogitsProcessor`` and builds them with
``(vllm_config, device, is_pin_memory)``; Model Runner V2 (CUDA's default) only subclasses of its own
``LogitsProcessor``, built with ``(vllm_config, req_states)``. This class is both, and hands every call
to the adaptor for the runner that built it (``v1`` or ``v2``), so an engine is configured once
without asking which runner vLLM will pick.
"""

from __future__ import annotations

from vllm.v1.sample.logits_processor import LogitsProcessor as V1Interface
from vllm.v1.worker.gpu.sample.logits_processor import LogitsProcessor as V2Interface

from pargs_batch.in_engine.guide import Guide
from pargs_batch.in_engine.v1 import PargsLogitsProcessorV1
from pargs_batch.in_engine.v2 import PargsLogitsProcessorV2


class PargsLogitsProcessor(V1Interface, V2Interface):
    """Reward guidance for either runner: V1 calls ``update_state`` and ``apply(logits)``, V2
    ``add_request`` and ``apply(logits, ctx)``."""

    def __init__(self, vllm_config, *args):
        v2 = len(args) == 1  # (req_states,) from V2; (device, is_pin_memory) from V1
        self.adaptor = PargsLogitsProcessorV2(vllm_config, *args) if v2 else PargsLogitsProcessorV1(vllm_config, *args)
        self.guide = self.adaptor.guide
        self.records = self.guide.records

    @classmethod
    def validate_params(cls, params) -> None:
        Guide.check(params)

    def is_argmax_invariant(self) -> bool:
        return False  # it changes which token is the argmax

    def update_state(self, batch_update) -> None:
        self.adaptor.update_state(batch_update)

    def add_request(self, req_idx: int, sampling_params) -> bool:
        return self.adaptor.add_request(req_idx, sampling_params)

    def apply(self, logits, ctx=None):
        return self.adaptor.apply(logits) if ctx is None else self.adaptor.apply(logits, ctx)
