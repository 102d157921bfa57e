"""`pargs-batch compare` on models that are not the world's: the tiny chat LLM with its chat
reward model, five methods and a budget grid from one config, one engine for every run, one
evaluation (a separate evaluation RM, the gold reward, paired differences), a table and plots;
bad compare settings fail before any model loads, naming the key."""

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pargs_batch.cli import main
from pargs_batch.starter import write_starter

from helpers import base_config, doc_blocks, reader_dir, run_block

ROOT = Path(__file__).resolve().parents[1]


def user_config(world, chat_world, tmp_path) -> Path:
    """What a user has: their models, six prompts, and the config `pargs-batch init` wrote."""
    (tmp_path / "prompts.jsonl").write_text("".join(list(open(world["prompts"]))[:6]))
    out, _ = write_starter(tmp_path / "my.yaml", chat_world["llm"], chat_world["reward_model"],
                           str(tmp_path / "prompts.jsonl"))
    return out


def test_the_readme_shows_the_docs_compare_block():
    assert doc_blocks(ROOT / "docs" / "compare.md")[0] in doc_blocks(ROOT / "README.md")


@pytest.mark.slow
def test_the_docs_command_line_compare_runs_as_written(world, chat_world, tmp_path):
    """Six runs (five methods, PARGS at two k) on one engine, then one evaluation, a table and plots."""
    env = reader_dir(world, chat_world, tmp_path)
    (lang, code), _ = doc_blocks(ROOT / "docs" / "compare.md")[:2]
    printed = run_block(lang, code, tmp_path, env).stdout
    out = tmp_path / "outputs" / "compare"
    done = json.loads((out / "compare.json").read_text())
    labels = ["topk", "args", "pargs-greedy", "pargs top_k=2", "pargs top_k=5", "best-of-n"]
    assert [r["label"] for r in done["rows"]] == labels
    assert done["reference"] == "pargs top_k=2" and done["engines"] == 1  # one vLLM engine for all six
    for row in done["rows"]:
        assert row["rows"] == 8 and row["error_rows"] == 0  # 4 prompts x 2 samples
        assert row["reward"]["se"] >= 0 and row["rouge_l"] is not None and row["gold"] is None
        assert (row["reference_minus_this"] is None) == (row["label"] == "pargs top_k=2")
        # the cost each run spent: top-k reads no reward model, the guided methods do
        assert (row["reward_tokens_per_prompt"] > 0) == (row["method"] != "topk")
        assert row["wall_s_per_prompt"] > 0 and row["mean_tokens"] <= 16
    by = {r["label"]: r for r in done["rows"]}
    assert by["pargs top_k=5"]["reward_tokens_per_prompt"] > by["pargs top_k=2"]["reward_tokens_per_prompt"]
    assert by["args"]["rouge_l"] == pytest.approx(1.0)  # greedy: both samples the same reply
    # each run is an ordinary generate output with the config it ran; the override reached every run
    for label, slug in (("args", "args"), ("pargs top_k=5", "pargs_top_k5")):
        meta = pq.read_schema(next((out / "runs" / slug).glob("part-*.parquet"))).metadata
        ran = json.loads(meta[b"pargs_batch.config"])
        assert ran["decode"]["max_new_tokens"] == 16 and ran["reward"]["path"] == chat_world["reward_model"]
        assert (ran["decode"]["method"], ran["decode"]["top_k"]) == (("args", 10) if label == "args" else ("pargs", 5))
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["evaluation_model"] == world["reward_model_init"] and len(report["paired"]) == 5
    assert all(p["a"] == "pargs top_k=2" for p in report["paired"])
    assert len(done["plots"]) == 2 and all((out / "plots" / name).stat().st_size > 0 for name in done["plots"])
    table = (out / "compare.md").read_text()
    assert all(label in table for label in labels) and "pargs top_k=2 − run (reward)" in printed

    # the same command again resumes every finished run: no model loads, the same figures
    run_block(lang, code.split("\n", 1)[1], tmp_path, env)
    again = json.loads((out / "compare.json").read_text())
    assert again["engines"] == 0 and all(r["tokens_per_s"] is None for r in again["rows"])
    assert [(r["label"], r["reward"], r["rouge_l"]) for r in again["rows"]] == \
        [(r["label"], r["reward"], r["rouge_l"]) for r in done["rows"]]


