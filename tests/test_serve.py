"""`pargs-batch serve`: vLLM's OpenAI-compatible server with reward guidance per request, started as a
user starts it and spoken to with the real ``openai`` client on localhost.

One server on the tiny world serves the module (its start is the cost); the batch rows it must
reproduce come from ``engine.mode: fused`` runs of the same config in this process."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from pathlib import Path

import pytest
import yaml
from helpers import Server, base_config, doc_blocks, run_block

from pargs_batch import decoding
from pargs_batch.config import GenerateConfig
from pargs_batch.configlib import ConfigError, build
from pargs_batch.serving.server import Policy, RequestError

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.xdist_group("serve")  # one worker: its servers start once
METHODS = ("topk", "args", "pargs-greedy", "pargs")
PROMPTS = 8


def serve_config(world, tmp_path) -> dict:
    cfg = base_config(world, tmp_path, engine={"mode": "fused"}, data={"limit": PROMPTS})
    cfg["model"]["log_stats"] = True
    return cfg


@pytest.fixture(scope="module")
def server(world, tmp_path_factory):
    server = Server(serve_config(world, tmp_path_factory.mktemp("serve")), tmp_path_factory.mktemp("serve-run"))
    server.stages = server.wait_ready()
    yield server
    assert server.stop() in (0, -signal.SIGINT, 130)


@pytest.fixture(scope="module")
def batch_rows(world, tmp_path_factory):
    """The fused batch run's rows per (method, beta, k): what a served request must equal."""
    import pargs_batch as pb

    tmp = tmp_path_factory.mktemp("serve-batch")
    runs = {}
    with pb.Models() as models:
        for method, beta, k in [(m, 2.0, 10) for m in METHODS] + [("pargs", 4.0, 5)]:
            cfg = build(GenerateConfig, serve_config(world, tmp / f"{method}-{beta}-{k}"))
            cfg = cfg.with_overrides(decode={"method": method, "beta": beta, "top_k": k})
            pb.generate(cfg, models=models, progress=False)
            runs[(method, beta, k)] = pb.read_output(cfg.output.path).to_pylist()
    return runs


def client(server, **kwargs):
    import openai

    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0, **kwargs)


def complete(c, world, row, method, **extra):
    """One completion for a batch row's prompt and id, with its token ids."""
    body = {"method": method, "id": row["id"], "return_token_ids": True, **extra}
    r = c.completions.create(model=world["llm"], prompt=row["prompt"], extra_body=body)
    return r.choices[0]


# ------------------------------------------------------------------ the request's checks (no server)


@pytest.fixture(scope="module")
def policy(world, tmp_path_factory):
    cfg = build(GenerateConfig, serve_config(world, tmp_path_factory.mktemp("policy")))
    return Policy.of(cfg, [0, 7])


def test_a_request_without_guidance_fields_gets_the_configs_decode_section(policy):
    body, method = policy.translate({"model": "m", "prompt": "hello"}, chat=False)
    args = json.loads(body["vllm_xargs"]["pargs_batch"])
    assert method == "pargs" and args["k"] == 10 and args["beta"] == 2.0 and args["guided"] and not args["greedy"]
    assert args["prompt"] == "hello" and args["keep"] is False
    assert body["max_tokens"] == 16 and body["temperature"] == 1.0 and "top_k" not in body
    assert body["stop_token_ids"] == [0, 7]
    # the seed of a batch run's row: decode.seed, the row id ("" without one), sample 0
    assert body["seed"] == int(decoding.request_seed(0, decoding.id_hashes([""]), [0])[0])


