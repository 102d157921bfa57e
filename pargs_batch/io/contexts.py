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
