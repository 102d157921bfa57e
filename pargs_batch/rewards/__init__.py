"""Every reward scorer behind one interface - ``hf`` (any sequence classifier), ``causal``, ``autoregressive``,
several weighted - their KV state (``kv_cache``) and the one place a scorer is chosen (``factory``)."""
