"""`pargs-batch compare` on models that are not the world's: the tiny chat LLM with its chat
reward model, five methods and a budget grid from one config, one engine for every run, one
evaluation (a separate evaluation RM, the gold reward, paired differences), a table and plots;
bad compare settings fail before any model loads, naming the key."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pargs_batch.cli import main
from pargs_batch.starter import write_starter

CLI = str(Path(sys.executable).parent / "pargs-batch")


def user_config(world, chat_world, tmp_path) -> Path:
    """What a user has: their models, six prompts, and the config `pargs-batch init` wrote."""
    (tmp_path / "prompts.jsonl").write_text("".join(list(open(world["prompts"]))[:6]))
    out, _ = write_starter(tmp_path / "my.yaml", chat_world["llm"], chat_world["reward_model"],
                           str(tmp_path / "prompts.jsonl"))
    return out


@pytest.mark.slow
def test_compare_runs_methods_and_budgets_on_one_engine_then_one_evaluation(world, chat_world, tmp_path):
    config = user_config(world, chat_world, tmp_path)
    # ARGS guided by another reward model (a plain-text one), as its paper has a full-sequence RM
    (tmp_path / "compare.yaml").write_text(yaml.safe_dump({
        "rewards": {"args": {"path": world["reward_model"], "input": "template"}},
        "evaluation": {"reward": {"path": world["reward_model_init"]},
                       "gold_reward": "experiments.world.tiny:gold_reward"}}))
    result = subprocess.run([CLI, "compare", "--config", str(config), "--compare", str(tmp_path / "compare.yaml"),
                             "--budget", "pargs.top_k=2,5", "--out", str(tmp_path / "cmp"), "--no-progress",
                             "decode.max_new_tokens=8", "decode.num_samples=2"],
                            capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "cmp"
    done = json.loads((out / "compare.json").read_text())
    labels = ["topk", "args", "pargs-greedy", "pargs top_k=2", "pargs top_k=5", "best-of-n"]
    assert [r["label"] for r in done["rows"]] == labels
    assert done["reference"] == "pargs top_k=2" and done["engines"] == 1  # one vLLM engine for all six
    for row in done["rows"]:
        assert row["rows"] == 12 and row["error_rows"] == 0
        assert row["reward"]["se"] >= 0 and row["gold"]["mean"] is not None and row["rouge_l"] is not None
        if row["label"] == "pargs top_k=2":
            assert row["reference_minus_this"] is None
        else:
            assert set(row["reference_minus_this"]) == {"reward", "gold"}
        # the cost each run spent: top-k reads no reward model, the guided methods do
        assert (row["reward_tokens_per_prompt"] > 0) == (row["method"] != "topk")
    by = {r["label"]: r for r in done["rows"]}
    assert by["pargs top_k=5"]["reward_tokens_per_prompt"] > by["pargs top_k=2"]["reward_tokens_per_prompt"]
    # each run is an ordinary generate output, with the config it ran
    args_config = json.loads(__import__("pyarrow.parquet", fromlist=["x"]).read_schema(
        next((out / "runs" / "args").glob("part-*.parquet"))).metadata[b"pargs_batch.config"])
    assert args_config["reward"]["path"] == world["reward_model"] and args_config["decode"]["method"] == "args"
    assert (out / "report" / "report.md").exists()
    assert all((out / "plots" / name).stat().st_size > 0 for name in done["plots"]) and len(done["plots"]) == 2
    table = (out / "compare.md").read_text()
    assert all(label in table for label in labels) and "gold ± SE" in table
    assert "pargs top_k=2 − run (gold)" in result.stdout  # printed as well as written


@pytest.mark.parametrize("argv, message", [
    (["--methods", "topk,nope"], "methods='nope'"),
    (["--budget", "pargs.top_kk=2,5"], "budgets.pargs.top_kk=[2, 5]"),
    (["--budget", "blockwise.block_tokens=4"], "budgets.blockwise="),
    (["--budget", "pargs:top_k"], "--budget='pargs:top_k'"),
    (["--reward-for", "topk=x"], "rewards.topk='x'"),
    ([], "evaluation.reward.path=''"),
    (["--eval-reward", "{rm}"], "is the guidance reward model of run 'args'"),
    (["--gold-reward", "no_such_module:f"], "evaluation.gold_reward='no_such_module:f'"),
    (["--eval-reward", "{rm_init}", "--reference", "best"], "reference='best'"),
    (["--eval-reward", "{rm_init}", "decode.beta=x"], "decode.beta='x'"),
])
def test_bad_compare_settings_fail_before_any_model_loads(world, chat_world, tmp_path, capfd, argv, message):
    config = user_config(world, chat_world, tmp_path)
    argv = [a.format(rm=chat_world["reward_model"], rm_init=world["reward_model_init"]) for a in argv]
    assert main(["compare", "--config", str(config), "--out", str(tmp_path / "cmp"), *argv]) == 2
    err = capfd.readouterr().err
    assert message in err and err.count("config error") == 1
    assert not (tmp_path / "cmp" / "runs").exists()
