"""What a prompt row's context is: a prompt string or a conversation (a list of {role, content}).

Apart from ``batch`` (which defines the Arrow schema) so the reward scorers, which read contexts,
import without pyarrow - as on a GPU machine where only torch and transformers are installed.
"""

from __future__ import annotations

from typing import Any


def conversation_of(context: Any) -> list[dict]:
    """The turns a context stands for: a prompt string is one user turn."""
    return context if isinstance(context, list) else [{"role": "user", "content": context}]


def prompt_of(context: Any) -> str:
    """The prompt text of a context: a conversation's last user message (its last message if none)."""
    if not isinstance(context, list):
        return context
    users = [m["content"] for m in context if m["role"] == "user"]
    return users[-1] if users else context[-1]["content"]


HUMAN, ASSISTANT = "\n\nHuman:", "\n\nAssistant:"


def hh_turns(transcript: str) -> list[dict]:
    """An Anthropic HH transcript (``\\n\\nHuman: … \\n\\nAssistant: …``) as chat turns, in order;
    raises ValueError when it holds no human turn or text comes before the first one."""
    turns, rest = [], transcript
    if not rest.startswith(HUMAN):
        raise ValueError("an HH transcript starts with '\\n\\nHuman:'")
    while rest:
        role, marker = ("user", HUMAN) if rest.startswith(HUMAN) else ("assistant", ASSISTANT)
        if not rest.startswith(marker):
            raise ValueError("an HH transcript alternates '\\n\\nHuman:' and '\\n\\nAssistant:' turns")
        body = rest[len(marker):]
        nxt = [i for i in (body.find(HUMAN), body.find(ASSISTANT)) if i >= 0]
        end = min(nxt) if nxt else len(body)
        turns.append({"role": role, "content": body[:end].strip()})
        rest = body[end:]
    return turns


def hh_prompt(transcript: str) -> list[dict]:
    """The conversation an HH transcript answers: its turns before the last assistant reply."""
    turns = hh_turns(transcript)
    while turns and turns[-1]["role"] == "assistant":
        turns.pop()
    if not turns:
        raise ValueError("an HH transcript with no human turn")
    return turns
