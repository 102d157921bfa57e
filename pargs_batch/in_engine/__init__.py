"""What runs inside vLLM's worker process in fused mode: the guidance (``guide``), its adaptors to
vLLM's two logits-processor interfaces (``v1``, ``v2``) and the records extension (``records``)."""
