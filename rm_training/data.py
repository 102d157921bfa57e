"""Preference triples (prompt, chosen, rejected) from the layouts reward models are trained on.

- ``hh``: Anthropic HH-RLHF: ``chosen`` / ``rejected`` are whole transcripts; the prompt is
  everything up to and including the last ``\\n\\nAssistant:``, the response what follows.
- ``tldr``: the comparisons of "Learning to summarize from human feedback" (Stiennon et al.):
  ``info`` (post, title, subreddit), ``summaries`` (two, each with ``text``), ``choice`` (0 or 1).
- ``generic``: any table with prompt / chosen / rejected columns (names configurable).
- ``conversational``: TRL's conversational preference format, as UltraFeedback stores it:
  ``chosen`` / ``rejected`` are lists of ``{role, content}`` messages, with the prompt either in a
  ``prompt`` column (a string or a list of messages) or as the turns both share (TRL's implicit
  prompt); each side must end in one assistant reply. How the conversation becomes the reward
  model's text depends on its tokenizer (``reading``): its chat template where it has one, else an
  HH transcript.

Each comes from a ``.jsonl`` / ``.parquet`` file or a Hugging Face dataset name. Malformed rows are
counted per reason and left out of training, never silently: the counts go into the report and
the training summary, and a source that is more than ``max_malformed_fraction`` malformed stops
the run.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

FORMATS = ("hh", "tldr", "generic", "conversational")
ASSISTANT = "\n\nAssistant:"
TLDR_PROMPT = "SUBREDDIT: r/{subreddit}\nTITLE: {title}\nPOST: {post}\nTL;DR:"


@dataclass(frozen=True)
class Triple:
    prompt: str
    chosen: str
    rejected: str


@dataclass
class DataReport:
    rows: int = 0
    triples: int = 0
    malformed: Counter = field(default_factory=Counter)

    @property
    def malformed_fraction(self) -> float:
        return sum(self.malformed.values()) / self.rows if self.rows else 0.0

    def to_dict(self) -> dict:
        return {"rows": self.rows, "triples": self.triples, "malformed": dict(self.malformed),
                "malformed_fraction": round(self.malformed_fraction, 4)}


class MalformedRow(Exception):
    """A row that cannot become a triple; ``reason`` is the counter key."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _text(row: dict, key: str) -> str:
    value = row.get(key)
    if value is None:
        raise MalformedRow(f"missing {key}")
    if not isinstance(value, str):
        raise MalformedRow(f"{key} is not text")
    return value


def _check(triple: Triple) -> Triple:
    if not triple.chosen.strip() or not triple.rejected.strip():
        raise MalformedRow("empty response")
    if triple.chosen == triple.rejected:
        raise MalformedRow("identical chosen and rejected")
    return triple


def split_hh(transcript: str) -> tuple[str, str]:
    """(prompt through the last ``\\n\\nAssistant:``, the final assistant reply)."""
    cut = transcript.rfind(ASSISTANT)
    if cut < 0:
        raise MalformedRow("no assistant turn")
    cut += len(ASSISTANT)
    return transcript[:cut], transcript[cut:]


def from_hh(row: dict, columns: dict) -> Triple:
    prompt, chosen = split_hh(_text(row, columns["chosen"]))
    rejected_prompt, rejected = split_hh(_text(row, columns["rejected"]))
    if rejected_prompt != prompt:
        raise MalformedRow("chosen and rejected have different prompts")
    return _check(Triple(prompt, chosen, rejected))


def from_tldr(row: dict, columns: dict) -> Triple:
    info, summaries, choice = row.get("info"), row.get("summaries"), row.get("choice")
    if not isinstance(info, dict) or not isinstance(summaries, list) or len(summaries) != 2:
        raise MalformedRow("missing info or summaries")
    if choice not in (0, 1):
        raise MalformedRow("choice is not 0 or 1")
    post = info.get("post") or info.get("article")
    if not isinstance(post, str):
        raise MalformedRow("missing post")
    prompt = TLDR_PROMPT.format(subreddit=info.get("subreddit") or "", title=info.get("title") or "",
                                post=post)
    texts = [s.get("text") if isinstance(s, dict) else None for s in summaries]
    if not all(isinstance(t, str) for t in texts):
        raise MalformedRow("missing summary text")
    # a summary follows "TL;DR:" after one space, as the SFT models were trained
    texts = [t if t[:1].isspace() else " " + t for t in texts]
    return _check(Triple(prompt, texts[choice], texts[1 - choice]))


def from_generic(row: dict, columns: dict) -> Triple:
    return _check(Triple(_text(row, columns["prompt"]), _text(row, columns["chosen"]),
                         _text(row, columns["rejected"])))


