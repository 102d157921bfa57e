"""`pargs-batch serve`: vLLM's own OpenAI-compatible server with the reward guidance in its engine.

The engine is the batch engine of ``engine.mode: fused`` (``engine.engine_args`` and
``models.loading.engine_kwargs``: the same logits processor, reward model, block size and prefill),
started by vLLM's server code (``AsyncEngineArgs``, ``build_app``, ``init_app_state``,
``serve_http``), so completions and chat completions, streaming, aborts on disconnect, the context
check and vLLM's Prometheus metrics are vLLM's. One ASGI middleware (``GuidanceMiddleware``) stands
in front of ``/v1/completions`` and ``/v1/chat/completions`` and turns a request's guidance fields
into what the processor reads (``Policy.translate``):

- ``method``, ``beta``, ``top_k``, ``temperature``, ``seed``, ``id``, ``reward_weights`` (and
  ``guidance: false`` for vLLM's own sampling) are checked - a bad one is an HTTP 400 naming the
  field, the value and what is allowed, before the engine sees the request - and default to the
  config's ``decode`` section;
- the request's vLLM seed becomes the batch run's seed of the row (``decode.seed``, ``id``, sample
  0), its temperature 0 for a greedy method, its stop ids the batch run's EOS set, and the guidance
  travels in ``vllm_xargs`` as a ``guidance.GuideArgs`` - so a response is the batch row, token for
  token;
- ``GET /metrics`` first fetches the guidance's counters from the engine's worker.

A served request's row is dropped by the processor when the request leaves the engine (finished,
aborted or preempted: ``GuideArgs.keep`` false), so a long-running server holds only live rows.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass, field
from typing import Any

from pargs_batch import decoding
from pargs_batch.config import DecodeConfig, GenerateConfig
from pargs_batch.configlib import ConfigError
from pargs_batch.decoding import METHODS
from pargs_batch.guidance import GuideArgs

ROUTES = {"/v1/completions": False, "/v1/chat/completions": True}  # path -> is chat
TOKENWISE = [name for name, m in METHODS.items() if m.tokenwise]
OURS = ("method", "beta", "id", "reward_weights", "guidance")  # request fields vLLM does not know
# sampling penalties and their neutral values: vLLM 0.32's model runners order them differently
# against logits processors (V2, CUDA: penalties first; V1, CPU: processors first), so guided
# requests take none
PENALTIES = {"repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0}


class RequestError(ValueError):
    """A request field the guidance cannot take: an HTTP 400 naming the field, the value and what is
    allowed."""

    def __init__(self, name: str, value: Any, allowed: str):
        self.name, self.value = name, value
        super().__init__(f"{name}={value!r}: {allowed}")


def _number(name: str, value: Any, allowed: str, low: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < low:
        raise RequestError(name, value, allowed)
    return float(value)


def _integer(name: str, value: Any, allowed: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        raise RequestError(name, value, allowed)
    return value


def _conversation(messages: Any) -> list[dict]:
    """A chat request's messages as the reward model's context (role and text content only)."""
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages", messages, "a non-empty list of {role, content}")
    turns = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise RequestError(f"messages[{i}]", message, "a {role, content} object")
        content = message.get("content")
        if isinstance(content, list):  # OpenAI content parts: text only
            if not all(isinstance(p, dict) and p.get("type") == "text" for p in content):
                raise RequestError(f"messages[{i}].content", content, "text (or text parts only)")
            content = "".join(p.get("text", "") for p in content)
        if not isinstance(content, str):
            raise RequestError(f"messages[{i}].content", content, "text (or text parts only)")
        turns.append({"role": message["role"], "content": content})
    return turns


@dataclass(frozen=True)
class Policy:
    """What a served request gets when it says nothing (the config's ``decode`` section) and what it
    may ask for: methods with a reward model only when the engine has one, k up to the engine's
    ``max_logprobs``, per-request weights when ``reward.models`` lists several models."""

    decode: DecodeConfig
    eos_ids: list[int]
    max_logprobs: int
    reward_models: int          # reward models in the engine (0: none, every request topk)
    weights: bool = False       # reward.models given: a request may weight them
    model: str = ""
    whole: bool = False         # an autoregressive reward model: top_k 0 (the whole vocabulary) allowed
    counts: dict = field(default_factory=dict, compare=False)

    @classmethod
    def of(cls, config: GenerateConfig, eos_ids) -> Policy:
        return cls(decode=config.decode, eos_ids=sorted(int(i) for i in eos_ids),
                   max_logprobs=config.model.max_logprobs, reward_models=len(config.reward.members),
                   weights=bool(config.reward.models), model=config.model.path,
                   whole=config.reward.backend == "autoregressive" and bool(config.reward.members))

    def translate(self, body: Any, chat: bool) -> tuple[Any, str | None]:
        """The request ``body`` as vLLM's server should see it, and the method guiding it (None:
        unguided, ``guidance: false``). Raises ``RequestError`` for a field the guidance cannot take."""
        if not isinstance(body, dict):
            return body, None  # vLLM says what is wrong with it
        body, d = dict(body), self.decode
        ours = {name: body.pop(name) for name in OURS if name in body}
        if body.get("n") not in (None, 1):
            raise RequestError("n", body["n"], "1: one response per request (send several requests with other "
                                               "seeds or ids)")
        if body.get("use_beam_search"):
            raise RequestError("use_beam_search", body["use_beam_search"], "false: guided decoding is not beam search")
        if "max_tokens" not in body and "max_completion_tokens" not in body:
            body["max_tokens"] = d.max_new_tokens
        body.setdefault("stop", d.stop or None)
        body.setdefault("ignore_eos", d.ignore_eos)
        if not body["ignore_eos"]:  # the batch run's end set: the tokenizer's EOS and generation_config's
            extra = body.get("stop_token_ids") or []
            if not isinstance(extra, list):
                raise RequestError("stop_token_ids", extra, "a list of token ids")
            body["stop_token_ids"] = list(dict.fromkeys([*extra, *self.eos_ids]))
        guided = ours.get("guidance", True)
        if not isinstance(guided, bool):
            raise RequestError("guidance", guided, "true (reward guidance, the default) or false (vLLM's own "
                                                   "sampling, no guidance)")
        if not guided:
            for name in OURS[:-1]:
                if name in ours:
                    raise RequestError(name, ours[name], "not with guidance: false")
            return body, None

        for name, neutral in PENALTIES.items():
            if body.get(name) is not None and body[name] != neutral:
                raise RequestError(name, body[name], f"{neutral} (or omitted) with guidance: vLLM's CUDA model runner "
                                   "applies penalties before the guidance sees the logits and its CPU runner after "
                                   "it, so a penalised guided request would get other tokens on a GPU than on CPU "
                                   "(guidance: false takes penalties)")
        method = ours.get("method", d.method)
        if method not in TOKENWISE:
            raise RequestError("method", method, "one of " + ", ".join(TOKENWISE))
        uses_reward = METHODS[method].uses_reward
        if uses_reward and not self.reward_models:
            raise RequestError("method", method, "this server has no reward model (reward.path in its config): topk")
        beta = _number("beta", ours.get("beta", d.beta), "a finite number >= 0")
        k = _integer("top_k", body.pop("top_k", None) if body.get("top_k") is not None else d.top_k,
                     f"candidates per step: an integer in [1, {self.max_logprobs}] (the server's model.max_logprobs)"
                     + (", or 0 for the whole vocabulary" if self.whole else ""), 0 if self.whole else 1,
                     self.max_logprobs)
        temperature = body.get("temperature")
        temperature = d.temperature if temperature is None else \
            _number("temperature", temperature, "a number >= 0 (0: the argmax of the guided score)")
        greedy = METHODS[method].greedy or temperature == 0
        seed = body.get("seed")
        seed = d.seed if seed is None else _integer("seed", seed, "an integer >= 0", 0)
        row_id = ours.get("id", "")
        if isinstance(row_id, bool) or not isinstance(row_id, (str, int)):
            raise RequestError("id", row_id, "a string (or integer): the row id of a batch run")
        weights = ours.get("reward_weights")
        if weights is not None:
            if not self.weights:
                raise RequestError("reward_weights", weights, "needs reward.models (several reward models) in the "
                                                              "server's config")
            if not isinstance(weights, list) or len(weights) != self.reward_models or any(
                    isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) for w in weights):
                raise RequestError("reward_weights", weights,
                                   f"a list of {self.reward_models} finite numbers, one per entry of reward.models")
            weights = [float(w) for w in weights]
        if chat:
            context = _conversation(body.get("messages"))
        else:
            prompt = body.get("prompt")
            if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
                prompt = body["prompt"] = prompt[0]
            if not isinstance(prompt, str):
                raise RequestError("prompt", prompt, "one prompt string per guided request")
            context = prompt
        body["seed"] = int(decoding.request_seed(seed, decoding.id_hashes([str(row_id)]), [0])[0])
        body["temperature"] = 0.0 if greedy else temperature
        body.pop("top_k", None)  # k is the guidance's; vLLM's own top-k stays off, as in a batch run
        args = GuideArgs(key=uuid.uuid4().hex, k=k, beta=beta if uses_reward else 0.0, guided=uses_reward,
                         greedy=greedy, prompt=context, weights=weights, keep=False)
        xargs = body.get("vllm_xargs") or {}
        if not isinstance(xargs, dict):
            raise RequestError("vllm_xargs", xargs, "an object")
        body["vllm_xargs"] = {**xargs, **args.to_http()}
        return body, method


# ---------------------------------------------------------------------------- metrics

class GuidanceCollector:
    """The guidance's counters from the engine's worker, as Prometheus metrics: refreshed by
    ``GuidanceMiddleware`` on every ``GET /metrics``."""

    NAMES = {"steps": ("pargs_guidance_steps", "guided engine steps (steps with at least one guided row)"),
             "rows": ("pargs_guidance_row_steps", "guided rows summed over steps"),
             "candidates": ("pargs_guidance_candidates_scored", "candidates the reward model scored"),
             "reward_s": ("pargs_guidance_reward_seconds", "seconds in the reward model"),
             "decode_s": ("pargs_guidance_detokenize_seconds", "seconds detokenising candidates")}

    def __init__(self):
        self.values: dict[str, float] = {}

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        v = self.values
        for key, (name, help_text) in self.NAMES.items():
            yield CounterMetricFamily(name, help_text, value=v.get(key, 0.0))
        steps = v.get("steps", 0.0)
        yield GaugeMetricFamily("pargs_guidance_reward_seconds_per_step", "mean reward-model seconds per guided step",
                                value=v.get("reward_s", 0.0) / steps if steps else 0.0)
        yield GaugeMetricFamily("pargs_guidance_rows_held", "guided requests the guidance holds rows for: those in "
                                "the engine, and those finished since its last step (freed at the next)",
                                value=v.get("rows_held", 0.0))


_metrics: dict = {}


def metrics() -> dict:
    """The server's own metrics, registered once in the registry vLLM's ``/metrics`` serves."""
    if not _metrics:
        from prometheus_client import REGISTRY, Counter

        collector = GuidanceCollector()
        REGISTRY.register(collector)
        _metrics["collector"] = collector
        _metrics["requests"] = Counter("pargs_guided_requests", "requests by guidance method (none: guidance false)",
                                       ["method"])
        _metrics["refused"] = Counter("pargs_refused_requests", "requests refused by the guidance's checks (400)",
                                      ["field"])
    return _metrics


class GuidanceMiddleware:
    """ASGI middleware in front of vLLM's app: translates guided requests (``Policy.translate``),
    answers a bad one with a 400, and refreshes the guidance's metrics before ``/metrics``."""

    def __init__(self, app, policy: Policy):
        self.app, self.policy, self.metrics = app, policy, metrics()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"].rstrip("/")
        if path == "/metrics":
            await self._refresh(scope)
            return await self.app(scope, receive, send)
        if scope["method"] != "POST" or path not in ROUTES:
            return await self.app(scope, receive, send)
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        raw = b"".join(chunks)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if body is not None:
            try:
                body, method = self.policy.translate(body, ROUTES[path])
            except RequestError as e:
                self.metrics["refused"].labels(field=e.name).inc()
                return await _error(send, 400, str(e), e.name)
            self.metrics["requests"].labels(method=method or "none").inc()
            raw = json.dumps(body).encode()
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
        scope = dict(scope, headers=headers + [(b"content-length", str(len(raw)).encode())])
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()  # what follows the body: the client's disconnect, for vLLM's abort

        return await self.app(scope, replay, send)

    async def _refresh(self, scope) -> None:
        import asyncio

        client = getattr(scope["app"].state, "engine_client", None)
        if client is None:
            return
        try:
            found = await asyncio.wait_for(client.collective_rpc("pargs_batch_counters"), timeout=10)
        except Exception:  # noqa: BLE001 - metrics never fail a scrape; the last values stay
            return
        total: dict[str, float] = {}
        for worker in found or []:
            for name, value in (worker or {}).items():
                total[name] = total.get(name, 0.0) + value
        self.metrics["collector"].values = total