@pytest.mark.slow
def test_the_docs_python_compare_runs_as_written(world, chat_world, tmp_path):
    env = reader_dir(world, chat_world, tmp_path)
    (_, shell), (lang, code) = doc_blocks(ROOT / "docs" / "compare.md")[:2]
    run_block("bash", shell.splitlines()[0], tmp_path, env)  # init writes pargs.yaml
    printed = run_block(lang, code, tmp_path, env).stdout.splitlines()
    done = json.loads((tmp_path / "outputs" / "compare-beta" / "compare.json").read_text())
    assert [r["label"] for r in done["rows"]] == ["topk", "pargs beta=0.5", "pargs beta=2"]
    assert [line.split()[0] for line in printed[-3:]] == ["topk", "pargs", "pargs"]


def test_a_plan_is_each_method_at_the_configs_settings_or_at_each_budget(world, tmp_path):
    from pargs_batch.comparison.config import CompareConfig, plan_runs, run_configs
    from pargs_batch.config import GenerateConfig

    config = GenerateConfig.from_dict(base_config(world, tmp_path))
    spec = CompareConfig.from_dict({
        "methods": ["topk", "args", "blockwise"], "evaluation": {"gold_reward": "experiments.world.tiny:gold_reward"},
        "budgets": {"blockwise": {"block_tokens": [4, 8], "n_candidates": [2, 4]}},
        "rewards": {"args": world["reward_model_init"], "blockwise": {"path": world["reward_model"], "batch_size": 8}}})
    runs = plan_runs(config, spec)
    assert [r.label for r in runs] == ["topk", "args", "blockwise block_tokens=4 n_candidates=2",
                                       "blockwise block_tokens=4 n_candidates=4", "blockwise block_tokens=8 n_candidates=2",
                                       "blockwise block_tokens=8 n_candidates=4"]
    configs = run_configs(config, runs, tmp_path / "cmp", overwrite=False)
    assert configs["args"].reward.path == world["reward_model_init"]
    # given by its path, read as its checkpoint says, not with the config's keys for another model
    assert (configs["args"].reward.input, configs["args"].reward.dtype) == ("auto", "auto")
    assert configs["topk"].reward.path == "" and configs["topk"].data.weights_column is None  # unguided: no RM
    last = configs["blockwise block_tokens=8 n_candidates=4"]
    assert (last.decode.block_tokens, last.decode.n_candidates, last.reward.batch_size) == (8, 4, 8)
    assert last.decode.beta == config.decode.beta and last.data == config.data  # the rest is the config's
    assert last.output.path == str(tmp_path / "cmp" / "runs" / "blockwise_block_tokens8_n_candidates4")

    # a method's own reward model replaces an ensemble, read by the hf backend unless its entry says
    causal = GenerateConfig.from_dict(base_config(world, tmp_path, data={"weights_column": "w"}), reward={
        "path": "", "models": [{"path": world["reward_model"]}, {"path": world["reward_model_init"]}]})
    spec = CompareConfig.from_dict({"methods": ["topk", "args"], "rewards": {"args": world["reward_model"]},
                                    "evaluation": {"gold_reward": "experiments.world.tiny:gold_reward"}})
    configs = run_configs(causal, plan_runs(causal, spec), tmp_path / "cmp2", overwrite=False)
    assert configs["args"].reward.models == [] and configs["args"].reward.backend == "hf"
    assert configs["args"].data.weights_column is None
    assert configs["topk"].data.weights_column is None and configs["topk"].reward.models == []


def test_the_table_of_a_one_prompt_run_says_it_has_no_standard_error():
    from pargs_batch.comparison.tables import format_table

    row = {"label": "pargs", "group": "pargs", "reward": {"mean": 0.5, "se": None}, "gold": None, "rouge_l": None, "mean_tokens": 3.0,
           "reward_tokens_per_prompt": 10.0, "wall_s_per_prompt": 0.1, "tokens_per_s": None,
           "reference_minus_this": None, "judge_win_tie": None}
    assert "0.500 ± —" in format_table([row], "pargs")


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
    # what the evaluation would refuse after every run was made is refused before any is
    (["--eval-reward", "{rm_init}", "compare.evaluation.judge.base_url=http://127.0.0.1:9/v1"],
     "evaluation.judge.model=''"),
    (["--eval-reward", "{rm_init}", "compare.evaluation.judge.base_url=http://127.0.0.1:9/v1",
      "compare.evaluation.judge.model=m", "compare.evaluation.judge.api_key_env=PARGS_NO_SUCH_KEY"],
     "evaluation.judge.api_key_env='PARGS_NO_SUCH_KEY'"),
    (["--eval-reward", "{rm_init}", "compare.evaluation.paired=[[topk, nope]]"], "evaluation.paired=['topk', 'nope']"),
])
def test_bad_compare_settings_fail_before_any_model_loads(world, chat_world, tmp_path, capfd, argv, message):
    config = user_config(world, chat_world, tmp_path)
    argv = [a.format(rm=chat_world["reward_model"], rm_init=world["reward_model_init"]) for a in argv]
    assert main(["compare", "--config", str(config), "--out", str(tmp_path / "cmp"), *argv]) == 2
    err = capfd.readouterr().err
    assert message in err and err.count("config error") == 1
    assert not (tmp_path / "cmp" / "runs").exists()


