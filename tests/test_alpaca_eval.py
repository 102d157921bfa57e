"""AlpacaEval both ways, as docs/evaluation.md#alpacaeval writes them: `pargs-batch export --format
alpaca-eval` turns a run into AlpacaEval's model outputs (one per prompt, in the run's order, error
rows left out and counted, one sample chosen), and the page's blocks run as written in a reader's
directory holding an `alpaca_eval.json`-shaped array - in batch (init, generate, export) and served
(the generator's model config and the client configs, against `pargs-batch serve`). OpenAI's API is
stood in for by a local HTTP server (it prefers the first output it is shown), reached as the
annotator reaches OpenAI: the `default` client configs, the `openai` library's own endpoint setting.

AlpacaEval is not a dependency of this project: where it is installed, `alpaca_eval` itself runs the
page's last steps (with the plain win rate: the length-controlled one downloads its model from the
hub and needs hundreds of instructions); where it is not, those tests skip and the served recipe's
two halves run as AlpacaEval runs them - the generator's requests through the client its configs
give model `pargs`, the annotator's through the one they give `gpt-4-1106-preview` - showing that
the annotator's requests reach the stand-in and not the guided server."""

from __future__ import annotations

import json
import shutil
import signal
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.util import find_spec
from pathlib import Path

import pytest
import yaml
from helpers import BLOCK, SKIP, Server, free_port, generate_rows, reader_dir, run_block, send_json

from pargs_batch.cli import main

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "evaluation.md"
ANNOTATOR_MODEL = "gpt-4-1106-preview"  # AlpacaEval 2.0's annotator (weighted_alpaca_eval_gpt4_turbo)
ANNOTATOR_KEY = "sk-annotator-key"
HAS_ALPACA_EVAL = find_spec("alpaca_eval") is not None and shutil.which("alpaca_eval") is not None
PLAIN_WIN_RATE = " --fn_metric get_winrate --sort_by win_rate"  # offline, and meaningful on five instructions
needs_alpaca_eval = pytest.mark.skipif(not HAS_ALPACA_EVAL, reason="alpaca_eval is not installed (not a dependency)")


# ------------------------------------------------------------------ the export, on a run of the tiny world


@pytest.fixture(scope="module")
def run_with_errors(world, models, tmp_path_factory):
    """A run of four prompts (the third empty: an error row), two samples each."""
    tmp = tmp_path_factory.mktemp("export")
    prompts = [json.loads(line) for line in open(world["prompts"])][:4]
    prompts[2]["prompt"] = ""
    (tmp / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in prompts))
    rows, _ = generate_rows(world, tmp, models, name="run", data={"source": str(tmp / "prompts.jsonl")},
                            decode={"num_samples": 2, "max_new_tokens": 8})
    return tmp / "run", rows


