"""The published code's structure, for the bench's ``reference`` rows: one prompt at a time."""

from __future__ import annotations

import time

import numpy as np

from experiments.bench.flops import K
from experiments.bench.report import phase_shares


def reference_loop(llm: str, rm_path: str, prompts: list[str], tokens: int, beta: float = 1.0,
                   seed: int = 0) -> dict:
    """The published loop's structure: one prompt at a time, LLM with its KV cache, one RM forward
    per candidate on the whole text (re-tokenised with the RM's tokenizer)."""
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    lm_tok, rm_tok = AutoTokenizer.from_pretrained(llm), AutoTokenizer.from_pretrained(rm_path)
    lm = AutoModelForCausalLM.from_pretrained(llm, dtype=torch.float32).eval()
    rm = AutoModelForSequenceClassification.from_pretrained(rm_path, dtype=torch.float32).eval()
    rng = np.random.default_rng(seed)
    timings = {"engine": 0.0, "reward": 0.0, "decode": 0.0}
    made, t_start = 0, time.perf_counter()
    with torch.inference_mode():
        for prompt in prompts:
            ids = lm_tok(prompt, return_tensors="pt")["input_ids"]
            past, response = None, []
            step_input = ids
            for _ in range(tokens):
                t0 = time.perf_counter()
                out = lm(input_ids=step_input, past_key_values=past, use_cache=True)
                past = out.past_key_values
                logp = torch.log_softmax(out.logits[0, -1].float(), -1)
                top_lp, top_ids = logp.topk(K)
                t1 = time.perf_counter()
                rewards = []
                for cand in top_ids.tolist():
                    text = prompt + lm_tok.decode(response + [cand], skip_special_tokens=True)
                    enc = rm_tok(text, return_tensors="pt", truncation=True, max_length=512)
                    rewards.append(float(rm(**enc).logits[0, 0]))
                t2 = time.perf_counter()
                score = top_lp.numpy() + beta * np.array(rewards)
                p = np.exp(score - score.max())
                choice = int(top_ids[rng.choice(K, p=p / p.sum())])
                response.append(choice)
                step_input = torch.tensor([[choice]])
                made += 1
                timings["engine"] += t1 - t0
                timings["reward"] += t2 - t1
                timings["decode"] += time.perf_counter() - t2
    wall = time.perf_counter() - t_start
    return {"tokens": made, "seconds": wall, "tokens_per_s": made / wall, "split": phase_shares(timings)}
