"""The Python API as a user calls it: `import pargs_batch as pb`, configs from YAML or a dict with
overrides (checked before any model loads), `pb.generate` -> summary, `pb.read_output`,
`pb.evaluate` -> report; the CLI is a layer over the same calls."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import base_config

ROOT = Path(__file__).resolve().parents[1]


def test_importing_the_package_loads_no_model_library():
    code = ("import sys, pargs_batch as pb; assert callable(pb.generate) and callable(pb.evaluate) and callable(pb.compare); "
            "pb.CompareConfig; "
            "print(sorted(m for m in ('torch', 'vllm', 'transformers', 'ray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_configs_from_yaml_and_dicts_with_overrides_are_equal(world, tmp_path):
    import pargs_batch as pb

    cfg = base_config(world, tmp_path)
    path = tmp_path / "my.yaml"
    path.write_text(yaml.safe_dump(cfg))
    from_yaml = pb.GenerateConfig.from_yaml(path, ["decode.beta=3.0"])
    from_dict = pb.GenerateConfig.from_dict(cfg, decode={"beta": 3.0})
    dotted = pb.GenerateConfig.from_dict(cfg, **{"decode.beta": 3.0})
    assert from_yaml == from_dict == dotted and from_dict.decode.beta == 3.0
    assert from_dict.decode.top_k == 10  # a section override keeps the keys it does not name
    assert pb.GenerateConfig.from_dict(yaml.safe_load(from_dict.to_yaml())) == from_dict
    changed = from_dict.with_overrides(decode={"method": "topk"}, output={"path": str(tmp_path / "b")})
    assert (changed.decode.method, changed.decode.beta, from_dict.decode.method) == ("topk", 3.0, "pargs")


@pytest.mark.parametrize("override, key", [
    ({"decode": {"beta": "high"}}, "decode.beta"),
    ({"decode": {"top_k": 0}}, "decode.top_k"),
    ({"decoder": {"beta": 1.0}}, "decoder"),
    ({"data.source": "/no/such/file.jsonl"}, "data.source"),
])
def test_a_bad_value_raises_a_config_error_naming_the_key_before_any_model_loads(world, tmp_path, override, key):
    import pargs_batch as pb

    with pytest.raises(pb.ConfigError) as error:
        pb.generate(base_config(world, tmp_path), progress=False, **override)
    assert error.value.key == key and str(error.value).startswith(f"config error: {key}=")


def test_with_a_models_cache_the_data_is_checked_before_it_loads_anything(world, tmp_path):
    import pargs_batch as pb

    models = pb.Models()
    with pytest.raises(pb.ConfigError, match=r"data\.prompt_column='nope' .*no such column; available: id, prompt"):
        pb.generate(base_config(world, tmp_path), models=models, data={"prompt_column": "nope"}, progress=False)
    assert models.engines == {} and models.scorers == {} and not (tmp_path / "out").exists()


def test_overrides_merge_into_sections_and_replace_mappings_that_are_values(world, tmp_path):
    import pargs_batch as pb

    cfg = base_config(world, tmp_path)
    cfg["ray"] = {"engine_resources": {"num_cpus": 1, "num_gpus": 1}}
    cfg["output"] = None  # a section left empty in YAML
    config = pb.GenerateConfig.from_dict(cfg, ray={"engine_resources": {"num_cpus": 2}},
                                         **{"output.path": str(tmp_path / "x")})
    assert config.ray.engine_resources == {"num_cpus": 2} and config.output.path == str(tmp_path / "x")
    assert config.ray.num_workers == 1 and config.decode.beta == 2.0


@pytest.mark.slow
def test_generate_read_output_and_evaluate_as_a_user_calls_them(world, tmp_path, models):
    """(With this worker's engine already loaded, ``models=``: the CLI's tests load their own through
    the same call.)"""
    import pargs_batch as pb

    config = base_config(world, tmp_path, data={"limit": 6}, decode={"max_new_tokens": 8})
    summary = pb.generate(config, progress=False, models=models, output={"path": str(tmp_path / "pargs")})
    assert isinstance(summary, pb.RunSummary) and summary.rows == 6 and summary.error_rows == 0
    rows = pb.read_output(summary.output).to_pandas()
    assert len(rows) == 6 and set(rows["method"]) == {"pargs"} and rows["num_tokens"].max() <= 8

    report = pb.evaluate({"runs": [summary.output], "labels": ["pargs"], "output_dir": str(tmp_path / "eval"),
                          "reward": {"path": world["reward_model_init"]}}, progress=False)
    run = report["runs"]["pargs"]
    assert run["rows"] == 6 and run["error_rows"] == 0 and run["reward"]["mean"] is not None
    assert (tmp_path / "eval" / "report.md").exists()


def test_the_cli_commands_call_the_python_api():
    """generate, evaluate and compare reach the library through pargs_batch.api, not the functions below it."""
    tree = ast.parse((ROOT / "pargs_batch" / "cli.py").read_text())
    called = {node.func.attr for node in ast.walk(tree)
              if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and isinstance(node.func.value, ast.Name) and node.func.value.id == "api"}
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert {"generate", "evaluate", "compare"} <= called
    assert not imported & {"run_generate", "run_evaluate", "run_compare", "compare_runs"}
