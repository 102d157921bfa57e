"""The OpenAI-compatible server with the guidance inside vLLM (``server``) and its replicas behind Ray
Serve (``replicas``)."""
