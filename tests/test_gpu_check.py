"""jobs/gpu_check.py and its part 1, jobs/gpu_scorers.py. Part 1 (the reward scorers and the V2
processor, torch and transformers only) runs here at its tiny scale, on this machine's device: every
figure is there and plausible, and the full scale's random RMs have the sizes the check claims
(counted without building them). Part 2 (the engine, vLLM's CUDA build): without a GPU it says why
and skips - run as a script with pyarrow and vLLM absent, as on a GPU machine where only torch and
transformers are; on CPU (--allow-cpu) it makes the reference and its own checks hold; the `gpu`
test runs it for real where there is a GPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
from jobs import gpu_check, gpu_scorers  # noqa: E402 - jobs/ from the checkout (pytest's pythonpath)

WHY = gpu_check.preflight()


def row(id, tokens, rewards, error=None):
    return {"id": id, "sample_index": 0, "response_token_ids": tokens, "rewards": rewards, "error": error}


def test_agreement_counts_identical_rows_and_compares_rewards_only_before_rows_differ():
    a = [row("x", [1, 2, 3], [0.1, 0.2, 0.3]), row("y", [1, 2, 3], [0.1, 0.2, 0.3]), row("z", [7], [1.0], "boom")]
    b = [row("x", [1, 2, 3], [0.1, 0.2, 0.3005]), row("y", [1, 5, 6], [0.102, 9.0, 9.0]), row("z", [7], [1.0])]
    got = gpu_check.agreement(a, b)
    assert got["rows"] == 2 and got["same_tokens"] == 0.5  # the error row is left out
    assert got["max_reward_diff"] == pytest.approx(0.002)  # y's steps after it diverged do not count


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    return gpu_scorers.scorer_check(str(out), "tiny"), out


def test_tiny_scale_times_a_guided_step_of_both_backends_at_every_prefix(tiny):
    report, out = tiny
    s = gpu_scorers.SCALES["tiny"]
    assert json.loads((out / "gpu_check.json").read_text()) == {"scorers": report}
    assert report["ran"] and report["scale"] == "tiny" and report["candidates"] == s.rows * s.k
    cuda = report["device"] == "cuda"
    for backend in ("causal", "hf"):
        steps = report["reward_step"][backend]
        assert list(steps) == [str(n) for n in s.prefixes]
        for n, step in steps.items():
            assert step["ms"] > 0 and step["finite"], (backend, n)
            assert (step["peak_over_weights_mib"] is not None) == cuda
        assert (report["models"][backend]["weights_mib"] is not None) == cuda
    for n, step in report["reward_step"]["causal"].items():
        assert step["start_ms"] > 0 and (step["session_mib"] is not None) == cuda
    for n, step in report["reward_step"]["hf"].items():
        assert step["tokens_read"] == int(n) + 2  # n words, one token each, in [CLS] ... [SEP]
        assert step["tflops"] > 0


def test_tiny_scale_times_the_v2_processor_guided_and_unguided_on_the_runners_layout(tiny):
    s, proc = gpu_scorers.SCALES["tiny"], tiny[0]["processor"]
    assert (proc["rows"], proc["vocab"], proc["steps"]) == (s.proc_rows, s.proc_vocab, s.proc_steps)
    for mode in ("guided", "unguided"):
        assert list(proc[mode]) == [str(n) for n in s.proc_prefixes]
        for n, step in proc[mode].items():
            assert step["ms_per_apply"] > 0 and step["first_step_ms"] > 0, (mode, n)
            assert step["follows_runner"], (mode, n)  # each row read its slot's prompt and committed its tokens
    for step in proc["guided"].values():
        assert 0 < step["reward_share"] <= 1 and step["reward_ms_per_step"] > 0
        assert step["rewards_recorded"] == s.proc_steps - 1  # the last step's reward waits for its token


def test_the_full_scale_rms_are_the_sizes_the_check_names():
    configs = gpu_scorers.rm_configs("full")
    causal, hf = gpu_scorers.param_count(configs["causal"]), gpu_scorers.param_count(configs["hf"])
    assert causal == pytest.approx(400e6, rel=0.1) and hf == pytest.approx(435e6, rel=0.1)
    assert (configs["hf"].hidden_size, configs["hf"].num_hidden_layers, configs["hf"].vocab_size) == (1024, 24, 128100)
    assert configs["processor"].vocab_size == 32000 and gpu_scorers.param_count(configs["processor"]) < 20e6
    s = gpu_scorers.SCALES["full"]
    assert s.rows * s.k == 2560 and s.prefixes == (32, 64, 128, 256, 512, 1024)
    assert configs["causal"].n_positions > max(s.prefixes) + s.steps + 1  # the steps go past the longest prefix


def test_run_as_a_script_from_the_checkout_it_finds_part_1_beside_it_and_says_its_options():
    result = subprocess.run([sys.executable, "jobs/gpu_check.py", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("usage: gpu_check.py") and "--scale {auto,full,tiny,none}" in result.stdout


@pytest.mark.skipif(WHY is None, reason="part 2 would run the engine here")
def test_when_part_1_fails_part_2_still_runs_what_part_1_measured_stays_and_the_exit_is_1(tmp_path, monkeypatch):
    def broken(*args):
        raise RuntimeError("the causal timer broke")

    monkeypatch.setattr(gpu_scorers, "time_causal", broken)
    assert gpu_check.main(["--out", str(tmp_path), "--scale", "tiny", "--world", str(tmp_path / "no-world")]) == 1
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["scorers"]["error"] == "RuntimeError: the causal timer broke" and not report["scorers"]["ran"]
    assert report["scorers"]["models"]["causal"]["params"] > 0  # saved before the causal backend was timed
    assert report["why"] == WHY and report["passed"] is None  # part 2 said why it did not run


# `python jobs/gpu_check.py ...` (sys.path[0] the script's directory) on a machine with only torch and
# transformers: a None entry in sys.modules makes every import of pyarrow or vLLM raise ImportError. When
# the script exits, one stderr line `modules: {...}` says what the process ended up with: whether the
# blocks still stand, any pyarrow or vLLM module that loaded anyway, and the file of each library module
# part 1 drives
DRIVEN = ("pargs_batch.rewards.factory", "pargs_batch.rewards.hf", "pargs_batch.rewards.causal",
          "pargs_batch.guidance", "pargs_batch.in_engine.v2")
WITHOUT = f"""import json, os, runpy, sys
sys.modules.update(dict.fromkeys(['pyarrow', 'vllm']))
sys.argv = sys.argv[1:]
sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))
try:
    runpy.run_path(sys.argv[0], run_name='__main__')