def test_request_fields_map_onto_the_batch_rows_settings(policy):
    body, method = policy.translate({"prompt": "x", "method": "args", "beta": 0.5, "top_k": 3, "seed": 4, "id": "p7",
                                     "temperature": 0.7, "stop_token_ids": [5], "max_tokens": 3}, chat=False)
    args = json.loads(body["vllm_xargs"]["pargs_batch"])
    assert method == "args" and (args["k"], args["beta"], args["greedy"]) == (3, 0.5, True)
    assert body["temperature"] == 0.0 and body["max_tokens"] == 3 and body["stop_token_ids"] == [5, 0, 7]
    assert body["seed"] == int(decoding.request_seed(4, decoding.id_hashes(["p7"]), [0])[0])
    body, method = policy.translate({"prompt": "x", "method": "topk", "beta": 3.0}, chat=False)
    assert json.loads(body["vllm_xargs"]["pargs_batch"])["beta"] == 0.0  # top-k sampling is beta = 0
    body, _ = policy.translate({"prompt": "x", "temperature": 0}, chat=False)  # a harness's greedy setting
    assert json.loads(body["vllm_xargs"]["pargs_batch"])["greedy"] and body["temperature"] == 0.0
    body, _ = policy.translate({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}, chat=True)
    assert json.loads(body["vllm_xargs"]["pargs_batch"])["prompt"] == [{"role": "user", "content": "hi"}]
    body, method = policy.translate({"prompt": "x", "guidance": False, "top_k": 5}, chat=False)
    assert method is None and "vllm_xargs" not in body and body["top_k"] == 5  # vLLM's own sampling
    body, method = policy.translate({"prompt": "x", "guidance": False, "repetition_penalty": 1.3}, chat=False)
    assert method is None and body["repetition_penalty"] == 1.3  # penalties without guidance are vLLM's
    body, method = policy.translate({"prompt": "x", "repetition_penalty": 1.0, "presence_penalty": 0}, chat=False)
    assert method == "pargs"  # neutral values change nothing on either runner


@pytest.mark.parametrize("field, value, allowed", [
    ("method", "best-of-n", "one of topk, args, pargs-greedy, pargs"),
    ("beta", -1, "a finite number >= 0"),
    ("beta", "2", "a finite number >= 0"),
    ("top_k", 0, "an integer in [1, 20]"),
    ("top_k", 21, "an integer in [1, 20]"),
    ("top_k", True, "an integer in [1, 20]"),
    ("temperature", -0.5, "a number >= 0"),
    ("seed", -1, "an integer >= 0"),
    ("id", ["a"], "a string"),
    ("reward_weights", [1.0], "needs reward.models"),
    ("n", 2, "1: one response per request"),
    ("prompt", ["a", "b"], "one prompt string per guided request"),
    ("guidance", "yes", "true (reward guidance, the default) or false"),
    ("repetition_penalty", 1.2, "1.0 (or omitted) with guidance: vLLM's CUDA model runner applies penalties before"),
    ("presence_penalty", 0.5, "0.0 (or omitted) with guidance"),
    ("frequency_penalty", -0.1, "0.0 (or omitted) with guidance"),
])
def test_a_bad_field_is_refused_naming_the_field_the_value_and_what_is_allowed(policy, field, value, allowed):
    with pytest.raises(RequestError) as e:
        policy.translate({"prompt": "hello", field: value}, chat=False)
    assert e.value.name == field and str(e.value).startswith(f"{field}={value!r}: ") and allowed in str(e.value)


def test_several_reward_models_take_per_request_weights(world, tmp_path):
    cfg = serve_config(world, tmp_path)
    cfg["reward"] = {"models": [{"path": world["reward_model"]}, {"path": world["reward_model"], "weight": 0.5}]}
    policy = Policy.of(build(GenerateConfig, cfg), [0])
    body, _ = policy.translate({"prompt": "x", "reward_weights": [1, -2]}, chat=False)
    assert json.loads(body["vllm_xargs"]["pargs_batch"])["weights"] == [1.0, -2.0]
    with pytest.raises(RequestError, match=r"reward_weights=\[1\]: a list of 2 finite numbers"):
        policy.translate({"prompt": "x", "reward_weights": [1]}, chat=False)


def test_serve_refuses_a_method_it_cannot_serve_before_any_model_loads(world, tmp_path):
    from pargs_batch.cli import main

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(base_config(world, tmp_path, decode={"method": "best-of-n"})))
    assert main(["serve", "--config", str(path)]) == 2
    with pytest.raises(ConfigError, match="decode.method"):
        import pargs_batch as pb

        pb.serve(str(path))


