"""`pargs-batch world judge-server`: the default world's judge, an OpenAI-compatible chat endpoint.

No judge LLM can run offline here, so the world ships a *gold judge*: a small HTTP server on
localhost (standard library only) that answers ``POST /v1/chat/completions`` the way the judge
templates ask a real LLM to. It reads the question and the two replies out of the user message (the
built-in ``dialogue`` and ``summary`` layouts), grades each reply from the world's exact gold reward
plus Gaussian noise, and answers ``"G1 G2"`` on the first line and one sentence after it. The
grades are integers 1-10 (so close replies tie, as they do with LLM judges). The noise of a reply
is drawn from (seed, question, reply): the same reply always gets the same grade, as from a judge
at temperature 0. A message it cannot read gets an answer without grades (an invalid judgement).

It is a stand-in with a known answer, not an LLM: its verdicts measure the gold reward, through
the same client, prompts, parsing, caching and statistics as a real endpoint.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from experiments.world.gold import gold_score

LAYOUT = re.compile(r"\[(?:Question|Post)\]\n(?P<question>.*?)\n\n\[(?P<kind>Reply|Summary) 1 begins\]\n(?P<one>.*?)\n"
                    r"\[(?P=kind) 1 ends\]\n\n\[(?P=kind) 2 begins\]\n(?P<two>.*?)\n\[(?P=kind) 2 ends\]", re.S)
CENTRE, SCALE = 5.5, 1.5  # grade = CENTRE + SCALE * (gold + noise), rounded and clipped to 1-10


def grade(question: str, reply: str, noise: float, seed: int) -> int:
    """The judge's grade of one reply: its gold reward plus seeded noise, on the 1-10 scale."""
    digest = hashlib.sha256(json.dumps([seed, question, reply]).encode()).digest()
    draw = random.Random(int.from_bytes(digest[:8], "little")).gauss(0.0, 1.0)
    return int(min(10, max(1, round(CENTRE + SCALE * (gold_score(question, reply) + noise * draw)))))


def answer(user_message: str, noise: float, seed: int) -> str:
    """What the gold judge replies to one templated comparison."""
    found = LAYOUT.search(user_message)
    if not found:
        return "I cannot find the two replies to compare."
    q, one, two = found.group("question"), found.group("one"), found.group("two")
    g1, g2 = grade(q, one, noise, seed), grade(q, two, noise, seed)
    verdict = "they are equally good" if g1 == g2 else f"reply {1 if g1 > g2 else 2} is better"
    return f"{g1} {g2}\nBy the world's gold reward, {verdict}."


class GoldJudgeServer:
    """The server, in a background thread: ``url`` is its OpenAI base URL; ``close()`` stops it.

    ``api_key``: when set, requests must carry it as a bearer token (as a real endpoint would)."""

    def __init__(self, noise: float = 0.5, seed: int = 0, host: str = "127.0.0.1", port: int = 0,
                 api_key: str | None = None, model: str = "gold-judge"):
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"the gold judge listens on localhost only, not {host}")
        self.noise, self.seed, self.model, self.api_key = noise, seed, model, api_key
        self.requests = 0
        self.httpd = ThreadingHTTPServer((host, port), self._handler())
        self.url = f"http://{host}:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802 - http.server's naming
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": server.model, "object": "model"}]})
                else:
                    self._send(200 if self.path == "/health" else 404, {})

            def do_POST(self):  # noqa: N802
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                if server.api_key and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    return self._send(401, {"error": {"message": "invalid API key"}})
                try:
                    body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                    user = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
                except (ValueError, KeyError, StopIteration, TypeError):
                    return self._send(400, {"error": {"message": "expected a chat completion request"}})
                server.requests += 1
                content = answer(user, server.noise, server.seed)
                self._send(200, {"id": f"gold-{server.requests}", "object": "chat.completion",
                                 "created": int(time.time()), "model": body.get("model", server.model),
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": content}}],
                                 "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}})

            def log_message(self, *args):
                pass

        return Handler

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