def export(capsys, *argv) -> tuple[int, str, str]:
    code = main(["export", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_export_writes_one_answer_per_prompt_in_order_and_counts_the_errors(run_with_errors, world, capsys):
    path, rows = run_with_errors
    code, out, err = export(capsys, "--format", "alpaca-eval", path)
    assert code == 0
    exported = json.loads(out)
    good = [r for r in rows if r["sample_index"] == 0 and r["error"] is None]
    assert len(good) == 3 and len(rows) == 8
    assert [e["instruction"] for e in exported] == [r["prompt"] for r in good]
    assert [e["output"] for e in exported] == [r["response"] for r in good]
    assert {e["generator"] for e in exported} == {f"{Path(world['llm']).name}-pargs-beta2-k10"}
    assert all(set(e) == {"instruction", "output", "generator"} for e in exported)
    bad = next(r["id"] for r in rows if r["error"] is not None)
    lines = err.splitlines()
    assert "the run has 2 samples per prompt; exported sample 0 (--sample N for another)" in lines[0]
    assert lines[1] == (f"export: left out 1 row(s) with an error (AlpacaEval needs an output for every "
                        f"instruction): {bad}")
    assert lines[2].startswith("export: wrote 3 outputs of ") and len(lines) == 3


def test_export_takes_another_sample_and_generator_name_into_a_file(run_with_errors, tmp_path, capsys):
    path, rows = run_with_errors
    out = tmp_path / "deep" / "model_outputs.json"
    code, stdout, err = export(capsys, "--format", "alpaca-eval", path, "--out", out, "--sample", 1,
                               "--generator", "my-model")
    assert code == 0 and stdout == "" and "samples per prompt" not in err
    exported = json.loads(out.read_text())
    second = [r for r in rows if r["sample_index"] == 1 and r["error"] is None]
    assert [e["output"] for e in exported] == [r["response"] for r in second]
    assert [r["response"] for r in second] != [r["response"] for r in rows if r["sample_index"] == 0
                                               and r["error"] is None]
    assert {e["generator"] for e in exported} == {"my-model"}
    assert not list(out.parent.glob("*.tmp"))


@pytest.mark.parametrize("case, argv, message", [
    ("missing", ["{tmp}/nowhere"], "RUN_DIR='{tmp}/nowhere' is not allowed: a run directory that pargs-batch "
                                   "generate wrote (no such directory)"),
    ("empty", ["{tmp}"], "RUN_DIR='{tmp}' is not allowed: a run directory that pargs-batch generate wrote (it "
                         "holds no part-*.parquet files)"),
    ("sample", ["{run}", "--sample", "2"], "--sample=2 is not allowed: a sample index in [0, 1] (the run has 2 "
                                           "samples per prompt)"),
])
def test_bad_input_fails_with_one_line(run_with_errors, tmp_path, capsys, case, argv, message):
    path, _ = run_with_errors
    fill = {"tmp": tmp_path, "run": path}
    out = tmp_path / "out.json"
    code, stdout, err = export(capsys, "--format", "alpaca-eval", *[a.format(**fill) for a in argv], "--out", out)
    assert code == 2 and stdout == "" and not out.exists()
    assert err.splitlines() == ["config error: " + message.format(**fill)]


def test_a_run_with_no_rows_fails_with_one_line(run_with_errors, tmp_path, capsys):
    """Part files that hold no rows (the run's schema, zero rows) are no answers to give AlpacaEval."""
    import pyarrow.parquet as pq

    path, _ = run_with_errors
    empty = tmp_path / "empty"
    empty.mkdir()
    first = sorted(path.glob("part-*.parquet"))[0]
    table = pq.read_table(first)
    pq.write_table(table.slice(0, 0).replace_schema_metadata(table.schema.metadata), empty / first.name)
    code, _, err = export(capsys, "--format", "alpaca-eval", empty)
    assert code == 2 and err.splitlines() == [f"config error: RUN_DIR={str(empty)!r} is not allowed: a run with rows "
                                              "(its part files hold none)"]


# ------------------------------------------------------------------ a stand-in for OpenAI's API


class StandIn:
    """An OpenAI-compatible chat endpoint on a free port that answers every request as AlpacaEval 2.0's
    annotator would if it preferred output ``m`` (the first shown): one token with its top log-probs.
    It keeps each request (path, Authorization header, body)."""

    def __init__(self):
        self.requests: list[tuple[str, str, dict]] = []
        seen = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                seen.append((self.path, self.headers.get("Authorization"), body))
                top = [{"token": "m", "logprob": -0.1, "bytes": [109]}, {"token": "M", "logprob": -2.4, "bytes": [77]}]
                answer = {"id": f"standin-{len(seen)}", "object": "chat.completion", "created": 0,
                          "model": body.get("model"),
                          "choices": [{"index": 0, "finish_reason": "length",
                                       "message": {"role": "assistant", "content": "m"},
                                       "logprobs": {"content": [{**top[0], "top_logprobs": top}]}}],
                          "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
                send_json(self, answer)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# ------------------------------------------------------------------ the page's blocks, in a reader's directory


def page_blocks() -> list[tuple[str, str, str]]:
    """(the line above, language, code) of each bash/python block of the page's AlpacaEval section."""
    text = PAGE.read_text()
    section = text[text.index("## AlpacaEval"):]
    section = section[:section.find("\n## ", 1)] if "\n## " in section[1:] else section
    return [(m["before"], m["lang"], m["code"]) for m in BLOCK.finditer(section)]


def block(containing: str) -> tuple[str, str]:
    """The one block of the section whose code contains ``containing``: (the line above, code)."""
    found = [(before, code) for before, lang, code in page_blocks() if containing in code]
    assert len(found) == 1, f"{len(found)} blocks contain {containing!r}"
    return found[0]


def test_every_block_of_the_section_is_run_here_or_says_why_not():
    run_always = [code for before, _, code in page_blocks() if not before.startswith("<!--")]
    only_installed = [code for before, _, code in page_blocks() if "where alpaca_eval is installed" in before]
    not_run = [code for before, _, code in page_blocks() if before.startswith(SKIP)]
    assert len(run_always) == 2 and len(only_installed) == 2 and len(not_run) == 2
    assert "export OPENAI_BASE_URL" not in PAGE.read_text()


INSTRUCTIONS = 5


@pytest.fixture(scope="module")
def reader(world, chat_world, tmp_path_factory):
    """A reader's directory: AlpacaEval's two files (five of the world's prompts as instructions; the
    references carry a fresh tag, so AlpacaEval's annotation cache never answers for the stand-in),
    the stand-in as OpenAI's API, and the page's batch block run in it."""
    tmp = tmp_path_factory.mktemp("alpaca-reader")
    env = reader_dir(world, chat_world, tmp)
    prompts = [json.loads(line)["prompt"] for line in open(world["prompts"])][:INSTRUCTIONS]
    tag = uuid.uuid4().hex[:8]
    for name, generator in (("alpaca_eval.json", "text_davinci_003"), ("alpaca_eval_gpt4_baseline.json", "gpt4_turbo")):
        records = [{"instruction": p, "output": f"a reference answer ({generator}, {tag})", "generator": generator,
                    "dataset": "helpful_base"} for p in prompts]
        (tmp / name).write_text(json.dumps(records, indent=2))
    stand_in = StandIn()
    env.update(OPENAI_API_KEY=ANNOTATOR_KEY, OPENAI_BASE_URL=stand_in.url)  # OpenAI's API, as the openai library finds it
    _, batch = block("pargs-batch export")
    result = run_block("bash", batch, tmp, env)
    yield {"dir": tmp, "env": env, "stand_in": stand_in, "instructions": prompts, "stderr": result.stderr}
    stand_in.close()


@pytest.mark.slow
def test_the_batch_blocks_export_is_alpaca_evals_model_outputs(reader, chat_world):
    import pargs_batch as pb

    tmp = reader["dir"]
    exported = json.loads((tmp / "model_outputs.json").read_text())
    rows = pb.read_output(tmp / "outputs" / "alpaca_eval-pargs").to_pylist()
    assert [e["instruction"] for e in exported] == reader["instructions"] == [r["prompt"] for r in rows]
    assert [e["output"] for e in exported] == [r["response"] for r in rows]
    decode = yaml.safe_load((tmp / "alpaca.yaml").read_text())["decode"]
    name = f"{Path(chat_world['llm']).name}-{decode['method']}-beta{decode['beta']:g}-k{decode['top_k']}"
    assert {e["generator"] for e in exported} == {name}
    assert "export: wrote 5 outputs of outputs/alpaca_eval-pargs" in reader["stderr"]
    assert not reader["stand_in"].requests  # nothing of the batch way talks to OpenAI before alpaca_eval


def annotator_requests(stand_in, since: int) -> list[dict]:
    return [body for path, auth, body in stand_in.requests[since:]
            if path == "/v1/chat/completions" and auth == f"Bearer {ANNOTATOR_KEY}" and body["model"] == ANNOTATOR_MODEL]


@pytest.mark.slow
@needs_alpaca_eval
def test_alpaca_eval_judges_the_export_with_its_annotator_on_openais_endpoint(reader):
    stand_in = reader["stand_in"]
    since = len(stand_in.requests)
    _, command = block("alpaca_eval --model_outputs")
    result = run_block("bash", command.strip() + PLAIN_WIN_RATE, reader["dir"], reader["env"])
    judged = annotator_requests(stand_in, since)
    assert len(judged) == len(stand_in.requests) - since == INSTRUCTIONS
    assert all(any(i in b["messages"][-1]["content"] for i in reader["instructions"]) for b in judged)
    assert "win_rate" in result.stdout


# ------------------------------------------------------------------ served


@pytest.fixture(scope="module")
def served(reader):
    """``pargs-batch serve --config alpaca.yaml --served-model-name pargs`` as the page starts it, on a free
    port (from the test's directory: the config's relative paths made absolute), and the page's
    configs block run with that port."""
    config = yaml.safe_load((reader["dir"] / "alpaca.yaml").read_text())
    for section, key in (("data", "source"), ("output", "path")):
        config[section][key] = str(reader["dir"] / config[section][key])
    server = Server(config, reader["dir"] / "serve", "--served-model-name", "pargs")
    server.wait_ready()
    before, configs = block("client_configs.yaml <<EOF")
    assert "127.0.0.1:8000/v1" in configs and not before.startswith("<!--")
    run_block("bash", configs.replace("127.0.0.1:8000/", f"127.0.0.1:{server.port}/"), reader["dir"], reader["env"])
    yield server
    assert server.stop() in (0, -signal.SIGINT, 130)


def guided(server) -> float:
    return sum(v for k, v in server.metrics().items() if k.startswith("pargs_guided_requests_total"))


def client_for(model_name: str, reader):
    """The client AlpacaEval makes for ``model_name`` from the client configs (its
    ``utils.get_all_clients``: the model's own entry if it has one, else ``default``; one entry each here)."""
    import openai

    configs = yaml.safe_load((reader["dir"] / "client_configs.yaml").read_text())
    entries = configs.get(model_name, configs["default"])
    assert len(entries) == 1
    return openai.OpenAI(**entries[0], max_retries=0)


@pytest.mark.slow
def test_the_served_recipe_sends_the_generator_to_the_server_and_the_annotator_elsewhere(reader, served, monkeypatch):
    """The two halves of ``alpaca_eval evaluate_from_model`` as it makes them: the generator's chat
    requests (the model config's kwargs, AlpacaEval's ``top_p``) and then the annotator's."""
    stand_in, instructions = reader["stand_in"], reader["instructions"]
    monkeypatch.setenv("OPENAI_BASE_URL", stand_in.url)  # OpenAI's API, where the openai library finds it
    model = yaml.safe_load((reader["dir"] / "pargs" / "configs.yaml").read_text())["pargs"]
    kwargs = dict(model["completions_kwargs"])
    name = kwargs.pop("model_name")
    assert name == "pargs" and kwargs.pop("requires_chatml") is True and model["fn_completions"] == "openai_completions"
    assert "client_kwargs" not in kwargs  # the endpoint is the client configs' business
    since, count = len(stand_in.requests), guided(served)
    generator = client_for(name, reader)
    answers = [generator.chat.completions.create(model=name, messages=[{"role": "user", "content": i}], top_p=1.0,
                                                 **kwargs).choices[0].message.content for i in instructions]
    assert all(a.strip() for a in answers)
    assert guided(served) - count == INSTRUCTIONS and len(stand_in.requests) == since
    annotator = client_for(ANNOTATOR_MODEL, reader)
    for i, a in zip(instructions, answers):
        annotator.chat.completions.create(model=ANNOTATOR_MODEL, max_tokens=1, temperature=1, logprobs=True,
                                          top_logprobs=5, messages=[{"role": "user", "content": f"{i}\nm: {a}"}])
    assert len(annotator_requests(stand_in, since)) == len(stand_in.requests) - since == INSTRUCTIONS
    assert guided(served) - count == INSTRUCTIONS  # the guided server saw none of the annotator's


@pytest.mark.slow
@needs_alpaca_eval
def test_alpaca_eval_asks_the_server_and_judges_with_its_annotator_on_openais_endpoint(reader, served):
    stand_in, tmp = reader["stand_in"], reader["dir"]
    since, count = len(stand_in.requests), guided(served)
    shutil.rmtree(tmp / "results", ignore_errors=True)
    _, command = block("alpaca_eval evaluate_from_model")
    result = run_block("bash", command.strip() + PLAIN_WIN_RATE, tmp, reader["env"])
    assert guided(served) - count == INSTRUCTIONS
    # every request the annotator sent reached the stand-in; AlpacaEval's annotation cache (kept in its
    # package) may answer for an (instruction, output, reference) the batch test's run judged already
    judged = annotator_requests(stand_in, since)
    assert 0 < len(judged) == len(stand_in.requests) - since <= INSTRUCTIONS
    outputs = json.loads((tmp / "results" / "pargs" / "model_outputs.json").read_text())
    assert [o["instruction"] for o in outputs] == reader["instructions"]
    assert {o["generator"] for o in outputs} == {"pargs"} and all(o["output"] for o in outputs)
    assert "win_rate" in result.stdout, result.stdout + result.stderr[-3000:]
