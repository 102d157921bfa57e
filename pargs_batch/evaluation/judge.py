"""Pairwise LLM judging through any OpenAI-compatible chat endpoint, cached on disk.

For each prompt two responses (A, B) go to the judge in an order drawn from (seed, prompt id), to
cancel position bias; the reply's first line must hold the two 1-10 grades. Unparsable replies
are asked again (``parse_retries`` in a run), then counted as invalid; the invalid answer is
cached with the number of requests it took, and the next run asks again until ``max_attempts``
requests were made in all. Transport errors (429, 5xx, timeouts) are retried with backoff by the
``openai`` client itself. Every answer is stored in a SQLite cache keyed by (model, template,
sampling fields, prompt, first response, second response) as soon as it arrives, so a rerun, or
a run that died half-way, never pays twice for an answer it could read.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

_NUMBER = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)(?![\w.])")


class JudgeError(RuntimeError):
    """The judge endpoint could not be used (unreachable, refused); the message says why."""


def load_template(name_or_path: str) -> tuple[str, str]:
    """(system, user) of a judge template: a built-in name (dialogue, summary) or a file path."""
    if os.path.exists(name_or_path):
        text = Path(name_or_path).read_text()
    else:
        text = resources.files("pargs_batch.evaluation").joinpath(f"templates/{name_or_path}.txt").read_text()
    system, sep, user = text.partition("[user]\n")
    if not sep or not system.startswith("[system]\n"):
        raise ValueError(f"judge template {name_or_path} needs a [system] and then a [user] section")
    for field in ("{question}", "{answer_1}", "{answer_2}"):
        if field not in user:
            raise ValueError(f"judge template {name_or_path}: the [user] section lacks {field}")
    return system[len("[system]\n"):].strip(), user.strip()


def parse_scores(reply: str | None) -> tuple[float, float] | None:
    """The two grades on the reply's first non-empty line, or None if it holds anything else."""
    if not reply:
        return None
    first = next((line for line in reply.splitlines() if line.strip()), "")
    numbers = _NUMBER.findall(first)
    leftover = _NUMBER.sub("", first).strip(" \t,;/|-:")
    if len(numbers) != 2 or leftover:
        return None
    a, b = float(numbers[0]), float(numbers[1])
    return (a, b) if 1 <= a <= 10 and 1 <= b <= 10 else None


def a_goes_first(seed: int, prompt_id: str) -> bool:
    """The recorded, per-prompt order: does response A go first?"""
    return random.Random(f"{seed}:{prompt_id}").random() < 0.5


class JudgeCache:
    """Judge answers on disk (SQLite), written one by one as they arrive."""

    def __init__(self, path: str | Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), check_same_thread=False)
        self.db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value TEXT)")
        self.db.commit()
        self.lock = threading.Lock()

    def get(self, key: str) -> dict | None:
        with self.lock:
            row = self.db.execute("SELECT value FROM answers WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, value: dict) -> None:
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?)", (key, json.dumps(value)))
            self.db.commit()


