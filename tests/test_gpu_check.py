"""jobs/gpu_check.py: stepped and fused, hf and causal, on vLLM's CUDA build compared with the CPU rows.
Without a GPU and vLLM's CUDA build it says why and skips; on CPU (--allow-cpu) it makes the reference
and its own checks hold; the `gpu` test runs it for real where there is a GPU."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "jobs" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)
WHY = gpu_check.preflight()


def row(id, tokens, rewards, error=None):
    return {"id": id, "sample_index": 0, "response_token_ids": tokens, "rewards": rewards, "error": error}


def test_agreement_counts_identical_rows_and_compares_rewards_only_before_rows_differ():
    a = [row("x", [1, 2, 3], [0.1, 0.2, 0.3]), row("y", [1, 2, 3], [0.1, 0.2, 0.3]), row("z", [7], [1.0], "boom")]
    b = [row("x", [1, 2, 3], [0.1, 0.2, 0.3005]), row("y", [1, 5, 6], [0.102, 9.0, 9.0]), row("z", [7], [1.0])]
    got = gpu_check.agreement(a, b)
    assert got["rows"] == 2 and got["same_tokens"] == 0.5  # the error row is left out
    assert got["max_reward_diff"] == pytest.approx(0.002)  # y's steps after it diverged do not count


@pytest.mark.skipif(WHY is None, reason="this machine can run the GPU check")
def test_without_a_gpu_the_check_says_why_and_runs_nothing(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "jobs" / "gpu_check.py"), "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == f"gpu check skipped: {WHY}"
    assert json.loads((tmp_path / "gpu_check.json").read_text()) == {"ran": False, "why": WHY, "passed": None}
    assert [p.name for p in tmp_path.iterdir()] == ["gpu_check.json"]


@pytest.mark.slow
def test_on_cpu_it_makes_the_reference_and_its_checks_hold(reduced_world, tmp_path):
    world_dir = str(Path(reduced_world["llm"]).parent)
    report = gpu_check.run_check(world_dir, str(tmp_path), prompts=8, tokens=16, allow_cpu=True)
    assert report["passed"] and report["ran"]
    assert set(report["cases"]) == {"stepped-hf", "fused-hf", "stepped-causal", "fused-causal"}
    if WHY is not None:  # vLLM's CPU platform: the V1 runner, no async scheduling
        assert report["device"] == "cpu"
        assert all(not c["model_runner_v2"] and not c["async_scheduling"] for c in report["cases"].values())
    assert len(report["checks"]) == 10 and all(c["ok"] for c in report["checks"])
    for case in report["cases"]:
        assert (tmp_path / case).is_dir()


@pytest.mark.gpu
@pytest.mark.skipif(WHY is not None, reason=f"no GPU check here: {WHY}")
def test_the_gpu_check_passes_on_cuda(reduced_world, tmp_path):
    """PARGS_GPU_REFERENCE: the OUT directory of `gpu_check.py --allow-cpu` on the same world, on CPU."""
    world_dir = str(Path(reduced_world["llm"]).parent)
    report = gpu_check.run_check(world_dir, str(tmp_path), reference=os.environ.get("PARGS_GPU_REFERENCE"),
                                 prompts=16, tokens=32)
    assert report["ran"] and report["device"] == "cuda" and report["passed"], report["checks"]