finally:
    print('modules: ' + json.dumps({{
        'blocked': {{name: name in sys.modules and sys.modules[name] is None for name in ('pyarrow', 'vllm')}},
        'loaded': sorted(m for m, mod in sys.modules.items()
                         if m.split('.')[0] in ('pyarrow', 'vllm') and mod is not None),
        'files': {{m: getattr(sys.modules.get(m), '__file__', None) for m in {DRIVEN!r}}}}}), file=sys.stderr)
"""


def modules_line(stderr: str) -> dict:
    return json.loads(next(line for line in stderr.splitlines() if line.startswith("modules: "))[len("modules: "):])


@pytest.mark.skipif(WHY != "torch sees no CUDA device", reason="a GPU (part 1 would run at full scale), or no torch")
def test_without_a_gpu_part_2_says_why_and_part_1_runs_tiny_without_pyarrow_or_vllm(tmp_path):
    script = str(ROOT / "jobs" / "gpu_check.py")
    # the timeout guards against a hang, not a speed bar: on a busy CPU part 1 takes minutes
    result = subprocess.run([sys.executable, "-c", WITHOUT, script, "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "gpu check skipped: torch sees no CUDA device"
    assert any(line.startswith("scorer check on cpu (tiny scale, bfloat16)") for line in lines)
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert {k: report[k] for k in ("ran", "why", "passed")} == {"ran": False, "why": "torch sees no CUDA device",
                                                                "passed": None}
    scorers = report["scorers"]
    assert scorers["ran"] and scorers["scale"] == "tiny" and scorers["device"] == "cpu"
    # the library imported as it is - the checkout's own modules, no stand-ins - while pyarrow and vLLM
    # stayed absent: neither block was lifted and no module of theirs loaded
    seen = modules_line(result.stderr)
    assert seen["blocked"] == {"pyarrow": True, "vllm": True} and seen["loaded"] == [], seen
    assert seen["files"] == {m: str(ROOT / (m.replace(".", "/") + ".py")) for m in DRIVEN}, seen["files"]
    for mode in ("guided", "unguided"):
        assert all(step["follows_runner"] for step in scorers["processor"][mode].values())
    assert all(step["ms"] > 0 for steps in scorers["reward_step"].values() for step in steps.values())
    assert [p.name for p in tmp_path.iterdir()] == ["gpu_check.json"]  # the random RMs went to a temporary dir


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