class Judge:
    def __init__(self, base_url: str, model: str, api_key: str, template: str, cache: JudgeCache,
                 max_concurrency: int = 8, max_retries: int = 3, parse_retries: int = 2,
                 timeout: float = 60.0, max_tokens: int = 128, max_attempts: int = 3,
                 max_tokens_param: str = "max_tokens", temperature: float | None = 0.0,
                 extra_body: dict | None = None):
        from openai import OpenAI

        self.client = OpenAI(base_url=base_url, api_key=api_key, max_retries=max_retries, timeout=timeout)
        self.base_url, self.model, self.cache = base_url, model, cache
        self.system, self.user = load_template(template)
        self.max_concurrency, self.parse_retries, self.max_attempts = max_concurrency, parse_retries, max_attempts
        self.fields = {max_tokens_param: max_tokens}  # what each request carries besides the messages
        if temperature is not None:
            self.fields["temperature"] = temperature
        self.extra_body = dict(extra_body or {})
        self.requests = 0
        self._count = threading.Lock()

    def _key(self, question: str, first: str, second: str) -> str:
        parts = [self.model, self.system, self.user, question, first, second]
        sampling = {k: v for k, v in self.fields.items() if k == "temperature"} | self.extra_body
        if sampling != {"temperature": 0.0}:  # the default adds nothing: caches of earlier versions stay valid
            parts.append(json.dumps(sampling, sort_keys=True))
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()

    def _ask(self, question: str, first: str, second: str, tries: int) -> dict:
        """Up to ``tries`` requests until a reply parses: {scores (None if none did), reply, attempts}."""
        from openai import APIConnectionError, APIStatusError

        messages = [{"role": "system", "content": self.system},
                    {"role": "user", "content": self.user.format(question=question, answer_1=first,
                                                                 answer_2=second)}]
        reply = None
        for attempt in range(1, tries + 1):
            with self._count:
                self.requests += 1
            try:
                out = self.client.chat.completions.create(model=self.model, messages=messages, **self.fields,
                                                          extra_body=self.extra_body or None)
            except APIConnectionError as e:
                raise JudgeError(f"judge endpoint {self.base_url} is unreachable ({type(e).__name__})") from None
            except APIStatusError as e:
                raise JudgeError(f"judge endpoint {self.base_url} answered HTTP {e.status_code}: "
                                 f"{str(e.message)[:200]}") from None
            reply = out.choices[0].message.content
            scores = parse_scores(reply)
            if scores is not None:
                return {"scores": list(scores), "reply": reply, "attempts": attempt}
        return {"scores": None, "reply": reply, "attempts": tries}

    def compare(self, prompt_id: str, question: str, a: str, b: str, seed: int) -> dict:
        """The outcome for A against B on one prompt: win, tie, loss or invalid, with its record."""
        a_first = a_goes_first(seed, prompt_id)
        first, second = (a, b) if a_first else (b, a)
        key = self._key(question, first, second)
        answer = self.cache.get(key)
        cached = answer is not None
        # requests already made for this comparison (answers from before the count was kept: a
        # run's worth); an invalid answer got under other request fields (a larger max_tokens,
        # say) does not use up the new ones
        made = 0 if answer is None else answer.get("attempts", 1 + self.parse_retries)
        if answer is not None and answer["scores"] is None and answer.get("fields", self.fields) != self.fields:
            made = 0
        if answer is None or (answer["scores"] is None and made < self.max_attempts):
            fresh = self._ask(question, first, second, min(1 + self.parse_retries, self.max_attempts - made))
            answer = {**fresh, "attempts": made + fresh["attempts"], "fields": self.fields}
            self.cache.put(key, answer)
            cached = False
        if answer["scores"] is None:
            outcome = "invalid"
        else:
            score_a, score_b = answer["scores"] if a_first else answer["scores"][::-1]
            outcome = "win" if score_a > score_b else "tie" if score_a == score_b else "loss"
        return {"id": prompt_id, "a_first": a_first, "outcome": outcome, "scores": answer["scores"],
                "cached": cached, "attempts": answer.get("attempts", made)}

    def compare_all(self, items: list[tuple[str, str, str, str]], seed: int, progress: bool = True) -> list[dict]:
        """``compare`` for (id, question, a, b) items, ``max_concurrency`` at a time, in order."""
        from tqdm import tqdm

        from pargs_batch.console import console

        pool = ThreadPoolExecutor(self.max_concurrency)
        futures = [pool.submit(self.compare, *item, seed) for item in items]
        try:
            return [f.result() for f in tqdm(futures, desc="judge", unit="pair", disable=not progress,
                                                       file=console.err)]
        finally:  # on an endpoint error, stop asking; what was answered is in the cache
            pool.shutdown(wait=True, cancel_futures=True)
