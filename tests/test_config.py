"""Bad configuration fails before any model loads, with one line naming key, value and what is allowed."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pargs_batch.config import GenerateConfig

from pargs_batch.configlib import ConfigError, build, load_config

from helpers import base_config

CLI = str(Path(sys.executable).parent / "pargs-batch")


def bad(world, tmp_path, section, key, value):
    cfg = base_config(world, tmp_path)
    cfg[section][key] = value
    return cfg


@pytest.mark.parametrize("section,key,value,allowed", [
    ("decode", "method", "beam", "expected one of topk, args, pargs-greedy, pargs"),
    ("decode", "beta", -0.5, "must be >= 0"),
    ("decode", "top_k", -1, "must be an integer >= 1, or 0 (the whole vocabulary)"),
    ("decode", "top_k", 50, "must be <= model.max_logprobs (20)"),
    ("decode", "temperature", 0, "must be > 0"),
    ("decode", "max_new_tokens", -1, "must be > 0"),
    ("decode", "block_tokens", 0, "must be an integer >= 1"),
    ("decode", "reject_fraction", 1.0, "must be in [0, 1)"),
    ("decode", "reject_fraction", -0.1, "must be in [0, 1)"),
    ("model", "path", "/nonexistent/llm", "no such directory"),
    ("model", "path", "", "required"),
    ("model", "dtype", "int3", "expected one of"),
    ("reward", "path", "./missing-rm", "no such directory"),
    ("reward", "template", "{response} then {prompt}", "{prompt} followed by {response}"),
    ("reward", "template", "{system} {prompt}{response}", "no other field"),
    ("reward", "template", "{prompt}", "{prompt} followed by {response}"),
    ("reward", "device", "tpu", "expected auto, cpu, cuda"),
    ("data", "source", "missing.jsonl", "no such file"),
    ("output", "compression", "lz5", "expected one of"),
])
def test_bad_values_name_key_value_and_allowed(world, tmp_path, section, key, value, allowed):
    with pytest.raises(ConfigError) as err:
        build(GenerateConfig, bad(world, tmp_path, section, key, value))
    message = str(err.value)
    assert f"{section}.{key}" in message and repr(value) in message and allowed in message
    assert "\n" not in message


def test_guided_method_needs_a_reward_model(world, tmp_path):
    cfg = base_config(world, tmp_path)
    cfg["reward"]["path"] = ""
    with pytest.raises(ConfigError, match="reward.path"):
        build(GenerateConfig, cfg)
    cfg["decode"]["method"] = "topk"
    assert build(GenerateConfig, cfg).decode.method == "topk"


def test_unknown_keys_and_wrong_types_are_refused(world, tmp_path):
    cfg = base_config(world, tmp_path)
    cfg["decode"]["betta"] = 1.0
    with pytest.raises(ConfigError, match=r"decode.betta=1.0 is not allowed: unknown key; known keys: method, beta"):
        build(GenerateConfig, cfg)
    cfg = base_config(world, tmp_path)
    cfg["decode"]["top_k"] = "ten"
    with pytest.raises(ConfigError, match="decode.top_k='ten' is not allowed: expected an integer"):
        build(GenerateConfig, cfg)


def test_yaml_and_dotted_overrides(world, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(base_config(world, tmp_path)))
    config = load_config(GenerateConfig, path, ["decode.beta=3", "decode.stop=['.', '!']",
                                                "data.limit=null", "decode.temperature=7e-1"])
    assert config.decode.beta == 3.0 and isinstance(config.decode.beta, float)
    assert config.decode.temperature == 0.7
    assert config.decode.stop == [".", "!"]
    assert config.data.limit is None
    assert config.model.path == world["llm"]


def test_hub_ids_are_accepted_without_touching_the_network(monkeypatch):
    from pargs_batch.config import ModelConfig

    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert ModelConfig(path="openai-community/gpt2-large").path == "openai-community/gpt2-large"
    assert ModelConfig(path="gpt2").path == "gpt2"


def test_offline_hub_ids_must_be_in_the_local_cache(monkeypatch, tmp_path):
    from pargs_batch.config import ModelConfig

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ConfigError, match="model.path='org/uncached-model'.*HF_HUB_OFFLINE=1"):
        ModelConfig(path="org/uncached-model")


def run_cli(*args):
    return subprocess.run([CLI, *args], capture_output=True, text=True)


# `pargs-batch` as its console script runs it (main() on sys.argv), then, on a last stdout line, the modules
# of torch and vLLM it imported: no model loads without them
WATCHED = """
import json, sys
from pargs_batch.cli import main
sys.argv[0] = "pargs-batch"
code = main()
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "vllm"))))
sys.exit(code)
"""


@pytest.mark.parametrize("override,key", [
    ("decode.method=beam", "decode.method"),
    ("decode.beta=-1", "decode.beta"),
    ("decode.top_k=0", "decode.top_k"),
    ("decode.top_k=21", "decode.top_k"),
    ("decode.block_tokens=0", "decode.block_tokens"),
    ("decode.reject_fraction=1", "decode.reject_fraction"),
    ("model.path=/no/such/model", "model.path"),
    ("data.prompt_column=question", "data.prompt_column"),
    ("data.id_column=uid", "data.id_column"),
])
def test_cli_exits_2_before_loading_models(world, tmp_path, override, key):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(base_config(world, tmp_path)))
    result = subprocess.run([sys.executable, "-c", WATCHED, "generate", "--config", str(path), override],
                            capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"config error: {key}="), result.stderr
    # refused before any model loads: neither torch nor vLLM was imported, no engine said anything, no output
    assert json.loads(result.stdout.splitlines()[-1]) == []
    assert "vLLM" not in result.stderr and not (tmp_path / "out").exists()


def test_cli_unknown_column_lists_the_available_ones(world, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(base_config(world, tmp_path)))
    result = run_cli("generate", "--config", str(path), "data.prompt_column=question")
    assert "available: id, prompt" in result.stderr


def test_cli_missing_config_file(tmp_path):
    result = run_cli("generate", "--config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2 and "--config" in result.stderr and "no such file" in result.stderr