def _messages(value: Any, key: str) -> list[dict]:
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, list) or not value or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value):
        raise MalformedRow(f"{key} is not a list of messages")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def conversation_sides(row: dict, columns: dict) -> tuple[list[dict], str, str]:
    """(the prompt's turns, the chosen reply, the rejected reply) of a conversational row."""
    chosen, rejected = _messages(row.get(columns["chosen"]), "chosen"), _messages(row.get(columns["rejected"]), "rejected")
    shared = 0
    while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
        shared += 1
    prompt = row.get(columns["prompt"])
    if prompt is None or shared:
        turns = chosen[:shared]          # TRL's implicit prompt, or the prompt repeated in both sides
    elif isinstance(prompt, str):
        turns = [{"role": "user", "content": prompt}]
    else:
        turns = _messages(prompt, "prompt")
    replies = chosen[shared:], rejected[shared:]
    if any(len(r) != 1 or r[0]["role"] != "assistant" for r in replies):
        raise MalformedRow("a side does not end in one assistant reply")
    if not any(t["role"] == "user" for t in turns):
        raise MalformedRow("no user turn in the prompt")
    return turns, replies[0][0]["content"], replies[1][0]["content"]


def from_conversational(row: dict, columns: dict, render=None) -> Triple:
    """``render(turns, reply) -> (prompt text, response text)``: how the reward model will read it."""
    turns, chosen, rejected = conversation_sides(row, columns)
    render = render or hh_render
    prompt, chosen_text = render(turns, chosen)
    _, rejected_text = render(turns, rejected)
    return _check(Triple(prompt, chosen_text, rejected_text))


def hh_render(turns: list[dict], reply: str) -> tuple[str, str]:
    from pargs_batch.rewards.reading import hh_reply, hh_transcript

    return hh_transcript(turns), hh_reply(reply)


def reading(fmt: str, mode: str, tokenizer=None, template: str = "{prompt}{response}") -> dict:
    """How the trained model reads (prompt, response) - recorded in its config.json, so a run reads
    it the same way (``reward.input: auto``) - and, for the conversational format, how a row is
    rendered (``render``) and the training text's template. ``hh`` transcripts are read as HH
    transcripts; conversations through the tokenizer's chat template where it renders one, else as
    HH transcripts. The causal modes read the LLM's token ids and take the template's text as it is."""
    whole = mode in ("full", "partial")
    if fmt == "hh" and whole:
        return {"input": "hh", "template": "{prompt}{response}"}
    if fmt != "conversational":
        return {"input": "template", "template": template}
    if whole and tokenizer is not None and getattr(tokenizer, "chat_template", None):
        from pargs_batch.rewards.reading import chat_frame

        try:
            _, tail = chat_frame(tokenizer, "a prompt")
        except Exception:  # noqa: BLE001 - a template that cannot render a reply verbatim is not used
            tail = None
        if tail is not None:
            def render(turns, reply):
                return chat_frame(tokenizer, turns)[0], reply
            # the text after the reply (an end-of-turn token) is part of every input, as when scoring
            escaped = tail.replace("{", "{{").replace("}", "}}")
            return {"input": "chat", "template": "{prompt}{response}" + escaped, "render": render,
                    "special_tokens": False}
    return {"input": "hh" if whole else "template", "template": "{prompt}{response}", "render": hh_render}


ADAPTERS = {"hh": from_hh, "tldr": from_tldr, "generic": from_generic, "conversational": from_conversational}
REQUIRED = {"hh": ("chosen", "rejected"), "tldr": ("info", "summaries", "choice"),
            "generic": ("prompt", "chosen", "rejected"), "conversational": ("chosen", "rejected")}


def required_columns(fmt: str, columns: dict) -> list[str]:
    return [columns.get(c, c) for c in REQUIRED[fmt]]


def read_rows(source: str, subset: str | None = None, split: str = "train") -> tuple[Iterable[dict], list[str]]:
    """Rows of a local .jsonl/.parquet file or a Hugging Face dataset, and its column names."""
    import datasets

    if source.endswith((".jsonl", ".json")):
        ds = datasets.load_dataset("json", data_files=source, split="train")
    elif source.endswith(".parquet"):
        ds = datasets.load_dataset("parquet", data_files=source, split="train")
    else:
        ds = datasets.load_dataset(source, subset, split=split)
    return ds, list(ds.column_names)


def to_triples(rows: Iterable[dict], fmt: str, columns: dict, limit: int | None = None, render=None
               ) -> tuple[list[Triple], DataReport]:
    """Convert rows with the adapter of ``fmt``; malformed ones are counted by reason. ``render``:
    how a conversational row becomes text (``reading``'s)."""
    adapter = ADAPTERS[fmt]
    if fmt == "conversational":
        from functools import partial

        adapter = partial(from_conversational, render=render)
    report, triples = DataReport(), []
    for row in rows:
        if limit is not None and report.rows >= limit:
            break
        report.rows += 1
        try:
            triples.append(adapter(row, columns))
        except MalformedRow as bad:
            report.malformed[bad.reason] += 1
    report.triples = len(triples)
    return triples, report


def split_triples(triples: list[Triple], eval_fraction: float, seed: int) -> tuple[list[Triple], list[Triple]]:
    """A seeded train / held-out split by triple (a triple's prefix pairs never straddle it)."""
    import random

    order = list(range(len(triples)))
    random.Random(seed).shuffle(order)
    n_eval = int(round(len(triples) * eval_fraction))
    held = set(order[:n_eval])
    return ([t for i, t in enumerate(triples) if i not in held],
            [t for i, t in enumerate(triples) if i in held])


def as_dicts(triples: list[Triple]) -> list[dict[str, Any]]:
    return [{"prompt": t.prompt, "chosen": t.chosen, "rejected": t.rejected} for t in triples]
