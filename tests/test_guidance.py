"""The fused contract (guidance.py): each dataclass survives vLLM's msgpack wire as it is, and what
arrives malformed is refused with the fields it needs, before a row is made of it."""

from types import SimpleNamespace

import msgspec
import pytest

from pargs_batch.guidance import EXTRA_KEY, GuideArgs, GuideInfo, GuideRecord, GuideSetup


def through_msgpack(value):
    """What vLLM's processes hand each other: msgpack of plain dicts and lists."""
    return msgspec.msgpack.decode(msgspec.msgpack.encode(value))


def test_each_message_crosses_msgpack_unchanged():
    args = GuideArgs(key="r/1/0", k=10, beta=2.5, guided=True, greedy=False,
                     prompt=[{"role": "user", "content": "hi"}], weights=[0.5, 1.5])
    assert GuideArgs.from_params(SimpleNamespace(extra_args=through_msgpack(args.to_wire()))) == args
    setup = GuideSetup(tokenizer="/models/llm", reward={"path": "/models/rm", "backend": "causal"})
    assert GuideSetup.from_config(through_msgpack(setup.to_wire())) == setup
    record = GuideRecord(rewards=[0.25, None, 1.0], last_token_rewards={7: 0.5, 1003: -1.25},
                         timings={"reward": 0.01, "decode": 0.002}, failed_at=None, reward_tokens=30, reward_calls=3)
    assert GuideRecord.from_wire(through_msgpack(record.to_wire())) == record
    info = GuideInfo(reward_load_s=1.5, reserved_bytes=1 << 20, largest_step={"rows": 256, "k": 10, "tokens": 512})
    assert GuideInfo.from_wire(through_msgpack(info.to_wire())) == info


def test_a_request_without_our_key_is_not_ours():
    assert GuideArgs.from_params(SimpleNamespace(extra_args=None)) is None
    assert GuideArgs.from_params(SimpleNamespace(extra_args={"other": 1})) is None
    assert GuideArgs.from_params(None) is None
    assert GuideSetup.from_config(None) is None


def test_malformed_guidance_names_what_is_missing_and_what_is_unknown():
    with pytest.raises(ValueError, match=r"extra_args\['pargs_batch'\]: GuideArgs needs .*missing \['beta', 'greedy'\]"):
        GuideArgs.from_params(SimpleNamespace(extra_args={EXTRA_KEY: {"key": "a", "k": 2, "guided": True}}))
    with pytest.raises(ValueError, match=r"unknown \['temperature'\]"):
        GuideArgs.from_params(SimpleNamespace(extra_args={EXTRA_KEY: {
            "key": "a", "k": 2, "beta": 1.0, "guided": True, "greedy": False, "temperature": 0.7}}))


def test_a_record_gives_one_reward_per_output_token():
    record = GuideRecord(rewards=[0.1, 0.2], last_token_rewards={9: 0.3, 4: 0.4})
    assert record.rewards_for([5, 6, 9]) == [0.1, 0.2, 0.3]  # the last token from the last step's candidates
    assert record.rewards_for([5, 6, 8]) == [0.1, 0.2, None]  # a token that was no candidate
    assert record.rewards_for([5]) == [0.1]
    assert record.rewards_for([]) == []
