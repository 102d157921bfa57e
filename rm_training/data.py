"""Preference triples (prompt, chosen, rejected) from the layouts reward models are trained on.

- ``hh``: Anthropic HH-RLHF: ``chosen`` / ``rejected`` are whole transcripts; the prompt is
  everything up to and including the last ``\\n\\nAssistant:``, the response what follows.
- ``tldr``: the comparisons of "Learning to summarize from human feedback" (Stiennon et al.):
  ``info`` (post, title, subreddit), ``summaries`` (two, each with ``text``), ``choice`` (0 or 1).
- ``generic``: any table with prompt / chosen / rejected columns (names configurable).

Each comes from a ``.jsonl`` / ``.parquet`` file or a Hugging Face dataset name. Malformed rows are
counted per reason and left out of training, never silently: the counts go into the report and
the training summary, and a source that is more than ``max_malformed_fraction`` malformed stops
the run.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

FORMATS = ("hh", "tldr", "generic")
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


ADAPTERS = {"hh": from_hh, "tldr": from_tldr, "generic": from_generic}
REQUIRED = {"hh": ("chosen", "rejected"), "tldr": ("info", "summaries", "choice"),
            "generic": ("prompt", "chosen", "rejected")}


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


def to_triples(rows: Iterable[dict], fmt: str, columns: dict, limit: int | None = None
               ) -> tuple[list[Triple], DataReport]:
    """Convert rows with the adapter of ``fmt``; malformed ones are counted by reason."""
    adapter = ADAPTERS[fmt]
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
