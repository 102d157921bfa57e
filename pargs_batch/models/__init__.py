"""Loading: the one room that builds the vLLM engine (``engine``, ``detok``) and the reward scorers the plan
asks for, in this process or on Ray actors (``loading``)."""
