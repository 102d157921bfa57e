"""`pargs-batch init`: on the tiny chat model (chat template, two end ids, a conversation column, a chat
reward model) and on the plain GPT-2-style world it writes a commented config that runs (the chat one
is run as written by tests/test_quickstart.py);
an rm_training model's own input format wins over the tokenizer's guess; bad flags exit 2."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import pargs_batch as pb
from pargs_batch.starter import inspect, write_starter

CLI = str(Path(sys.executable).parent / "pargs-batch")


def four_prompts(world, path, messages=False):
    rows = [json.loads(line) for line in open(world["prompts"])][:4]
    if messages:
        rows = [{"uid": r["id"], "messages": [{"role": "user", "content": r["prompt"]}]} for r in rows]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_init_on_the_chat_model_names_its_conversations_end_ids_and_chat_reward_model(world, chat_world, tmp_path):
    data = four_prompts(world, tmp_path / "chats.jsonl", messages=True)
    out = tmp_path / "pargs.yaml"
    made = subprocess.run([CLI, "init", "--llm", chat_world["llm"], "--reward", chat_world["reward_model"],
                           "--data", data, "--out", str(out)], capture_output=True, text=True, timeout=1800)
    assert made.returncode == 0, made.stderr[-2000:]
    text = out.read_text()
    cfg = yaml.safe_load(text)
    assert cfg["data"] == {"source": data, "messages_column": "messages", "id_column": "uid"}
    assert cfg["reward"]["input"] == "chat" and cfg["decode"]["method"] == "pargs"
    # the end ids are named, with why each choice was made
    assert f"<|end_of_text|> ({chat_world['end_id']}), <|eot|> ({chat_world['eot_id']})" in text
    assert "chat template" in text and "unique in the 4 rows read" in text

    assert pb.GenerateConfig.from_yaml(out).data.chat  # it loads; tests/test_quickstart.py runs one as written


@pytest.mark.slow
def test_init_on_a_plain_model_picks_the_prompt_column_and_runs(world, tmp_path, models):
    data = four_prompts(world, tmp_path / "prompts.jsonl")
    path, found = write_starter(tmp_path / "plain.yaml", world["llm"], world["reward_model"], data)
    assert (found.llm_chat_template, found.prompt_column, found.id_column) == (False, "prompt", "id")
    # trained on joined text, and its config.json says so: read as trained, not as the segment pair its
    # DeBERTa tokenizer could build (tests/test_data_formats.py: an unrecorded one reads as a pair)
    assert found.reward_input == "template" and "as it was trained" in found.reward_why
    config = pb.GenerateConfig.from_yaml(path, [f"output.path={tmp_path / 'run'}"])
    assert not config.data.chat and config.ray.enabled is False and config.reward.input == "template"
    summary = pb.generate(config, models=models, progress=False)
    assert summary.rows == 4 and summary.error_rows == 0

    # without a reward model: top-k sampling, and the file says how to add one
    path, _ = write_starter(tmp_path / "topk.yaml", world["llm"], None, data)
    assert pb.GenerateConfig.from_yaml(path).decode.method == "topk" and "# reward:" in path.read_text()


def test_a_conversation_is_one_with_a_user_turn_to_answer():
    from pargs_batch.starter import is_conversation

    user, reply = {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}
    # a chat dataset's stored reply at the end is left out when generating
    assert is_conversation([user]) and is_conversation([user, reply]) and not is_conversation([reply])
    assert not is_conversation([]) and not is_conversation("hi") and not is_conversation([{"role": "user"}])


def test_a_trained_reward_models_own_input_format_wins(world, tmp_path):
    import shutil

    rm = tmp_path / "rm"
    shutil.copytree(world["reward_model"], rm)
    config = json.loads((rm / "config.json").read_text())
    config["pargs_batch_input"] = {"input": "template", "template": "Q: {prompt} A: {response}"}
    (rm / "config.json").write_text(json.dumps(config))
    found = inspect(world["llm"], str(rm), four_prompts(world, tmp_path / "p.jsonl"))
    assert (found.reward_input, found.reward_template) == ("template", "Q: {prompt} A: {response}")


@pytest.mark.parametrize("flag, value, message", [
    ("--llm", "/no/such/model", "config error: --llm='/no/such/model' is not allowed: no such directory"),
    ("--data", "/no/such/prompts.jsonl", "config error: --data='/no/such/prompts.jsonl' is not allowed: no such file"),
])
def test_bad_flags_exit_2_naming_the_flag(world, tmp_path, capfd, flag, value, message):
    from pargs_batch.cli import main

    args = {"--llm": world["llm"], "--data": world["prompts"], "--out": str(tmp_path / "x.yaml"), flag: value}
    assert main(["init", *[x for kv in args.items() for x in kv]]) == 2
    assert message in capfd.readouterr().err and not (tmp_path / "x.yaml").exists()


def test_an_existing_file_is_kept_without_force(world, tmp_path):
    out = tmp_path / "mine.yaml"
    out.write_text("# mine\n")
    with pytest.raises(pb.ConfigError, match="--force replaces it"):
        write_starter(out, world["llm"], None, world["prompts"])
    assert out.read_text() == "# mine\n"


def test_a_hub_dataset_is_streamed_for_its_first_rows(tmp_path):
    """A dataset name (here a local dataset directory, read by `datasets.load_dataset` as a hub id
    would be) is read in streaming mode: its first rows, not the whole split."""
    from pargs_batch.starter import SAMPLE_ROWS, first_records

    (tmp_path / "ds").mkdir()
    rows = [{"id": f"q{i}", "question": f"question number {i}"} for i in range(SAMPLE_ROWS + 50)]
    (tmp_path / "ds" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = first_records(str(tmp_path / "ds"), "train")
    assert records == rows[:SAMPLE_ROWS]
    with pytest.raises(pb.ConfigError, match=r"--data=.*could not load it as a Hugging Face dataset"):
        first_records(str(tmp_path / "no-such-dataset"), "train")
