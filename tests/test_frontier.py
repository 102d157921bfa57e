"""`pargs-batch frontier` end to end on the reduced default world, as a user runs it (the figures
themselves come from `make frontier` on the full world)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

CLI = str(Path(sys.executable).parent / "pargs-batch")


def first_reaching(rows: list[dict], method: str, reference_gold: float) -> dict | None:
    """By hand: the method's cheapest budget (by RM FLOPs a prompt) whose mean gold is at least the reference's."""
    hits = [r for r in rows if r["method"] == method and r["gold"]["mean"] >= reference_gold]
    return min(hits, key=lambda r: r["rm_flops_per_prompt"]) if hits else None


def test_reach_is_the_cheapest_budget_at_or_above_the_reference_not_the_first_listed():
    from experiments.frontier import REFERENCE, reach

    def row(method, budget, gold, flops):
        return {"label": f"{method} {budget}", "method": method, "budget": budget, "gold": {"mean": gold},
                "rm_flops_per_prompt": flops, "wall_s_per_prompt": flops / 10,
                "gold_vs_reference": {"diff": gold - 1.0}}

    rows = [row("best-of-n", "N=1", 0.2, 1.0), row("best-of-n", "N=16", 1.0, 16.0), row("best-of-n", "N=64", 1.4, 64.0),
            # listed out of compute order; the tie with the reference's gold counts as reaching it
            row("pargs", "k=10", 1.6, 30.0), row("pargs", "k=2", 0.4, 5.0), row("pargs", "k=4", 1.0, 12.0),
            row("topk", "k=10", -0.5, 0.0)]
    assert REFERENCE == "best-of-n N=16"
    got = {m["method"]: m for m in reach(rows)}
    assert list(got) == ["best-of-n", "pargs", "topk"]
    assert (got["pargs"]["reached"], got["pargs"]["budget"], got["pargs"]["rm_flops_per_prompt"]) == (True, "k=4", 12.0)
    assert got["pargs"]["wall_s_per_prompt"] == 1.2 and got["pargs"]["gold_vs_reference"] == {"diff": 0.0}
    assert (got["pargs"]["best_budget"], got["pargs"]["best_gold"]) == ("k=10", {"mean": 1.6})
    assert (got["best-of-n"]["budget"], got["best-of-n"]["best_budget"]) == ("N=16", "N=64")
    assert got["topk"]["reached"] is False and got["topk"]["budget"] is None
    assert got["topk"]["rm_flops_per_prompt"] is None and got["topk"]["gold_vs_reference"] is None
    assert reach([r for r in rows if r["label"] != REFERENCE]) == []  # no reference, nothing to reach


@pytest.mark.slow
def test_frontier_runs_every_method_over_its_budgets_and_plots_them(reduced_world, tmp_path):
    from PIL import Image

    from experiments.frontier import REFERENCE, grid

    world_dir = str(Path(reduced_world["llm"]).parent)
    out = tmp_path / "frontier"
    result = subprocess.run([CLI, "frontier", "--reduced-world", "--world-dir", world_dir, "--out", str(out),
                             "--num-prompts", "8", "--max-new-tokens", "12"],
                            capture_output=True, text=True, timeout=1800)
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
    smc_curves = [f"smc-{p} ({b})" for b in ("hf", "causal", "autoregressive") for p in ("ref", "guided")]
    assert [m["method"] for m in report["reach"]] == ["topk", "best-of-n", "pargs", "pargs k=2, other β",
                                                      "pargs-ar (fused)", "blockwise", "early-rejection",
                                                      "early-rejection, one block"] + smc_curves
    # SMC: every particle's tokens are counted, and the ref proposal at m = 8 reads the RM once a block
    llm = [rows[f"smc-ref (hf) N={n} m=8"]["llm_tokens_per_prompt"] for n in (4, 16, 64)]
    assert llm == sorted(llm) and llm[2] >= 4 * llm[0]
    ref_calls = [rows[f"smc-ref (hf) N={n} m=8"]["reward_calls_per_prompt"] for n in (4, 16, 64)]
    assert ref_calls == sorted(ref_calls) and ref_calls[0] <= 4 * 2  # 12 tokens: at most 2 readings a particle
    # each method's reach, by hand from the rows: its cheapest budget whose gold is at least Best-of-16's
    ref_gold = rows[REFERENCE]["gold"]["mean"]
    assert f"reaches {REFERENCE}'s ({ref_gold:.3f})" in result.stdout
    for m in report["reach"]:
        hit = first_reaching(report["rows"], m["method"], ref_gold)
        assert m["reached"] == (hit is not None), m
        assert m["budget"] == (hit and hit["budget"]), m
        assert m["rm_flops_per_prompt"] == (hit and hit["rm_flops_per_prompt"]), m
        assert m["gold_vs_reference"] == (hit and hit["gold_vs_reference"]), m
        best = max((r for r in report["rows"] if r["method"] == m["method"]), key=lambda r: r["gold"]["mean"])
        assert m["best_gold"]["mean"] == best["gold"]["mean"], m
    bon = next(m for m in report["reach"] if m["method"] == "best-of-n")
    assert bon["budget"] in ("N=1", "N=2", "N=4", "N=8", "N=16")  # never past the reference itself
    for name in report["plots"]:
        with Image.open(out / "plots" / name) as img:
            img.verify()
    assert (out / "frontier.md").read_text().count("![") == 2
    assert (out / "report" / "report.md").exists()  # the evaluation job's own report, cost table included
    assert "## Compute spent" in (out / "report" / "report.md").read_text()
