"""Chat models: prompts rendered by the LLM tokenizer's chat template, and one set of ids that end a
turn (the tokenizer's EOS and generation_config's) in every mode, on a tiny Llama-architecture
chat model built offline (experiments/world/chat.py) whose replies end in either of two ids."""

import json

import numpy as np
import pytest
from helpers import base_config

from pargs_batch.config import GenerateConfig, RewardConfig
from pargs_batch.configlib import ConfigError, build
from pargs_batch.generation import run_generate
from pargs_batch.io.output import read_output

pytestmark = pytest.mark.slow


def chat_config(world, chat_world, path, mode, method, **data):
    cfg = base_config(world, path, engine={"mode": mode}, data={"chat_template": True, "limit": 24, **data},
                      decode={"method": method, "max_new_tokens": 48, "num_samples": 2})
    cfg["model"] = {"path": chat_world["llm"], "dtype": "float32", "max_model_len": 256,
                    "kv_cache_memory_bytes": 64 << 20}
    return build(GenerateConfig, cfg)


@pytest.fixture(scope="module")
def chat_models():
    from pargs_batch.models.loading import Models

    with Models() as models:
        yield models


@pytest.fixture(scope="module")
def chat_runs(world, chat_world, chat_models, tmp_path_factory):
    """Every mode on the chat model: stepped (greedy and sampled), best-of-n, fused (greedy and sampled)."""
    tmp = tmp_path_factory.mktemp("chat-runs")
    runs = {}
    for name, mode, method in (("stepped-greedy", "stepped", "pargs-greedy"), ("stepped-topk", "stepped", "topk"),
                               ("best-of-n", "stepped", "best-of-n"), ("fused-greedy", "fused", "pargs-greedy"),
                               ("fused-sampled", "fused", "pargs")):
        cfg = chat_config(world, chat_world, tmp / name, mode, method)
        run_generate(cfg, models=chat_models.for_config(cfg), progress=False)
        runs[name] = read_output(cfg.output.path).to_pylist()
    return runs


def test_every_mode_stops_on_either_end_id_and_never_runs_past_one(chat_runs, chat_world):
    ends = {chat_world["end_id"], chat_world["eot_id"]}
    enders = set()
    for name, rows in chat_runs.items():
        assert len(rows) == 48 and all(r["error"] is None for r in rows), name
        for r in rows:
            ids = r["response_token_ids"]
            assert not ends & set(ids[:-1]), (name, ids)  # nothing generated past an end id
            if r["finish_reason"] == "eos":
                assert ids[-1] in ends
                enders.add(ids[-1])
        assert sum(r["finish_reason"] == "eos" for r in rows) >= 40, name
    assert enders == ends  # both ids ended replies: a mode stopping on only one would have run on


def test_the_modes_agree_and_the_stored_prompt_is_the_users(chat_runs, world):
    stepped, fused = chat_runs["stepped-greedy"], chat_runs["fused-greedy"]
    assert [r["response_token_ids"] for r in stepped] == [r["response_token_ids"] for r in fused]
    users = {json.loads(line)["id"]: json.loads(line)["prompt"] for line in open(world["prompts"])}
    for r in chat_runs["stepped-topk"]:
        assert r["prompt"] == users[r["id"]] and "<|user|>" not in r["prompt"]


def test_a_messages_column_is_rendered_and_a_bad_cell_is_an_error_row(world, chat_world, tmp_path, chat_models):
    source = tmp_path / "chats.jsonl"
    rows = [{"id": "a", "messages": [{"role": "system", "content": "be brief"},
                                     {"role": "user", "content": "review of the cafe :"}]},
            {"id": "b", "messages": "review of the cafe :"},  # not a conversation
            {"id": "c", "messages": [{"role": "user"}]}]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = chat_config(world, chat_world, tmp_path / "out", "stepped", "topk", source=str(source),
                      messages_column="messages", chat_template=False, limit=None)
    run_generate(cfg, models=chat_models.for_config(cfg), progress=False)
    out = {(r["id"], r["sample_index"]): r for r in read_output(cfg.output.path).to_pylist()}
    assert out[("a", 0)]["error"] is None and out[("a", 0)]["prompt"] == "review of the cafe :"
    for bad in ("b", "c"):
        assert out[(bad, 0)]["finish_reason"] == "error" and "messages must be" in out[(bad, 0)]["error"]