def test_reward_model_seeds_run_each_guided_method_per_seed_and_the_table_pairs_on_seed(world, tmp_path):
    """Three seeds of the config's reward model: top-k runs once, every guided run once per seed; the
    table over seeds pairs the reference with each method on seed and prompt (top-k with every seed),
    from the evaluation's per-prompt means, and says where a difference changes sign between seeds."""
    import pyarrow as pa

    from pargs_batch.comparison.config import CompareConfig, plan_runs, reference_group, reference_pairs, run_configs
    from pargs_batch.comparison.tables import format_seed_table, judge_seed_rows, seed_rows
    from pargs_batch.config import GenerateConfig

    config = GenerateConfig.from_dict(base_config(world, tmp_path))
    seeds = [world["reward_model_init"], world["reward_model"]]
    spec = CompareConfig.from_dict({"methods": ["topk", "pargs-greedy", "pargs"], "reward_seeds": seeds,
                                    "evaluation": {"gold_reward": "experiments.world.tiny:gold_reward"}})
    runs = plan_runs(config, spec)
    assert [r.label for r in runs] == ["topk"] + [f"{m} seed={s}" for m in ("pargs-greedy", "pargs") for s in range(3)]
    configs = run_configs(config, runs, tmp_path / "cmp", overwrite=False)
    assert [configs[f"pargs seed={s}"].reward.path for s in range(3)] == [world["reward_model"]] + seeds
    group = reference_group(runs, None)
    assert group == "pargs" and reference_pairs(runs, group) == [
        [f"pargs seed={s}", "topk"] for s in range(3)] + [[f"pargs seed={s}", f"pargs-greedy seed={s}"] for s in range(3)]

    # the evaluation's per-prompt means, made up: pargs-greedy beats pargs under seeds 0 and 1, not 2
    rng = np.random.default_rng(0)
    prompts = [f"p{i}" for i in range(40)]
    base = rng.normal(size=40)
    gold = {"topk": base - 1.0}
    for s, shift in enumerate((0.5, 0.6, -0.3)):
        gold[f"pargs seed={s}"] = base + rng.normal(scale=0.1, size=40)
        gold[f"pargs-greedy seed={s}"] = gold[f"pargs seed={s}"] + shift
    rows = [{"run": run, "id": i, "samples": 1, "reward": None, "gold": float(v)}
            for run, values in gold.items() for i, v in zip(prompts, values)]
    rows.append({"run": "topk", "id": "only-topk", "samples": 1, "reward": None, "gold": 9.0})  # not shared
    (tmp_path / "report").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "report" / "prompts.parquet")

    table = {r["group"]: r for r in seed_rows(runs, tmp_path / "report", group, "gold")}
    assert [(g, r["seeds"]) for g, r in table.items()] == [("topk", 1), ("pargs-greedy", 3), ("pargs", 3)]
    greedy = table["pargs-greedy"]["reference_minus_this"]
    assert greedy["seed_diffs"] == pytest.approx([-0.5, -0.6, 0.3]) and greedy["changes_sign"]
    assert greedy["interval"][0] < 0 < greedy["interval"][1]  # one seed in three disagrees: not settled
    topk = table["topk"]["reference_minus_this"]
    assert topk["seeds"] == 3 and topk["prompts"] == 40 and not topk["changes_sign"]
    assert topk["interval"][0] > 0.5  # pargs beats top-k under every seed
    assert table["pargs"]["gold"]["seeds"] == 3 and len(table["pargs"]["gold"]["seed_means"]) == 3
    text = format_seed_table(list(table.values()), group, "gold")
    assert "(sign changes)" in text and "reference" in text.splitlines()[3]

    # the judge's verdicts, made up: pargs wins or ties against top-k on 30 of 40 prompts under every
    # seed pair; against pargs-greedy on 10, 12 and 40 - and one invalid verdict drops its prompt
    verdicts = []
    for s, greedy_wins in enumerate((10, 12, 40)):
        for b, good in (("topk", 30), (f"pargs-greedy seed={s}", greedy_wins)):
            verdicts += [{"a": f"pargs seed={s}", "b": b, "id": i, "outcome": ("win" if k % 2 else "tie") if k < good
                          else "loss"} for k, i in enumerate(prompts)]
    verdicts[0]["outcome"] = "invalid"  # pargs seed=0 against top-k, prompt p0
    pq.write_table(pa.Table.from_pylist(verdicts), tmp_path / "report" / "judge.parquet")
    judged = judge_seed_rows(runs, tmp_path / "report", group)
    assert set(judged) == {"topk", "pargs-greedy"}
    topk = judged["topk"]
    assert (topk["seeds"], topk["invalid"], topk["win"] + topk["tie"], topk["loss"]) == (3, 1, 89, 30)
    assert topk["win_tie"]["prompts"] == 39 and topk["win_tie"]["mean"] == pytest.approx(29 / 39)
    assert topk["win_tie"]["seed_sd"] == 0 and topk["win_tie"]["interval"][0] > 0.5
    greedy = judged["pargs-greedy"]["win_tie"]
    assert greedy["seed_means"] == pytest.approx([0.25, 0.3, 1.0]) and greedy["interval"][0] < 0.5 < greedy["interval"][1]
    for row in table.values():
        row["judge"] = judged.get(row["group"])
    text = format_seed_table(list(table.values()), group, "gold")
    assert "judge: ref. win-tie %" in text.splitlines()[0] and " 74 [" in text.splitlines()[1]