async def _error(send, status: int, message: str, param: str | None) -> None:
    """An error in the OpenAI shape vLLM answers with (the ``openai`` client raises it as a
    ``BadRequestError`` carrying the message)."""
    body = json.dumps({"error": {"message": message, "type": "BadRequestError", "param": param,
                                 "code": status}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------------------- the server

def check_servable(config: GenerateConfig) -> None:
    """What a server cannot take, refused before any model loads."""
    if not METHODS[config.decode.method].tokenwise:
        raise ConfigError("decode.method", config.decode.method,
                          "a served request is decoded token by token: one of " + ", ".join(TOKENWISE))
    if config.model.tensor_parallel_size > 1 and config.reward.members:
        raise ConfigError("model.tensor_parallel_size", config.model.tensor_parallel_size,
                          "1: the guidance runs in the engine's worker, and every tensor-parallel rank would load "
                          "its own reward model")


def server_engine_args(config: GenerateConfig) -> dict:
    """vLLM's engine arguments for a server of ``config``: the fused batch engine's, with vLLM's
    statistics on (its Prometheus metrics) and the model's generation_config.json not turned into
    request defaults (a batch run takes none of them either)."""
    from pargs_batch.models.engine import engine_args
    from pargs_batch.models.loading import engine_kwargs

    from vllm.platforms import current_platform

    m = config.model
    # eager only where compiling buys nothing (CPU); a GPU server keeps vLLM's CUDA graphs
    kwargs = engine_args(m, eager_default=current_platform.is_cpu())
    kwargs.update(engine_kwargs(config.reward if config.reward.members else None, m.tokenizer or m.path))
    kwargs.update(disable_log_stats=False, generation_config="vllm")
    return kwargs


def server_args(config: GenerateConfig, host: str, port: int, name: str | None = None):
    """vLLM's server arguments, from its own parser and defaults."""
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    argv = ["--model", config.model.path, "--host", host, "--port", str(port), "--disable-uvicorn-access-log"]
    if name:
        argv += ["--served-model-name", name]
    args = make_arg_parser(FlexibleArgumentParser()).parse_args(argv)
    validate_parsed_serve_args(args)
    return args


def serve(config: GenerateConfig, host: str = "127.0.0.1", port: int = 8000, name: str | None = None,
          on_ready=None) -> None:
    """Run the server until it is stopped (SIGINT or SIGTERM). ``on_ready(url)`` is called once it
    listens and its engine is up."""
    import asyncio

    from transformers import AutoTokenizer

    from pargs_batch.models.engine import eos_token_ids
    from pargs_batch.serving.replicas import exit_with_parent

    exit_with_parent()  # a Ray Serve replica's server goes with its replica
    check_servable(config)
    from pargs_batch.plan.memory import plan_run

    memory = plan_run(config)  # said in one line; on a GPU its choices (vLLM's share, max_num_seqs) are taken
    config = memory.apply(config) if memory is not None else config
    tokenizer = AutoTokenizer.from_pretrained(config.model.tokenizer or config.model.path)
    policy = Policy.of(config, eos_token_ids(config.model.path, tokenizer))
    args = server_args(config, host, port, name)
    asyncio.run(_run(args, server_engine_args(config), policy, on_ready))


async def _run(args, kwargs: dict, policy: Policy, on_ready) -> None:
    """vLLM's ``run_server`` with our middleware added to its app: the engine client from our engine
    arguments, vLLM's app and state, uvicorn through vLLM's ``serve_http``."""
    import asyncio
    import signal

    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.entrypoints.launchers.api_server.app_state import init_app_state
    from vllm.entrypoints.launchers.api_server.entry import build_async_engine_client_from_engine_args
    from vllm.entrypoints.launchers.app import build_app
    from vllm.entrypoints.launchers.launcher import serve_http, setup_server
    from vllm.entrypoints.launchers.utils.server_utils import get_uvicorn_log_config

    def interrupt(*_):
        raise KeyboardInterrupt("terminated")

    signal.signal(signal.SIGTERM, interrupt)
    listen_address, sock = setup_server(args, reuse_port=False)
    try:
        async with build_async_engine_client_from_engine_args(AsyncEngineArgs(**kwargs)) as client:
            tasks = await client.get_supported_tasks()
            app = build_app(args, tasks, client.model_config)
            # vLLM's build_app has built its middleware stack already; Starlette rebuilds it on the first
            # request once it is cleared (vLLM's own --middleware flag takes a class, not an instance's state)
            app.middleware_stack = None
            app.add_middleware(GuidanceMiddleware, policy=policy)
            await init_app_state(client, app.state, args, tasks)

            async def announce():
                while not getattr(getattr(app.state, "server", None), "started", False):
                    await asyncio.sleep(0.05)
                if on_ready is not None:
                    on_ready(f"http://{args.host}:{args.port}/v1")

            ready = asyncio.get_running_loop().create_task(announce())
            uvicorn = {"log_config": config} if (config := get_uvicorn_log_config(args)) is not None else {}
            shutdown = await serve_http(app, sock=sock, host=args.host, port=args.port,
                                        log_level=args.uvicorn_log_level, access_log=False, **uvicorn)
            ready.cancel()
        await shutdown
    finally:
        sock.close()
