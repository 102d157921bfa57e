"""Session fixtures: the tiny world is built once, one vLLM engine and one reward scorer shared."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# nothing can be downloaded here: fail fast instead of waiting on the hub's timeouts
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # two workers share two cores: an OpenMP thread that waits for its team sleeps instead of
    # spinning, or a worker's spinning threads starve the other's (set before torch loads)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(autouse=True)
def _grouped_by_xdist(request):
    """Fail a test marked xdist_group that pytest-xdist did not group: the Ray tests would then run on
    both workers at once, and a test that kills a Ray actor by its process name could kill the other's."""
    config = request.config
    if (os.environ.get("PYTEST_XDIST_WORKER") and config.getvalue("loadgroup")
            and request.node.get_closest_marker("xdist_group")
            and "@" not in request.node.nodeid.rsplit("]", 1)[-1]):
        pytest.fail("pytest-xdist did not group this xdist_group test (--dist loadgroup): this "
                    "pytest/pytest-xdist pair cannot; install the dev extra's pins", pytrace=False)


def built_once(tmp_path_factory, name: str, build) -> dict:
    """``build(directory)`` once per test run: under pytest-xdist the first worker to ask builds it
    into the run's shared temporary directory while the other waits, then both read what it
    returned (a JSON-able dict); without xdist, into this session's own directory."""
    import json

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return build(tmp_path_factory.mktemp(name))
    from filelock import FileLock

    out = tmp_path_factory.getbasetemp().parent / f"shared-{name}"  # one per run, beside the workers' own
    with FileLock(f"{out}.lock"):
        made = out.with_name(out.name + ".json")
        if not made.exists():
            out.mkdir(exist_ok=True)
            made.write_text(json.dumps(build(out)))
        return json.loads(made.read_text())


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    from experiments.world.tiny import build_tiny_world

    return built_once(tmp_path_factory, "world", build_tiny_world)


@pytest.fixture(scope="session")
def reduced_world(tmp_path_factory):
    """The default world at test size, built by `pargs-batch world build --kind reduced` (~30 s)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    def build(out):
        cli = str(Path(sys.executable).parent / "pargs-batch")
        result = subprocess.run([cli, "world", "build", "--kind", "reduced", "--out", str(out)],
                                capture_output=True, text=True, timeout=1800, check=False)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "LM held-out perplexity" in result.stderr and "world: built in" in result.stderr
        return json.loads(result.stdout)

    return built_once(tmp_path_factory, "default-world", build)


@pytest.fixture(scope="session")
def chat_world(tmp_path_factory):
    """A tiny Llama chat model with two end ids and a chat-template reward head (experiments/world/chat.py)."""
    from experiments.world.chat import build_chat_world

    return built_once(tmp_path_factory, "chat", lambda out: build_chat_world(out, steps=300))


@pytest.fixture(scope="session")
def model_config(world):
    from pargs_batch.config import ModelConfig

    return ModelConfig(path=world["llm"], dtype="float32", max_model_len=256,
                       kv_cache_memory_bytes=64 << 20)


@pytest.fixture(scope="session")
def engine(model_config):
    from pargs_batch.models.engine import Engine

    engine = Engine(model_config)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def tokenizer(world):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(world["llm"])


@pytest.fixture(scope="session")
def scorer(world):
    from pargs_batch.config import RewardConfig
    from pargs_batch.rewards.hf import HFRewardScorer

    return HFRewardScorer(RewardConfig(path=world["reward_model"], batch_size=16))


@pytest.fixture(scope="session")
def models(engine, tokenizer, scorer):
    return engine, tokenizer, scorer


@pytest.fixture(scope="session")
def preference_file(world):
    """300 (prompt, chosen, rejected) triples of the tiny corpus: the pleasanter reply is chosen."""
    return world["preferences"]


@pytest.fixture(scope="session")
def fresh_deberta(world):
    """An untrained DeBERTa-v2 reward model with the world's reward tokenizer."""
    return world["reward_model_init"]


@pytest.fixture(scope="module")
def ray_local():
    """A real local Ray with two CPUs, this process's own, for one test module (shut down before the next).
    ``address="local"``: always a new one, never a cluster found on the machine."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false", "VLLM_LOGGING_LEVEL": "WARNING"}})
    yield ray
    ray.shutdown()
