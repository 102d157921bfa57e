"""`pargs-batch frontier` end to end on the reduced default world, as a user runs it (the figures
themselves come from `make frontier` on the full world)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

CLI = str(Path(sys.executable).parent / "pargs-batch")

pytestmark = pytest.mark.slow


def test_frontier_runs_every_method_over_its_budgets_and_plots_them(reduced_world, tmp_path):
    from PIL import Image

    from experiments.frontier import REFERENCE, grid

    world_dir = str(Path(reduced_world["llm"]).parent)
    out = tmp_path / "frontier"
    result = subprocess.run([CLI, "frontier", "--reduced-world", "--world-dir", world_dir, "--out", str(out),
                             "--num-prompts", "8", "--max-new-tokens", "12"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "RM FLOPs/prompt" in result.stdout and f"reaches {REFERENCE}'s" in result.stdout
    report = json.loads((out / "frontier.json").read_text())
    rows = {r["label"]: r for r in report["rows"]}
    assert list(rows) == [p.label for p in grid(2.0, 12)]
    # every point with a reward model ran once per seed of it (the reduced world has 2), paired with
    # Best-of-16 on seed and prompt; top-k once, against both seeds of the reference
    assert report["rm_seeds"] == 2
    for label, r in rows.items():
        assert r["seeds"] == (1 if r["method"] == "topk" else 2), label
        assert r["gold"]["prompts"] == 8 and r["error_rows"] == 0, label
        assert r["gold"]["seeds"] == r["seeds"] and r["gold"]["interval"] is not None, label
        if r["gold_vs_reference"]:
            assert r["gold_vs_reference"]["seeds"] == 2 and len(r["gold_vs_reference"]["seed_diffs"]) == 2, label
        assert r["llm_tokens_per_prompt"] > 0 and r["wall_s_per_prompt"] > 0, label
        assert (r["rm_flops_per_prompt"] > 0) == (r["method"] != "topk"), label
        assert (r["gold_vs_reference"] is None) == (label == REFERENCE), label
    # more budget costs more: Best-of-N's RM calls are N a prompt, early rejection's grow with N
    assert [rows[f"best-of-n N={n}"]["reward_calls_per_prompt"] for n in (1, 4, 16, 64)] == [1, 4, 16, 64]
    er = [rows[f"early-rejection N={n}"]["rm_flops_per_prompt"] for n in (4, 8, 16, 32, 64)]
    assert er == sorted(er)
    assert rows["early-rejection, one block N=16 m=12"]["reward_calls_per_prompt"] == 16  # each scored once, at the end
    # the autoregressive RM reads one token a step whatever k, the whole vocabulary included (fused)
    for budget in ("k=2", "k=10", "whole vocab"):
        r = rows[f"pargs-ar (fused) {budget}"]
        assert r["reward_calls_per_prompt"] == pytest.approx(r["mean_tokens"]), budget
    assert rows["pargs k=10"]["reward_calls_per_prompt"] == pytest.approx(10 * rows["pargs k=10"]["mean_tokens"], rel=0.01)
    assert [m["method"] for m in report["reach"]] == ["topk", "best-of-n", "pargs", "pargs k=2, other β",
                                                      "pargs-ar (fused)", "blockwise", "early-rejection",
                                                      "early-rejection, one block"]
    assert next(m for m in report["reach"] if m["method"] == "best-of-n")["reached"]  # N=16 reaches itself
    for name in report["plots"]:
        with Image.open(out / "plots" / name) as img:
            img.verify()
    assert (out / "frontier.md").read_text().count("![") == 2
    assert (out / "report" / "report.md").exists()  # the evaluation job's own report, cost table included
    assert "## Compute spent" in (out / "report" / "report.md").read_text()
