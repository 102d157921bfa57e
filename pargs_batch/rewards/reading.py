"""How a reward model reads (prompt, response): decided once, the same way everywhere.

``reward.input: auto`` (the default) asks the checkpoint: what ``rm_training`` recorded in its
``config.json`` when it trained it (``pargs_batch_input``: the input and template it trained with);
else its tokenizer: a chat template that renders a user turn and an assistant reply means ``chat``,
a tokenizer that builds segment pairs (type ids or an extra separator) means ``pair``, anything
else ``template``. Only tokenizer and config files are read, never weights, so ``generate``,
``evaluate``, ``compare`` (``--eval-reward``, ``--reward-for``), ``serve`` and ``init`` all decide
before a model loads, and all decide alike. A value other than ``auto`` is used as given.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from pargs_batch.io.contexts import ASSISTANT, HUMAN, conversation_of

INPUTS = ("template", "pair", "chat", "hh")
_SLOT = "\ue000pargs-response\ue001"  # stands for the response while a chat template renders


def chat_frame(tokenizer, context: Any) -> tuple[str, str]:
    """(text before, text after) the assistant's reply when the chat template renders ``context``
    followed by an assistant turn; raises ValueError when the template does not pass the reply
    through unchanged exactly once."""
    text = tokenizer.apply_chat_template(conversation_of(context) + [{"role": "assistant", "content": _SLOT}],
                                         tokenize=False)
    if text.count(_SLOT) != 1:
        raise ValueError("its chat template does not render an assistant turn's content verbatim once")
    head, tail = text.split(_SLOT)
    return head, tail


def hh_transcript(context: Any) -> str:
    """A context written as HH-RLHF writes one, ending on the ``\\n\\nAssistant:`` that the reply
    follows (after one space, as in the dataset); system turns have no place in it and are left out."""
    parts = []
    for m in conversation_of(context):
        if m["role"] in ("user", "assistant"):
            parts.append(f"{HUMAN if m['role'] == 'user' else ASSISTANT} {m['content']}")
    return "".join(parts) + ASSISTANT


def hh_reply(response: str) -> str:
    """A reply as it follows ``\\n\\nAssistant:`` in an HH transcript: after one space."""
    return response if response[:1].isspace() or not response else " " + response


@dataclasses.dataclass(frozen=True)
class Reading:
    input: str               # template | pair | chat | hh
    template: str | None     # the template it was trained with, where rm_training recorded one
    why: str


@functools.lru_cache(maxsize=64)
def detect(path: str) -> Reading:
    """How the reward model at ``path`` reads its input, and why (tokenizer and config files only)."""
    from transformers import AutoConfig, AutoTokenizer

    trained = getattr(AutoConfig.from_pretrained(path), "pargs_batch_input", None)
    if isinstance(trained, dict) and trained.get("input") in INPUTS:
        return Reading(trained["input"], trained.get("template"),
                       "as it was trained (rm_training wrote it into its config.json)")
    tokenizer = AutoTokenizer.from_pretrained(path)
    if getattr(tokenizer, "chat_template", None):
        try:
            chat_frame(tokenizer, "a prompt")
            return Reading("chat", None, "its tokenizer has a chat template that renders a user turn and an "
                                         "assistant reply")
        except Exception:  # noqa: BLE001 - a template that cannot render the pair is not used
            pass
    single = tokenizer("a prompt")
    pair = tokenizer("a prompt", "a reply")
    types = pair.get("token_type_ids")
    sep = tokenizer.sep_token_id
    if (types and any(types)) or (sep is not None and pair["input_ids"].count(sep) > single["input_ids"].count(sep)):
        return Reading("pair", None, "its tokenizer encodes a (prompt, response) segment pair, as the hub's DeBERTa "
                                     "reward models were trained; a model trained on joined text wants input: template")
    return Reading("template", None, "its tokenizer has no chat template and no pair encoding: prompt and response "
                                     "are joined")


def resolved(reward: "config.RewardConfig") -> "config.RewardConfig":  # (not imported: config stays off this chain)
    """``reward`` with ``input: auto`` replaced by what the checkpoint says (and, where rm_training
    recorded one and none other was given, its template); the causal and autoregressive backends read the LLM's token ids
    and always take the template."""
    if reward.input != "auto" or not reward.path:
        return reward
    if reward.backend != "hf":
        return dataclasses.replace(reward, input="template")
    reading = detect(reward.path)
    # the recorded template unless one was given (a template other than the default is a choice)
    given = reward.template != "{prompt}{response}"
    return dataclasses.replace(reward, input=reading.input,
                               template=reward.template if given or not reading.template else reading.template)