# ------------------------------------------------------------------ the server


@pytest.mark.slow
def test_served_completions_equal_the_batch_rows_token_for_token(server, batch_rows, world):
    assert "serve: ready at " + server.url + "/v1" in server.stages
    c = client(server)
    for (method, beta, k), rows in batch_rows.items():
        extra = {} if (beta, k) == (2.0, 10) else {"beta": beta, "top_k": k}
        for row in rows:
            choice = complete(c, world, row, method, **extra)
            assert choice.token_ids == row["response_token_ids"], (method, beta, k, row["id"])
            assert choice.text == row["response"]
            assert choice.finish_reason == {"eos": "stop", "stop": "stop", "length": "length"}[row["finish_reason"]]
    # streamed, the same text
    row = batch_rows[("pargs", 2.0, 10)][3]
    stream = c.completions.create(model=world["llm"], prompt=row["prompt"], stream=True,
                                  extra_body={"method": "pargs", "id": row["id"]})
    assert "".join(chunk.choices[0].text for chunk in stream) == row["response"]
    # another seed is another draw; the same request again the same one
    again = [complete(c, world, r, "pargs").token_ids for r in batch_rows[("pargs", 2.0, 10)]]
    other = [complete(c, world, r, "pargs", seed=1).token_ids for r in batch_rows[("pargs", 2.0, 10)]]
    assert again == [r["response_token_ids"] for r in batch_rows[("pargs", 2.0, 10)]] and other != again


@pytest.mark.slow
def test_bad_requests_are_400s_before_any_token_and_the_server_stays_up(server, batch_rows, world):
    import openai

    c = client(server)
    before = server.metrics()
    for body, field in [({"method": "beam"}, "method"), ({"top_k": 64}, "top_k"), ({"beta": -2}, "beta"),
                        ({"reward_weights": [1, 2]}, "reward_weights")]:
        with pytest.raises(openai.BadRequestError) as e:
            c.completions.create(model=world["llm"], prompt="a review :", extra_body=body)
        assert e.value.status_code == 400 and re.search(rf"\b{field}=", e.value.message), e.value.message
    with pytest.raises(openai.BadRequestError, match="maximum context length is 256"):  # vLLM's own check
        c.completions.create(model=world["llm"], prompt="good " * 300, extra_body={"method": "pargs"})
    after = server.metrics()
    assert after["pargs_guidance_steps_total"] == before["pargs_guidance_steps_total"]  # nothing generated
    refused = 'pargs_refused_requests_total{field="top_k"}'
    assert after[refused] - before.get(refused, 0) == 1  # this test's one top_k refusal
    row = batch_rows[("args", 2.0, 10)][0]
    assert complete(c, world, row, "args").token_ids == row["response_token_ids"]


@pytest.mark.slow
def test_64_concurrent_requests_of_mixed_methods_and_lengths_all_get_their_tokens(server, batch_rows, world):
    import openai

    async def run():
        c = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)
        jobs = [(m, row, n) for m in METHODS for row in batch_rows[(m, 2.0, 10)] for n in (5, 16)]
        assert len(jobs) == 64

        async def one(method, row, n):
            r = await c.completions.create(model=world["llm"], prompt=row["prompt"], max_tokens=n,
                                           extra_body={"method": method, "id": row["id"], "return_token_ids": True})
            return r.choices[0].token_ids

        return jobs, await asyncio.gather(*(one(*j) for j in jobs))

    jobs, got = asyncio.run(run())
    for (method, row, n), ids in zip(jobs, got):
        assert ids == row["response_token_ids"][:n], (method, row["id"], n)
    assert server.metrics()["vllm:num_requests_running{engine=\"0\",model_name=\"" + world["llm"] + "\"}"] == 0


