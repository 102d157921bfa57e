"""The default world at reduced size: built by the CLI, every artefact loads, the demo runs on it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

CLI = str(Path(sys.executable).parent / "pargs-batch")


def test_reduced_world_builds_fast_and_every_artefact_loads(reduced_world):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pargs_batch.config import RewardConfig
    from pargs_batch.reward import HFRewardScorer
    from experiments.world.gold import gold_reward

    w = reduced_world
    assert w["build_seconds"] < 180
    assert 1.0 < w["llm_heldout_perplexity"] < 20
    lm = AutoModelForCausalLM.from_pretrained(w["llm"])
    assert lm.config.model_type == "gpt2" and AutoTokenizer.from_pretrained(w["llm"]).eos_token
    prompts = [json.loads(line)["prompt"] for line in Path(w["prompts"]).read_text().splitlines()]
    assert len(prompts) == 64 == len(set(prompts))

    # the splits are disjoint by prompt, and the demo's prompts appear in no training split
    splits = {name: [json.loads(line) for line in Path(path).read_text().splitlines()] for name, path in w["preferences"].items()}
    by_split = {name: {r["prompt"] for r in rows} for name, rows in splits.items()}
    assert not by_split["guidance"] & by_split["evaluation"]
    assert not (by_split["guidance"] | by_split["evaluation"]) & set(prompts)
    assert by_split["heldout"] <= set(prompts)
    # Bradley-Terry labels: mostly, not always, the reply with the higher gold reward is chosen
    rows = splits["guidance"]
    agree = sum(r["gold_chosen"] > r["gold_rejected"] for r in rows) / len(rows)
    assert 0.6 < agree < 0.98
    assert rows[0]["gold_chosen"] == gold_reward([rows[0]["prompt"]], [rows[0]["chosen"]])[0]

    tokenizers = {}
    for key in ("rm_full", "rm_partial", "rm_partial_causal", "rm_eval"):
        scorer = HFRewardScorer(RewardConfig(path=w[key], template=w["template"]))
        scores = scorer.score(prompts[:4], [" the staff was kind ."] * 4)
        assert scores.shape == (4,) and all(abs(s) < 1e3 for s in scores)
        tokenizers[key] = type(scorer.model).__name__, len(scorer.tokenizer)
        assert json.loads((Path(w[key]) / "training_summary.json").read_text())["steps"] > 0
    # a bidirectional RM with its own tokenizer, and a causal one sharing the LM's
    assert tokenizers["rm_full"][0].startswith("DebertaV2")
    assert tokenizers["rm_partial_causal"][0].startswith("GPT2")
    assert tokenizers["rm_partial_causal"][1] == len(AutoTokenizer.from_pretrained(w["llm"]))
    assert tokenizers["rm_full"][1] != tokenizers["rm_partial_causal"][1]


def test_world_build_reuses_the_built_world(reduced_world):
    out = str(Path(reduced_world["llm"]).parent)
    result = subprocess.run([CLI, "world", "build", "--kind", "reduced", "--out", out],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0 and json.loads(result.stdout)["build_seconds"] == reduced_world["build_seconds"]
    assert "world: llm done" not in result.stderr


@pytest.mark.slow
def test_demo_runs_end_to_end_on_the_reduced_world(reduced_world, tmp_path):
    world_dir = str(Path(reduced_world["llm"]).parent)
    result = subprocess.run([CLI, "demo", "--reduced-world", "--world-dir", world_dir, "--num-prompts", "16",
                             "--max-new-tokens", "24", "--sweep-beta", "0,3", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("method"))
    assert "gold reward ± SE" in lines[header] and "eval-RM reward ± SE" in lines[header]
    printed = [line.split()[0] for line in lines[header + 1: header + 7]]
    assert printed == ["topk", "args", "pargs-greedy", "pargs", "pargs-causal-rm", "best-of-n"]

    demo = json.loads((tmp_path / "demo.json").read_text())
    table = {r["method"]: r for r in demo["table"]}
    assert all(r["rows"] == 32 for r in table.values())  # 16 prompts x 2 samples
    assert table["best-of-n"]["single_response"] is False and table["pargs"]["single_response"] is True
    # greedy methods give both samples the same reply: no diversity at all
    assert table["args"]["rouge_l"] == pytest.approx(1.0) and table["topk"]["rouge_l"] < 1.0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["evaluation_model"] == reduced_world["rm_eval"]
    assert report["gold_reward"] == "experiments.world.gold:gold_reward"
    assert (tmp_path / "report" / "plots" / "gold_distribution.png").exists()
    # the diagnostic ran for the full- and the partial-sequence RMs, by prefix bucket
    assert set(demo["diagnose"]) == {"rm_full", "rm_partial", "rm_partial_causal"}
    assert set(demo["diagnose"]["rm_partial"]["prefix_accuracy"]) == {"0-25%", "25-50%", "50-75%", "75-100%"}
    assert (tmp_path / "diagnose" / "prefix_accuracy.png").exists()
    assert [t["beta"] for t in demo["sweep"]["table"]] == [0.0, 3.0]
    assert (tmp_path / "sweep" / "report" / "plots" / "reward_vs_beta_0.png").exists()
