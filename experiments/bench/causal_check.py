"""Check the causal reward backend on this machine's device (CUDA where there is one).

    python -m experiments.bench.causal_check [LLM_TOKENIZER_DIR] [OUT_DIR]

Builds a random 2 x 512 causal reward model with the given tokenizer (default: the default world's,
outputs/world/llm), checks that 64 incremental steps equal full recomputation, and times one reward
step of the ``causal`` and ``hf`` backends at prefix 32..512 for B = 64 and 256 (k = 10). Writes
OUT_DIR/causal_reward_check.json. Needs torch and transformers only (no vLLM).
"""

import json
import sys
import time
from pathlib import Path

import numpy as np


def main(tokenizer_dir: str = "outputs/world/llm", out_dir: str = "outputs/bench") -> dict:
    import torch

    from pargs_batch.config import RewardConfig
    from pargs_batch.rewards.factory import make_scorer

    from experiments.bench.curve import reward_vs_prefix
    from experiments.bench.models import curve_model

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = curve_model(out / "curve-rm", {"llm": tokenizer_dir})
    scorer = make_scorer(RewardConfig(path=model, backend="causal", batch_size=1024))
    rng = np.random.default_rng(0)
    vocab = scorer.model.config.vocab_size
    seqs = [list(map(int, rng.integers(1, vocab, n))) for n in (5, 17, 9, 30)]
    session = scorer.start(seqs)
    worst = 0.0
    for _ in range(64):
        cand = rng.integers(1, vocab, (len(seqs), 10))
        got = scorer.score_candidates(session, cand)
        with torch.inference_mode():
            for i, s in enumerate(seqs):
                ids = torch.tensor([s + [int(c)] for c in cand[i]], device=scorer.device)
                want = scorer.model(input_ids=ids).logits[:, 0].float().cpu().numpy()
                worst = max(worst, float(np.abs(got[i] - want).max()))
        choice = rng.integers(0, 10, len(seqs))
        scorer.commit(session, choice)
        for i in range(len(seqs)):
            seqs[i].append(int(cand[i, choice[i]]))
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    result = {"device": device, "max_abs_diff_64_steps": worst, "reward_step_ms": {}}
    print(f"{device}: max |incremental - full| over 64 steps = {worst:.2e}")
    for b in (64, 256):
        t0 = time.perf_counter()
        curve = reward_vs_prefix(model, [32, 64, 128, 256, 512], b=b, steps=5)
        result["reward_step_ms"][b] = {k: {str(n): 1000 * v for n, v in curve[k].items()} for k in ("hf", "causal")}
        print(f"B={b} ({time.perf_counter() - t0:.1f} s): " + json.dumps(result["reward_step_ms"][b]))
    (out / "causal_reward_check.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(*sys.argv[1:])