@pytest.mark.slow
def test_a_client_that_disconnects_mid_stream_is_aborted_and_its_row_freed(server, batch_rows, world):
    import httpx

    running = f'vllm:num_requests_running{{engine="0",model_name="{world["llm"]}"}}'
    generated = f'vllm:generation_tokens_total{{engine="0",model_name="{world["llm"]}"}}'
    body = {"model": world["llm"], "prompt": "review of the movie :", "max_tokens": 240, "ignore_eos": True,
            "stream": True, "method": "pargs"}
    before = server.metrics()[generated]
    for _ in range(3):
        with httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=60) as response:
            assert response.status_code == 200
            chunks = response.iter_lines()
            got = [next(chunks) for _ in range(4)]  # two tokens in: then the client goes away
            assert all(line.startswith("data: ") or not line for line in got)
    # no deadline: aborted or not, the requests end (at 240 tokens at most), and the count below tells which
    while server.metrics()[running] > 0:
        time.sleep(0.2)
    m = server.metrics()
    assert m[running] == 0
    # aborted: far fewer than the 3 x 240 tokens they asked for were generated
    assert m[generated] - before < 240, m[generated] - before
    row = batch_rows[("pargs", 2.0, 10)][1]  # the next request is unaffected
    assert complete(client(server), world, row, "pargs").token_ids == row["response_token_ids"]
    # and at its first step the aborted requests' rows were freed: only its own is held (until the next step)
    assert server.metrics()["pargs_guidance_rows_held"] <= 1


@pytest.mark.slow
def test_memory_stays_flat_over_500_requests_and_no_row_is_left(server, world):
    import openai

    def rss() -> int:
        return sum(p.memory_info().rss for p in server.processes())

    async def burst(n: int, offset: int, guided: bool = True):
        c = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)
        gate = asyncio.Semaphore(32)

        async def one(i):
            body = {"method": METHODS[i % 4], "id": str(i)} if guided else {"guidance": False}
            async with gate:
                await c.completions.create(model=world["llm"], prompt=f"review {i} :", max_tokens=4, extra_body=body)

        await asyncio.gather(*(one(offset + i) for i in range(n)))

    def grown(n: int, offset: int, guided: bool) -> int:
        before = rss()
        asyncio.run(burst(n, offset, guided))
        return rss() - before

    def guided_requests() -> float:
        return sum(v for k, v in server.metrics().items() if k.startswith("pargs_guided_requests_total"))

    sent_before = guided_requests()  # what the other tests sent this server, if they ran first
    asyncio.run(burst(200, 0))  # warm-up: every method's path, the allocator's arenas
    asyncio.run(burst(50, 200, guided=False))
    # vLLM's CPU worker grows by a few MiB per 100 requests with or without guidance (its allocator,
    # without tcmalloc; one clean run saw 72 MiB over 300 guided requests); a leak of the guidance's
    # own is a cost per guided request on top: the same number of plain requests on the same server
    # is the control
    plain = grown(300, 250, guided=False)
    guided = grown(300, 550, guided=True)
    assert server.metrics()["pargs_guidance_rows_held"] <= 32  # at most the last step's requests
    asyncio.run(burst(1, 850))
    m = server.metrics()
    assert m["pargs_guidance_rows_held"] <= 1  # and those freed at the next step
    mib = f"{guided / 2**20:.1f} MiB over 300 guided requests, {plain / 2**20:.1f} MiB over 300 plain ones"
    assert guided - plain < 32 << 20 and guided < 128 << 20, f"server processes grew by {mib}"
    print(f"server processes grew by {mib}")
    # 501 guided requests of its own and 350 with guidance off (counted as method "none")
    assert guided_requests() - sent_before == 851


# ------------------------------------------------------------------ a chat model


def chat_serve_config(world, chat_world, tmp_path) -> dict:
    """The chat world: its LLM (two end ids, a chat template) and a reward head reading the
    conversation through its chat template (``reward.input: chat``)."""
    cfg = base_config(world, tmp_path, engine={"mode": "fused"}, data={"chat_template": True, "limit": PROMPTS},
                      decode={"max_new_tokens": 48})
    cfg["model"] = {"path": chat_world["llm"], "dtype": "float32", "max_model_len": 256,
                    "kv_cache_memory_bytes": 64 << 20}
    cfg["reward"] = {"path": chat_world["reward_model"], "input": "chat", "batch_size": 16}
    return cfg


