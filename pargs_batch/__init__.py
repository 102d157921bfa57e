"""pargs_batch: batch tokenwise reward-guided text generation (PARGS, ARGS, top-k) on vLLM."""

__version__ = "0.1.0"
