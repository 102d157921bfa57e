"""reward.input: how the reward model reads (context, response) - a template's text, a segment pair
(tokenizer(prompt, response), as OpenAssistant's DeBERTa RMs were trained) or a conversation rendered
by the RM tokenizer's chat template - each against the model's own forward on what it should read."""

import numpy as np
import pytest
import torch
from helpers import base_config

from pargs_batch.config import GenerateConfig, RewardConfig
from pargs_batch.configlib import ConfigError, build
from pargs_batch.generation import run_generate
from pargs_batch.rewards.hf import HFRewardScorer

PROMPT, RESPONSES = "review of the cafe :", [" staff was lovely", " food was stale , music was noisy", ""]


def forward(scorer, **enc):
    with torch.no_grad():
        return float(scorer.model(**{k: torch.tensor([v]) for k, v in enc.items()}).logits[0, 0])


@pytest.fixture(scope="module")
def pair_scorer(world):
    return HFRewardScorer(RewardConfig(path=world["reward_model"], input="pair"))


@pytest.fixture(scope="module")
def chat_scorer(chat_world):
    return HFRewardScorer(RewardConfig(path=chat_world["reward_model"], input="chat"))


def test_pair_input_is_the_tokenizers_segment_pair(pair_scorer, scorer):
    tok = pair_scorer.tokenizer
    got = pair_scorer.score([PROMPT] * 3, RESPONSES)
    for r, g in zip(RESPONSES, got):
        enc = {k: v[0] for k, v in tok([PROMPT], [r]).items()}  # an empty response is still a segment
        assert tok.convert_ids_to_tokens(enc["input_ids"]).count("[SEP]") == 2  # [CLS] p [SEP] r [SEP]
        assert np.isclose(g, forward(pair_scorer, **enc), atol=1e-4)
    # the same model reading one joined text sees other tokens, and scores otherwise
    assert not np.allclose(got[:2], scorer.score([PROMPT] * 2, RESPONSES[:2]), atol=1e-3)


def test_pair_input_cuts_the_prompt_from_the_left_and_keeps_the_response(world):
    short = HFRewardScorer(RewardConfig(path=world["reward_model"], input="pair", max_length=16))
    long_prompt = "review of this book : " * 30 + PROMPT
    (got,) = short.score([long_prompt], [RESPONSES[0]])
    enc = short.encode([long_prompt], [RESPONSES[0]])
    ids = enc["input_ids"][0]
    text = short.tokenizer.decode(ids)
    assert len(ids) == 16 and text.endswith("[SEP] staff was lovely [SEP]") and "cafe" in text
    assert np.isclose(got, forward(short, **{k: v[0] for k, v in enc.items()}), atol=1e-4)
    # a response longer than the limit on its own: both segments give way, nothing fails
    (alone,) = short.score([PROMPT], [" staff was lovely" * 20])
    assert np.isfinite(alone)


def test_a_conversation_gives_pair_and_template_inputs_its_last_user_message(pair_scorer, scorer):
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": PROMPT},
            {"role": "assistant", "content": "ok"}]
    assert np.allclose(pair_scorer.score([chat], RESPONSES[:1]), pair_scorer.score([PROMPT], RESPONSES[:1]))
    assert np.allclose(scorer.score([chat], RESPONSES[:1]), scorer.score([PROMPT], RESPONSES[:1]))


def test_chat_input_renders_the_turns_with_the_reward_tokenizers_template(chat_scorer):
    tok = chat_scorer.tokenizer
    system = [{"role": "system", "content": "be brief"}, {"role": "user", "content": PROMPT}]
    got = chat_scorer.score([PROMPT, PROMPT, system], [RESPONSES[0], RESPONSES[1], RESPONSES[0]])
    for context, r, g in ((PROMPT, RESPONSES[0], got[0]), (PROMPT, RESPONSES[1], got[1]), (system, RESPONSES[0], got[2])):
        turns = (context if isinstance(context, list) else [{"role": "user", "content": context}])
        text = tok.apply_chat_template(turns + [{"role": "assistant", "content": r}], tokenize=False)
        assert text.startswith("<|system|>" if isinstance(context, list) else "<|user|>") and "<|assistant|>" in text
        assert np.isclose(g, forward(chat_scorer, **tok(text, add_special_tokens=False)), atol=1e-4)
    assert not np.isclose(got[0], got[2], atol=1e-5)  # the system turn is read


def test_chat_input_renders_each_conversation_once_not_every_step(chat_world):
    scorer = HFRewardScorer(RewardConfig(path=chat_world["reward_model"], input="chat"))
    calls = []
    render = scorer.tokenizer.apply_chat_template
    scorer.tokenizer.apply_chat_template = lambda *a, **kw: calls.append(1) or render(*a, **kw)
    prompts = ["review of the cafe :", "review of this book :"]
    for step in range(5):  # five decode steps over two prompts, k = 3 candidates each
        scorer.score([p for p in prompts for _ in range(3)], [" staff" * step + c for _ in prompts for c in "abc"])
    assert len(calls) == 2


def test_bad_reward_inputs_fail_before_any_model_loads(world, chat_world, tmp_path):
    with pytest.raises(ConfigError, match="reward.input='bogus' .*template, pair, chat"):
        build(GenerateConfig, base_config(world, tmp_path, reward={"input": "bogus"}))
    with pytest.raises(ConfigError, match="reward.input='pair' .*causal backend"):
        build(GenerateConfig, base_config(world, tmp_path, reward={"backend": "causal", "input": "pair"}))
    # the world's DeBERTa tokenizer has no chat template
    cfg = build(GenerateConfig, base_config(world, tmp_path / "a", reward={"input": "chat"}))
    with pytest.raises(ConfigError, match=r"reward.input='chat' .*reward tokenizer .* has no chat template"):
        run_generate(cfg, progress=False)
    assert not (tmp_path / "a").exists()
