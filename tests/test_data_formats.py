"""The data people have, read without writing code: HH-RLHF transcripts, chat datasets' messages,
AlpacaEval's JSON arrays, a system prompt; how reward models read what they were trained on."""

import json
import logging

import pytest
import yaml

from pargs_batch.config import DataConfig, RayConfig, RewardConfig
from pargs_batch.configlib import ConfigError
from pargs_batch.io.contexts import hh_prompt, hh_turns
from pargs_batch.rewards.reading import hh_reply, hh_transcript
from pargs_batch.io.prompts import PromptSource
from rm_training.data import conversation_sides, reading, to_triples

HH = "\n\nHuman: hi there\n\nAssistant: hello!\n\nHuman: what is 2+2?\n\nAssistant: It is 4."


def rows(tmp_path, records, name="p.jsonl", **config):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    source = PromptSource(DataConfig(source=str(path), **config))
    return [row for batch in source.batches(64) for row in batch]


def test_an_hh_transcript_is_its_turns_and_its_prompt_the_turns_before_the_last_reply():
    assert hh_turns(HH) == [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "hello!"},
                            {"role": "user", "content": "what is 2+2?"}, {"role": "assistant", "content": "It is 4."}]
    prompt = hh_prompt(HH)
    assert prompt == hh_turns(HH)[:3]
    # written back as the dataset writes it: the transcript up to the last "Assistant:", the reply after a space
    assert hh_transcript(prompt) + hh_reply("It is 4.") == HH
    assert hh_reply(" It is 4.") == " It is 4."
    with pytest.raises(ValueError):
        hh_turns("no markers")
    with pytest.raises(ValueError):
        hh_prompt("\n\nAssistant: a reply with no question")


def test_format_hh_reads_the_conversation_before_the_last_reply_and_keeps_bad_rows(tmp_path):
    got = rows(tmp_path, [{"chosen": HH, "rejected": HH.replace("4.", "5.")}, {"chosen": "plain text"},
                          {"chosen": 7}, {"rejected": HH}],
               format="hh", system_prompt="Be brief.")
    assert [r.id for r in got] == ["0", "1", "2", "3"]  # every row kept, in order
    first = got[0]
    assert first.error is None and first.prompt == "what is 2+2?"
    assert first.messages == [{"role": "system", "content": "Be brief."}] + hh_prompt(HH)
    assert "HH transcript" in got[1].error and got[1].messages is None
    assert got[2].error == "prompt must be a string, got int"
    assert got[3].error == "prompt is missing"


def test_a_messages_column_drops_the_stored_reply_and_takes_a_system_prompt(tmp_path):
    conversation = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a fruit."},
                    {"role": "assistant", "content": "Apple."}]
    got = rows(tmp_path, [{"messages": conversation}, {"messages": conversation[2:]}, {"messages": "text"}],
               messages_column="messages", system_prompt="ignored where the conversation has one")
    assert got[0].messages == conversation[:2] and got[0].prompt == "Name a fruit."
    assert got[1].error == "the conversation has no user turn to answer"
    assert got[2].error.startswith("messages must be")
    plain = rows(tmp_path, [{"prompt": "Name a fruit."}], chat_template=True, system_prompt="Be brief.")
    assert plain[0].messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a fruit."}]


def test_a_json_array_file_is_read_as_alpaca_eval_ships_it(tmp_path):
    path = tmp_path / "alpaca_eval.json"
    path.write_text(json.dumps([{"instruction": "Say hi.", "output": "hi", "generator": "gpt4", "dataset": "x"},
                                "not an object", {"instruction": ""}, {"instruction": "Name a fruit."}], indent=2))
    source = PromptSource(DataConfig(source=str(path), prompt_column="instruction"))
    assert source.columns == ["instruction", "output", "generator", "dataset"]
    got = [row for batch in source.batches(8) for row in batch]
    assert [(r.id, r.prompt, r.error) for r in got] == [
        ("0", "Say hi.", None), ("1", None, "not a JSON object (element 2)"), ("2", "", "prompt is empty"),
        ("3", "Name a fruit.", None)]
    # a .json file of JSON lines is still read line by line
    lines = tmp_path / "lines.json"
    lines.write_text('{"prompt": "a"}\n{"prompt": "b"}\n')
    assert [r.prompt for r in rows(tmp_path, [{"prompt": "a"}, {"prompt": "b"}], name="lines.json")] == ["a", "b"]
    broken = tmp_path / "broken.json"
    broken.write_text('[{"prompt": "a"},')
    with pytest.raises(ConfigError, match="data.source"):
        PromptSource(DataConfig(source=str(broken)))


@pytest.mark.parametrize("bad, key", [
    ({"format": "sharegpt"}, "data.format"),
    ({"system_prompt": "Be brief."}, "data.system_prompt"),
    ({"format": "hh", "messages_column": "messages"}, "data.messages_column"),
])
def test_bad_data_keys_fail_naming_the_key(bad, key, tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a"}\n')
    with pytest.raises(ConfigError) as e:
        DataConfig(source=str(path), **bad)
    assert e.value.key == key


def test_format_hh_defaults_to_the_chosen_column(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"chosen": "x"}\n')
    assert DataConfig(source=str(path), format="hh").prompt_column == "chosen"
    assert DataConfig(source=str(path), format="hh", prompt_column="text").prompt_column == "text"


def test_ray_keys_without_ray_warn_once(caplog):
    with caplog.at_level(logging.WARNING, logger="pargs_batch.config"):
        RayConfig(enabled=False, num_workers=7)
        RayConfig(enabled=False, num_workers=7)
        RayConfig(enabled=False)
        RayConfig(enabled=True, num_workers=3)
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "ray.num_workers=7 has no effect" in warned[0]


UF_ROW = {"prompt": "What is 2+2?",
          "chosen": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}],
          "rejected": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "5"}]}
