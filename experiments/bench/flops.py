"""Section 5.3's cost model: FLOPs per token, and this machine's matmul rate to turn them into seconds."""

from __future__ import annotations

import time

K = 10  # candidates per step (k) in every bench row


def count_params(path: str) -> dict:
    """Non-embedding parameters N = 12 n_layers d_model^2 (Kaplan et al.), and the shape."""
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(path)
    layers = getattr(c, "n_layer", None) or c.num_hidden_layers
    width = getattr(c, "n_embd", None) or c.hidden_size
    return {"n_layers": layers, "d_model": width, "N": 12 * layers * width ** 2}


def flop_params(path: str, output_projection: bool) -> int:
    """The parameters a token's forward multiplies by: N (above), plus the output projection over
    the vocabulary (d_model x vocab) for an autoregressive RM, whose reward needs every token's
    log-probability; a classifier RM's score head is one row."""
    from transformers import AutoConfig

    shape = count_params(path)
    return shape["N"] + (shape["d_model"] * AutoConfig.from_pretrained(path).vocab_size if output_projection else 0)


def machine_flops() -> float:
    """Sustained float32 matmul FLOP/s of this process's torch (the bound's denominator)."""
    import torch

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    t0 = time.perf_counter()
    for _ in range(20):
        a @ b
    return 20 * 2 * 1024 ** 3 / (time.perf_counter() - t0)


def forward_flops(shape: dict, n_ctx: float) -> float:
    """Section 5.3's cost of one token's forward pass: C = 2N + 2 n_layers n_ctx d_model."""
    return 2 * shape["N"] + 2 * shape["n_layers"] * n_ctx * shape["d_model"]


def flop_bound(llm: dict, rm: dict, n_ctx: float, k: int, flops: float) -> float:
    """Section 5.3: seconds per token of C_forward(LLM) + k * C_RM at ``flops``."""
    return (forward_flops(llm, n_ctx) + k * forward_flops(rm, n_ctx)) / flops