@pytest.mark.slow
def test_chat_completions_use_the_chat_template_and_end_set_and_equal_the_batch_rows(
        world, chat_world, tmp_path_factory):
    """A chat request is rendered by the model's chat template as the batch run renders
    ``data.chat_template`` prompts, stops on either end id, and its reward model reads the
    conversation: the reply is the batch row, greedy and sampled."""
    import pargs_batch as pb

    tmp = tmp_path_factory.mktemp("serve-chat")
    server = Server(chat_serve_config(world, chat_world, tmp / "cfg"), tmp / "run")
    rows = {}
    with pb.Models() as models:
        for method in ("pargs-greedy", "pargs"):
            cfg = build(GenerateConfig, chat_serve_config(world, chat_world, tmp / method)).with_overrides(
                decode={"method": method})
            pb.generate(cfg, models=models, progress=False)
            rows[method] = pb.read_output(cfg.output.path).to_pylist()
    stages = server.wait_ready()
    try:
        c = client(server)
        ends = {chat_world["end_id"], chat_world["eot_id"]}
        enders = set()
        for method, batch in rows.items():
            for row in batch:
                r = c.chat.completions.create(model=chat_world["llm"],
                                              messages=[{"role": "user", "content": row["prompt"]}],
                                              extra_body={"method": method, "id": row["id"], "return_token_ids": True})
                choice = r.choices[0]
                assert choice.token_ids == row["response_token_ids"], (method, row["id"])
                assert choice.message.content == row["response"]
                assert choice.finish_reason == ("stop" if row["finish_reason"] == "eos" else "length")
                if row["finish_reason"] == "eos":
                    enders.add(row["response_token_ids"][-1])
        assert enders == ends  # replies ended on both ids: a server stopping on one alone would run on
        # streamed, the same reply
        row = rows["pargs"][2]
        stream = c.chat.completions.create(model=chat_world["llm"], stream=True,
                                           messages=[{"role": "user", "content": row["prompt"]}],
                                           extra_body={"method": "pargs", "id": row["id"]})
        assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == row["response"]
        # the docs' worked example, as a reader runs it: the client configured from the environment
        (lang, code), = doc_blocks(ROOT / "docs" / "serving.md")
        env = dict(os.environ, OPENAI_BASE_URL=f"{server.url}/v1", OPENAI_API_KEY="none")
        printed = run_block(lang, code, tmp, env).stdout.splitlines()
        assert printed[-1] == ("Error code: 400 - top_k=0: candidates per step: an integer in [1, 20] (the server's "
                               "model.max_logprobs)")
        assert printed[0].endswith((" stop", " length"))
    finally:
        code = server.stop(signal.SIGTERM)  # as a service manager (or `kill`) stops it
    # a clean stop, and the terminal ends on the command's own last line: what the libraries print as the
    # process exits (nanobind's leak report of triton's objects, torch and vLLM import triton) goes to the log
    out, err = server.rest()
    said = out + stages + err
    assert code in (0, -signal.SIGTERM, 143), said
    assert not re.search(r"nanobind|leaked", said), said
    assert err.splitlines()[-1] == f"log: {server.log} (library output; --verbose shows it here)", said


@pytest.mark.slow
def test_metrics_show_vllms_and_the_guidances_own(server, world):
    """What this test's own requests (one of each method) add to the counters: whatever the other tests
    sent this server before, in whatever order they ran."""
    c = client(server)
    before = server.metrics()
    for method in METHODS:
        c.completions.create(model=world["llm"], prompt="a review :", max_tokens=4, extra_body={"method": method})
    after = server.metrics()

    def added(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert added(f'vllm:prompt_tokens_total{{engine="0",model_name="{world["llm"]}"}}') > 0
    assert added("pargs_guidance_steps_total") > 0 and added("pargs_guidance_candidates_scored_total") > 0
    assert added("pargs_guidance_reward_seconds_total") > 0 and after["pargs_guidance_reward_seconds_per_step"] > 0
    assert {m: added(f'pargs_guided_requests_total{{method="{m}"}}') for m in METHODS} == dict.fromkeys(METHODS, 1)