COLUMNS = {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"}


@pytest.mark.parametrize("row", [
    UF_ROW,                                                                    # UltraFeedback: the prompt repeated
    {"chosen": UF_ROW["chosen"], "rejected": UF_ROW["rejected"]},              # TRL's implicit prompt
    {"prompt": [{"role": "user", "content": "What is 2+2?"}],                  # TRL's explicit prompt
     "chosen": [{"role": "assistant", "content": "4"}], "rejected": [{"role": "assistant", "content": "5"}]},
])
def test_every_conversational_layout_gives_the_same_sides(row):
    assert conversation_sides(row, COLUMNS) == ([{"role": "user", "content": "What is 2+2?"}], "4", "5")


def test_conversational_rows_that_are_not_preferences_are_counted_not_trained_on():
    bad = [{"chosen": "text", "rejected": UF_ROW["rejected"]},
           {"chosen": UF_ROW["chosen"] + [{"role": "user", "content": "more?"}], "rejected": UF_ROW["rejected"]},
           {"chosen": [{"role": "assistant", "content": "4"}], "rejected": [{"role": "assistant", "content": "5"}]}]
    triples, report = to_triples([UF_ROW] + bad, "conversational", COLUMNS)
    assert len(triples) == 1 and report.rows == 4
    assert report.malformed == {"chosen is not a list of messages": 1, "a side does not end in one assistant reply": 1,
                                "no user turn in the prompt": 1}
    # with no chat template to render them, conversations are written as HH transcripts
    assert triples[0].prompt == "\n\nHuman: What is 2+2?\n\nAssistant:" and triples[0].chosen == " 4"


def test_what_a_trained_model_records_follows_its_data(world):
    from transformers import AutoTokenizer

    deberta = AutoTokenizer.from_pretrained(world["reward_model"])
    assert reading("hh", "partial", deberta)["input"] == "hh"
    assert reading("generic", "full", deberta, "Q: {prompt} A: {response}") == {
        "input": "template", "template": "Q: {prompt} A: {response}"}
    assert reading("conversational", "full", deberta)["input"] == "hh"  # no chat template
    assert reading("hh", "partial-causal", deberta)["input"] == "template"  # the LLM's ids: the text as it is


def test_a_chat_tokenizer_trains_on_its_own_rendering(chat_world):
    from transformers import AutoTokenizer

    from pargs_batch.rewards.reading import chat_frame

    tokenizer = AutoTokenizer.from_pretrained(chat_world["reward_model"])
    read = reading("conversational", "partial", tokenizer)
    assert read["input"] == "chat" and not read["special_tokens"]
    triples, _ = to_triples([UF_ROW], "conversational", COLUMNS, render=read["render"])
    head, tail = chat_frame(tokenizer, [{"role": "user", "content": "What is 2+2?"}])
    # the training text is what reward.input: chat scores: the rendered conversation around the reply
    text = read["template"].format(prompt=triples[0].prompt, response=triples[0].chosen)
    assert text == head + "4" + tail


def test_reward_input_auto_asks_the_checkpoint(world, chat_world):
    from pargs_batch.rewards.reading import detect, resolved

    assert detect(world["reward_model"]).input == "template"            # recorded by the world's build
    assert detect(world["reward_model_init"]).input == "pair"           # a DeBERTa tokenizer builds segment pairs
    assert detect(chat_world["reward_model"]).input == "chat"           # a chat template that renders a reply
    given = RewardConfig(path=world["reward_model_init"], input="template")
    assert resolved(given) is given                                     # a value other than auto is used as given
    assert resolved(RewardConfig(path=world["reward_model_init"])).input == "pair"
    assert resolved(RewardConfig(path=world["llm"], backend="causal")).input == "template"


def test_init_refuses_answers_as_prompts_and_reads_hh_with_its_format(chat_world, tmp_path):
    from pargs_batch.starter import write_starter

    data = tmp_path / "hh.jsonl"
    data.write_text("".join(json.dumps({"chosen": HH, "rejected": HH.replace("4.", "5.")}) + "\n" for _ in range(3)))
    with pytest.raises(ConfigError) as e:
        write_starter(tmp_path / "a.yaml", chat_world["llm"], None, str(data))
    assert e.value.key == "--data" and "data.format: hh" in str(e.value) and "--format hh" in str(e.value)
    out, found = write_starter(tmp_path / "b.yaml", chat_world["llm"], chat_world["reward_model"], str(data), fmt="hh")
    config = yaml.safe_load(out.read_text())
    assert config["data"]["format"] == "hh" and config["data"]["prompt_column"] == "chosen"
    assert config["reward"]["input"] == "chat"
    first = [r for b in PromptSource(DataConfig(**config["data"])).batches(8) for r in b][0]
    assert first.messages == hh_prompt(HH)


def test_init_takes_a_chat_dataset_whose_conversations_end_in_the_reply(chat_world, tmp_path):
    from pargs_batch.starter import inspect

    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps({"id": i, "messages": UF_ROW["chosen"], "chosen": UF_ROW["chosen"]}) + "\n"
                            for i in range(3)))
    found = inspect(chat_world["llm"], None, str(data))
    assert found.messages_column == "messages" and found.id_column == "id"
