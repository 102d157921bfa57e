"""What runs inside vLLM's worker process in fused mode: the guidance (``guide``), a request's state
(``state``), the decode rule on the engine's tensors (``rule``), its adaptors to vLLM's two
logits-processor interfaces (``v1``, ``v2``, ``processor``), the records extension (``records``) and
the reward model's memory reservation (``memory``)."""