def test_a_chat_run_with_a_tokenizer_without_a_template_fails_before_any_model_loads(world, tmp_path):
    cfg = build(GenerateConfig, base_config(world, tmp_path, data={"chat_template": True}))
    with pytest.raises(ConfigError, match="data.chat_template=True .*has no chat template"):
        run_generate(cfg, progress=False)


def test_a_chat_reward_model_reads_the_conversation_in_both_modes(world, chat_world, chat_models, tmp_path):
    """reward.input: chat - the stepped loop and the fused processor (its context travels in the
    request's extra_args) give the same greedy tokens, and each row's rewards re-score its prefixes
    rendered by the RM's chat template."""
    from pargs_batch.rewards.hf import HFRewardScorer

    runs = {}
    for mode in ("stepped", "fused"):
        cfg = chat_config(world, chat_world, tmp_path / mode, mode, "pargs-greedy", limit=6)
        cfg = build(GenerateConfig, {**cfg.to_dict(), "reward": {"path": chat_world["reward_model"], "input": "chat",
                                                                 "batch_size": 16}})
        run_generate(cfg, models=chat_models.for_config(cfg), progress=False)
        runs[mode] = read_output(cfg.output.path).to_pylist()
    stepped, fused = runs["stepped"], runs["fused"]
    assert [r["response_token_ids"] for r in stepped] == [r["response_token_ids"] for r in fused]
    assert np.allclose([x for r in stepped for x in r["rewards"]], [x for r in fused for x in r["rewards"]], atol=1e-4)
    scorer = HFRewardScorer(RewardConfig(path=chat_world["reward_model"], input="chat"))
    tok = chat_models.tokenizer(chat_world["llm"])
    for r in stepped[:4]:
        ids = r["response_token_ids"]
        prefixes = [tok.decode(ids[:n], skip_special_tokens=True) for n in range(1, len(ids) + 1)]
        assert np.allclose(r["rewards"], scorer.score([r["prompt"]] * len(ids), prefixes), atol=1e-4)


def test_hh_transcripts_are_answered_as_conversations_and_an_hh_reward_model_reads_them_whole(
        world, chat_world, chat_models, tmp_path):
    """data.format: hh - the prompt is the conversation before the last reply, rendered by the LLM's chat
    template - and a reward model that records it was trained on HH transcripts (as rm_training's hh
    format writes) is read with reward.input auto as an HH transcript of the whole conversation."""
    import shutil

    from pargs_batch.io.contexts import hh_prompt
    from pargs_batch.rewards.reading import hh_reply, hh_transcript
    from pargs_batch.rewards.hf import HFRewardScorer

    prompts = [json.loads(line)["prompt"] for line in open(world["prompts"])][:4]
    transcripts = [f"\n\nHuman: hello\n\nAssistant: hi !\n\nHuman: {p}\n\nAssistant: a stored reply ." for p in prompts]
    source = tmp_path / "hh.jsonl"
    source.write_text("".join(json.dumps({"chosen": t, "rejected": t + " no"}) + "\n" for t in transcripts))
    rm = tmp_path / "hh-rm"
    shutil.copytree(world["reward_model"], rm)
    config = json.loads((rm / "config.json").read_text())
    config["pargs_batch_input"] = {"input": "hh", "template": "{prompt}{response}"}
    (rm / "config.json").write_text(json.dumps(config))

    cfg = chat_config(world, chat_world, tmp_path / "out", "stepped", "pargs-greedy", source=str(source),
                      format="hh", chat_template=False, system_prompt="be brief", limit=None, id_column=None)
    cfg = build(GenerateConfig, {**cfg.to_dict(), "reward": {"path": str(rm), "batch_size": 16}})
    run_generate(cfg, models=chat_models.for_config(cfg), progress=False)
    rows = read_output(cfg.output.path).to_pylist()
    assert len(rows) == 8 and all(r["error"] is None for r in rows)
    assert sorted({r["prompt"] for r in rows}) == sorted(prompts)  # the last human turn, not the transcript
    as_trained = HFRewardScorer(RewardConfig(path=str(rm), input="template"))  # the text it was trained on
    tok = chat_models.tokenizer(chat_world["llm"])
    for r in rows[:4]:
        conversation = hh_prompt(transcripts[prompts.index(r["prompt"])])
        ids = r["response_token_ids"]
        prefixes = [tok.decode(ids[:n], skip_special_tokens=True) for n in range(1, len(ids) + 1)]
        texts = [hh_transcript(conversation) + hh_reply(p) for p in prefixes]
        assert np.allclose(r["rewards"], as_trained.score(texts, [""] * len(texts)), atol=1e-4)
