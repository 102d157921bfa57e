"""`pargs-batch bench` at toy sizes: every row, the guard, the JSON and the plot (no timing asserts)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

CLI = str(Path(sys.executable).parent / "pargs-batch")


@pytest.mark.slow
def test_bench_prints_the_table_writes_json_and_passes_its_correctness_guard(reduced_world, tmp_path):
    world_dir = str(Path(reduced_world["llm"]).parent)
    result = subprocess.run([CLI, "bench", "--reduced-world", "--world-dir", world_dir, "--out", str(tmp_path),
                             "--batch-sizes", "2,4", "--new-tokens", "6", "--reference-prompts", "1",
                             "--prefix-lengths", "8,32", "--model-sets", "world", "--repeats", "2",
                             "--startup-modes", "fused"],
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "×plain" in result.stdout and "meas/bound" in result.stdout and "targets:" in result.stdout
    bench = json.loads((tmp_path / "bench.json").read_text())
    kinds = {(r["method"], r["mode"], r["backend"], r["B"]) for r in bench["rows"]}
    for b in (2, 4):
        assert {("plain", "-", "-", b), ("pargs", "stepped", "hf", b), ("pargs", "stepped", "causal", b),
                ("pargs", "fused", "hf", b), ("pargs", "fused", "causal", b)} <= kinds
    assert {("reference", "loop", "hf", 1), ("reference", "loop", "causal", 1)} <= kinds
    for r in bench["rows"]:  # timed rows: the median of 2 interleaved rounds and their range
        if r["method"] != "reference":
            assert r["repeats"] == 2 and len(r["runs_tokens_per_s"]) == 2
            assert r["tokens_per_s_min"] <= r["tokens_per_s"] <= r["tokens_per_s_max"]
            assert r["tokens_per_s_min"] == min(r["runs_tokens_per_s"])
        assert r["tokens_per_s"] > 0 and r["bound_s_per_token"] > 0 and r["vs_reference"] > 0
        assert abs(sum(r["split"].values()) - 1) < 0.01
        # every configuration makes the same tokens: B responses x new tokens (EOS ignored)
        expected = 6 * r["B"]  # the reference runs one prompt: B = 1
        assert r["tokens"] == expected
    # speed never changes results: the timed rows equal a rerun through a YAML config
    assert bench["guard"]["world"] and all(bench["guard"]["world"].values())
    assert set(bench["reward_vs_prefix"]["causal"]) == {"8", "32"}
    # one reward step by backend and k: the whole vocabulary only for the autoregressive backend
    steps = bench["reward_step_by_k"]["seconds"]
    assert steps["hf"]["0"] is None and steps["causal"]["0"] is None and steps["autoregressive"]["0"] > 0
    assert all(steps[b][k] > 0 for b in steps for k in ("2", "10"))
    assert "reward step by backend and k" in result.stdout and "whole vocab" in result.stdout
    assert {t["target"].split(" ")[0] for t in bench["targets"]} >= {"best", "causal", "decode-and-glue"}
    assert (tmp_path / "reward_vs_prefix.png").exists()
    # start-up in fresh processes, phase by phase; the fused targets are judged
    startup = bench["startup"]["fused"]
    assert set(startup) >= {"imports_s", "engine_s", "reward_model_s", "first_step_s", "total_s", "shutdown_s"}
    assert all(0 < startup[p]["min"] <= startup[p]["median"] <= startup[p]["max"] for p in ("imports_s", "engine_s"))
    assert startup["total_s"]["median"] >= startup["imports_s"]["median"] + startup["engine_s"]["median"]
    assert "start-up, seconds" in result.stdout and "reward model" in result.stdout
    assert any(t["target"].startswith("fused >= stepped") for t in bench["targets"])


@pytest.mark.slow
def test_bench_serve_times_guided_and_plain_requests_at_each_concurrency(reduced_world, tmp_path):
    world_dir = str(Path(reduced_world["llm"]).parent)
    result = subprocess.run([CLI, "bench", "--serve", "--reduced-world", "--world-dir", world_dir, "--out", str(tmp_path),
                             "--serve-clients", "1,4", "--serve-min-requests", "4", "--new-tokens", "6",
                             "--repeats", "2"], capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "×plain" in result.stdout and "p99 s" in result.stdout
    bench = json.loads((tmp_path / "bench_serve.json").read_text())
    assert {(r["mode"], r["clients"]) for r in bench["rows"]} == {(m, c) for m in ("guided", "plain") for c in (1, 4)}
    for r in bench["rows"]:
        assert len(r["runs"]) == 2 and r["tokens_per_s_min"] <= r["tokens_per_s"] <= r["tokens_per_s_max"]
        assert all(run["tokens"] == 6 * max(4, 2 * r["clients"]) for run in r["runs"])  # every request its 6 tokens
        assert 0 < r["p50_s"] <= r["p99_s"] and r["requests_per_s"] > 0
        assert ("vs_plain" in r) == (r["mode"] == "guided")
    # the guided rounds went through the reward model (the server's own metrics), the plain ones did not
    assert len(bench["guidance"]) == 4 and all(g["steps"] > 0 and g["reward_s_per_step"] > 0 for g in bench["guidance"])
    assert (tmp_path / "serving.png").exists()