@pytest.mark.slow
def test_pb_compare_over_two_reward_model_seeds_end_to_end(world, tmp_path):
    """The Python call on the tiny world's LLM with two 'seeds' of its reward model (the trained one and
    the untrained one: seeds that disagree as much as two can): top-k once, pargs per seed, the table
    over seeds written to compare.json and compare.md."""
    import pargs_batch as pb

    cfg = base_config(world, tmp_path, data={"limit": 8}, decode={"max_new_tokens": 8, "num_samples": 2})
    cfg["model"]["enforce_eager"] = True
    result = pb.compare(cfg, methods=["topk", "pargs"], reward_seeds=[world["reward_model_init"]],
                        evaluation={"gold_reward": "experiments.world.tiny:gold_reward"},
                        output_dir=str(tmp_path / "cmp"), progress=False)
    assert [r["label"] for r in result["rows"]] == ["topk", "pargs seed=0", "pargs seed=1"]
    assert result["engines"] == 1 and result["reference"] == "pargs"
    over = {r["group"]: r for r in result["over_seeds"]}
    assert over["pargs"]["seeds"] == 2 and over["topk"]["seeds"] == 1
    pargs = over["pargs"]["gold"]
    assert pargs["prompts"] == 8 and pargs["seed_means"] == pytest.approx(
        [result["rows"][1]["gold"]["mean"], result["rows"][2]["gold"]["mean"]])
    diff = over["topk"]["reference_minus_this"]
    assert diff["seeds"] == 2 and len(diff["seed_diffs"]) == 2 and diff["interval"] is not None
    assert "seed means" in (tmp_path / "cmp" / "compare.md").read_text()


def test_best_of_n_takes_the_full_sequence_model_given_for_args_unless_it_has_its_own(world, tmp_path):
    from pargs_batch.comparison.config import CompareConfig, plan_runs, run_configs
    from pargs_batch.config import GenerateConfig

    config = GenerateConfig.from_dict(base_config(world, tmp_path, reward={"input": "template", "dtype": "float32"}))
    gold = {"gold_reward": "experiments.world.tiny:gold_reward"}
    spec = CompareConfig.from_dict({"methods": ["pargs", "args", "best-of-n"], "evaluation": gold,
                                    "rewards": {"args": world["reward_model_init"]}})
    configs = run_configs(config, plan_runs(config, spec), tmp_path / "a", overwrite=False)
    assert configs["best-of-n"].reward.path == configs["args"].reward.path == world["reward_model_init"]
    assert configs["pargs"].reward.path == config.reward.path
    assert (configs["pargs"].reward.input, configs["pargs"].reward.dtype) == ("template", "float32")  # the config's
    spec = CompareConfig.from_dict({"methods": ["args", "best-of-n"], "evaluation": gold,
                                    "rewards": {"args": world["reward_model_init"], "best-of-n": world["reward_model"]}})
    configs = run_configs(config, plan_runs(config, spec), tmp_path / "b", overwrite=False)
    assert configs["best-of-n"].reward.path == world["reward_model"]
