"""The default world at reduced size: built by the CLI, every artefact loads, the demo runs on it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

CLI = str(Path(sys.executable).parent / "pargs-batch")


def test_reduced_world_builds_fast_and_every_artefact_loads(reduced_world):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pargs_batch.config import RewardConfig
    from pargs_batch.rewards.hf import HFRewardScorer
    from experiments.world.gold import gold_reward

    w = reduced_world
    assert w["build_seconds"] > 0  # recorded; how long a build takes is the bench's business, not a test's
    assert 1.0 < w["llm_heldout_perplexity"] < 20
    lm = AutoModelForCausalLM.from_pretrained(w["llm"])
    assert lm.config.model_type == "gpt2" and AutoTokenizer.from_pretrained(w["llm"]).eos_token
    prompts = [json.loads(line)["prompt"] for line in Path(w["prompts"]).read_text().splitlines()]
    assert len(prompts) == 64 == len(set(prompts))

    # the splits are disjoint by prompt, and the demo's prompts appear in no training split
    splits = {name: [json.loads(line) for line in Path(path).read_text().splitlines()] for name, path in w["preferences"].items()}
    by_split = {name: {r["prompt"] for r in rows} for name, rows in splits.items()}
    assert not by_split["guidance"] & by_split["evaluation"]
    assert not (by_split["guidance"] | by_split["evaluation"]) & set(prompts)
    assert by_split["heldout"] <= set(prompts)
    # Bradley-Terry labels: mostly, not always, the reply with the higher gold reward is chosen
    rows = splits["guidance"]
    agree = sum(r["gold_chosen"] > r["gold_rejected"] for r in rows) / len(rows)
    assert 0.6 < agree < 0.98
    assert rows[0]["gold_chosen"] == gold_reward([rows[0]["prompt"]], [rows[0]["chosen"]])[0]

    tokenizers = {}
    for key in ("rm_full", "rm_partial", "rm_partial_causal", "rm_eval"):
        scorer = HFRewardScorer(RewardConfig(path=w[key], template=w["template"]))
        scores = scorer.score(prompts[:4], [" the staff was kind ."] * 4)
        assert scores.shape == (4,) and all(abs(s) < 1e3 for s in scores)
        tokenizers[key] = type(scorer.model).__name__, len(scorer.tokenizer)
        assert json.loads((Path(w[key]) / "training_summary.json").read_text())["steps"] > 0
    # a bidirectional RM with its own tokenizer, and a causal one sharing the LM's
    assert tokenizers["rm_full"][0].startswith("DebertaV2")
    assert tokenizers["rm_partial_causal"][0].startswith("GPT2")
    assert tokenizers["rm_partial_causal"][1] == len(AutoTokenizer.from_pretrained(w["llm"]))
    assert tokenizers["rm_full"][1] != tokenizers["rm_partial_causal"][1]
    # the autoregressive RM: the LM's architecture and tokenizer, marked as what it is, scored as one
    from pargs_batch.rewards.factory import make_scorer, trained_backend

    ar = w["rm_autoregressive"]
    assert trained_backend(ar) == "autoregressive" and trained_backend(w["rm_partial"]) == "hf"
    assert AutoTokenizer.from_pretrained(ar).get_vocab() == AutoTokenizer.from_pretrained(w["llm"]).get_vocab()
    scores = make_scorer(RewardConfig(path=ar, backend="autoregressive")).score(prompts[:4], [" the staff was kind ."] * 4)
    assert scores.shape == (4,) and all(-1e3 < s < 0 for s in scores)  # summed log-probabilities

    # two seeds of each reward model (the reduced spec's rm_seeds): the same recipe, other weights -
    # DeBERTa ones from an untrained start of their own - and each seed's accuracy on record
    from safetensors.torch import load_file

    for key in ("rm_full", "rm_partial", "rm_partial_causal", "rm_eval", "rm_autoregressive"):
        first, second = w["rm_seeds"][key]
        assert first == w[key] and second == str(Path(w[key]).parent / f"{key}_seed1")
        a, b = (load_file(str(Path(d) / "model.safetensors")) for d in (first, second))
        assert a.keys() == b.keys() and any(not (a[k] == b[k]).all() for k in a), key
        record = w["reward_models"][key]
        assert [s["path"] for s in record["seeds"]] == [first, second] and record["steps"] == record["seeds"][1]["steps"]
        assert record["seeds"][0]["seed"] != record["seeds"][1]["seed"]
        over = record["heldout_accuracy_over_seeds"]
        accuracies = [s["heldout_accuracy"] for s in record["seeds"]]
        assert over == {"mean": round(sum(accuracies) / len(accuracies), 4), "min": min(accuracies),
                        "max": max(accuracies)}, key
    inits = [load_file(str(Path(w["rm_init"]).parent / d / "model.safetensors")) for d in ("rm_init", "rm_init_seed1")]
    assert any(not (inits[0][k] == inits[1][k]).all() for k in inits[0])


def test_sample_gold_mean_covers_every_split_and_both_replies(reduced_world):
    from experiments.world.default import sample_gold_means
    from experiments.world.gold import gold_score

    p = "review of the cafe , mostly the coffee :"
    good, bad = " the coffee was very fresh .", " the coffee was stale ."
    drawn = {"guidance": ([p], [good], [bad]), "heldout": ([p, p], [bad, bad], [bad, good])}
    g, b = gold_score(p, good), gold_score(p, bad)
    out = sample_gold_means(drawn)
    assert out["guidance"] == round((g + b) / 2, 3) and out["heldout"] == round((3 * b + g) / 4, 3)
    assert out["all"] == round((2 * g + 4 * b) / 6, 3)
    # the world's manifest: every split, not the last loop's leftovers
    assert set(reduced_world["llm_sample_gold_by_split"]) == {"guidance", "evaluation", "heldout", "all"}
    assert reduced_world["llm_sample_gold_mean"] == reduced_world["llm_sample_gold_by_split"]["all"]


def test_gold_judge_server_answers_like_an_llm_judge_and_follows_the_gold_reward(tmp_path, monkeypatch):
    """The world's judge through the real openai client: the answer format parses, an exact judge
    (noise 0) prefers the reply with the higher gold reward in either order, grades repeat, a wrong
    key is refused, and an unreadable message gets an answer without grades."""
    from openai import AuthenticationError, OpenAI

    from experiments.world.gold import gold_score
    from experiments.world.judge_server import GoldJudgeServer
    from pargs_batch.evaluation.judge import load_template, parse_scores

    system, user = load_template("dialogue")
    q = "review of the cafe , mostly the coffee :"
    good, bad = "the coffee was very fresh . worth a visit .", "the coffee was stale but the staff was rude ."
    assert gold_score(q, good) > gold_score(q, bad)
    with GoldJudgeServer(noise=0.0, api_key="k") as server:
        client = OpenAI(base_url=server.url, api_key="k", max_retries=0)

        def ask(first, second, template=user):
            out = client.chat.completions.create(model="gold-judge", temperature=0.0, max_tokens=32, messages=[
                {"role": "system", "content": system},
                {"role": "user", "content": template.format(question=q, answer_1=first, answer_2=second)}])
            return out.choices[0].message.content

        one, two = parse_scores(ask(good, bad)), parse_scores(ask(bad, good))
        assert one[0] > one[1] and two == one[::-1]
        assert parse_scores(ask(good, bad)) == one
        assert parse_scores(ask(good, bad, "{question} / {answer_1} / {answer_2}")) is None
        _, summary = load_template("summary")
        assert parse_scores(ask(good, bad, summary)) == one
        with pytest.raises(AuthenticationError):
            OpenAI(base_url=server.url, api_key="wrong", max_retries=0).chat.completions.create(
                model="gold-judge", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(ValueError, match="localhost only"):
        GoldJudgeServer(host="0.0.0.0")


def test_judge_server_command_serves_until_stopped(tmp_path):
    """`pargs-batch world judge-server` as the README shows it: serves on the port, answers the
    openai client, stops on SIGTERM and on SIGINT even when its parent left SIGINT ignored (as
    after Ray or vLLM in this process); an unset key variable is a config error."""
    import os
    import signal
    import socket

    from openai import OpenAI

    with socket.socket() as sock:  # a free port
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "JUDGE_KEY": "k"}
    command = [CLI, "world", "judge-server", "--port", str(port), "--noise", "0", "--api-key-env", "JUDGE_KEY"]
    ignoring = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        assert "gold judge at" in ignoring.stdout.readline()
    finally:
        ignoring.send_signal(signal.SIGINT)
        assert ignoring.wait(timeout=600) == 0
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert f"gold judge at http://127.0.0.1:{port}/v1" in server.stdout.readline()
        reply = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0).chat.completions.create(
            model="gold-judge", messages=[{"role": "user", "content": "[Question]\nreview of the cafe , mostly the "
                                           "coffee :\n\n[Reply 1 begins]\n the coffee was fresh .\n[Reply 1 ends]\n\n"
                                           "[Reply 2 begins]\n the coffee was stale .\n[Reply 2 ends]"}])
        first = reply.choices[0].message.content.splitlines()[0].split()
        assert int(first[0]) > int(first[1])
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=600) == 0
    unset = subprocess.run([CLI, "world", "judge-server", "--api-key-env", "NO_SUCH_VARIABLE_HERE"],
                           capture_output=True, text=True, timeout=1800)
    assert unset.returncode == 2 and unset.stderr.startswith("config error: --api-key-env='NO_SUCH_VARIABLE_HERE'")


def test_the_same_seed_builds_the_same_world_byte_for_byte(reduced_world, tmp_path):
    """A second build in another process (another Python hash seed, so another order of every hash
    map, Rust's included) gives identical weights, tokenizers, preference and prompt files, and the
    same measured figures."""
    import os

    from experiments.world.default import artefact_hashes

    out = tmp_path / "again"
    result = subprocess.run([CLI, "world", "build", "--kind", "reduced", "--out", str(out)], capture_output=True,
                            text=True, timeout=1800, check=False, env={**os.environ, "PYTHONHASHSEED": "4242"})
    assert result.returncode == 0, result.stderr[-3000:]
    again = json.loads(result.stdout)
    # quiet: TRL's step logs went to the build's log, the terminal got one line per stage
    assert "train_runtime" in (out / "build.log").read_text() and "train_runtime" not in result.stderr
    assert "world: rm_partial (partial) trained: 40 steps" in result.stderr
    first, second = artefact_hashes(Path(reduced_world["llm"]).parent), artefact_hashes(out)
    # the LM, 2 untrained DeBERTa starts, 5 reward models x 2 seeds, 3 preference files, the prompts
    assert len(first) == 59 and "preferences_guidance.jsonl" in first
    assert {"rm_partial/model.safetensors", "rm_partial_seed1/model.safetensors", "rm_init_seed1/model.safetensors",
            "rm_autoregressive_seed1/model.safetensors"} <= set(first)
    assert sorted(k for k in first if first[k] != second.get(k)) == [] and set(first) == set(second)
    assert again["fingerprint"] == reduced_world["fingerprint"]
    for key in ("llm_heldout_perplexity", "llm_final_train_loss", "llm_sample_gold_by_split", "pairs", "matched_compute"):
        assert again[key] == reduced_world[key], key
    for name, rm in reduced_world["reward_models"].items():
        assert again["reward_models"][name]["heldout_accuracy"] == rm["heldout_accuracy"], name


def test_world_full_and_partial_rms_get_matched_compute(reduced_world):
    from experiments.world.default import DefaultWorldSpec

    spec, rms, matched = DefaultWorldSpec.reduced(), reduced_world["reward_models"], reduced_world["matched_compute"]
    assert rms["rm_full"]["steps"] == rms["rm_partial"]["steps"] == spec.rm_steps == matched["steps"]
    assert (rms["rm_full"]["learning_rate"], rms["rm_partial"]["learning_rate"]) == (spec.rm_lr_full, spec.rm_lr_partial)
    # prefix pairs are shorter, so the partial batch is larger, and the tokens a step agree within one example
    batches, tokens = matched["batches"], matched["tokens_per_example"]
    assert batches["full"] == spec.rm_batch_size < batches["partial"] == rms["rm_partial"]["batch_size"]
    assert abs(matched["tokens_per_step"]["partial"] - matched["tokens_per_step"]["full"]) <= tokens["partial"]
    # the autoregressive RM (the larger LM) at rm_partial's training FLOPs, 6 N x tokens: fewer steps,
    # the FLOPs within one of its steps of rm_partial's
    from experiments.bench.flops import flop_params

    ar, flops = matched["autoregressive"], matched["autoregressive"]["training_flops"]
    assert rms["rm_autoregressive"]["steps"] == ar["steps"] < spec.rm_steps
    assert rms["rm_autoregressive"]["batch_size"] == ar["batch"] == spec.rm_batch_size
    assert rms["rm_autoregressive"]["learning_rate"] == spec.rm_lr_autoregressive
    step = 6 * flop_params(reduced_world["llm"], True) * ar["batch"] * ar["tokens_per_example"]
    assert abs(flops["rm_autoregressive"] - flops["rm_partial"]) <= step * 0.51
    assert flops["rm_partial"] == pytest.approx(6 * flop_params(reduced_world["rm_init"], False) * spec.rm_steps
                                                * matched["tokens_per_step"]["partial"], rel=1e-3)


def test_world_build_reuses_the_built_world(reduced_world):
    out = str(Path(reduced_world["llm"]).parent)
    result = subprocess.run([CLI, "world", "build", "--kind", "reduced", "--out", out],
                            capture_output=True, text=True, timeout=1800, check=False)
    assert result.returncode == 0 and json.loads(result.stdout)["build_seconds"] == reduced_world["build_seconds"]
    assert "world: llm done" not in result.stderr and "world: reusing" in result.stderr


def crossed_by_hand(table) -> dict:
    """Mean and 95 % interval of a seeds x prompts table, computed here: one seed, the mean ± z SE over
    prompts; several, the two-way crossed random-effects variance by ANOVA mean squares (seeds, prompts,
    residual), Var(mean) = (MS_S + MS_P - MS_E) / (S P) kept at least MS_E / (S P), Satterthwaite's
    degrees of freedom and scipy's t quantile."""
    import numpy as np
    from scipy import stats

    x = np.asarray(table, dtype=np.float64)
    s, p = x.shape
    grand, seed_means = x.mean(), x.mean(axis=1)
    if s == 1:
        half = stats.norm.ppf(0.975) * x[0].std(ddof=1) / np.sqrt(p)
        return {"mean": grand, "seed_means": list(seed_means), "interval": [grand - half, grand + half]}
    ms_s = p * ((seed_means - grand) ** 2).sum() / (s - 1)
    ms_p = s * ((x.mean(axis=0) - grand) ** 2).sum() / (p - 1)
    ms_e = ((x - seed_means[:, None] - x.mean(axis=0)[None, :] + grand) ** 2).sum() / ((s - 1) * (p - 1))
    combined = max(ms_s + ms_p - ms_e, ms_e)
    df = combined ** 2 / (ms_s ** 2 / (s - 1) + ms_p ** 2 / (p - 1) + ms_e ** 2 / ((s - 1) * (p - 1)))
    half = stats.t.ppf(0.975, df) * np.sqrt(combined / (s * p))
    return {"mean": grand, "seed_means": list(seed_means), "interval": [grand - half, grand + half]}


def cluster_bootstrap_by_hand(correct, prompts, resamples: int = 2000, seed: int = 0) -> list[float]:
    """The 95 % percentile interval of an accuracy with prompts resampled (numpy's generator, ``seed``)."""
    import numpy as np

    names = sorted(set(prompts))
    hits = np.array([sum(c for c, q in zip(correct, prompts) if q == n) for n in names], dtype=np.float64)
    sizes = np.array([prompts.count(n) for n in names], dtype=np.float64)
    draws = np.random.default_rng(seed).integers(0, len(names), size=(resamples, len(names)))
    rates = hits[draws].sum(axis=1) / sizes[draws].sum(axis=1)
    return [float(np.percentile(rates, 2.5)), float(np.percentile(rates, 97.5))]


def check_demo_figures_by_hand(demo: dict, out: Path, world: dict) -> None:
    """Recompute the demo's intervals and differences from the rows it wrote (report/scores.parquet,
    report/judge.parquet) and from the held-out pairs, and compare: each method's gold mean, seed
    means and interval; each ordering's paired difference (higher minus lower, so at least 0), its
    interval and per-seed differences; each judged method's counts and win-tie interval; the seeds'
    accuracy spread; Eq. 5's label accuracy and rm_partial's pairwise accuracy with their intervals."""
    from statistics import fmean

    import numpy as np
    import pyarrow.parquet as pq
    from pytest import approx

    gold: dict[str, dict[str, list[float]]] = {}
    for r in pq.read_table(out / "report" / "scores.parquet", columns=["run", "id", "gold"]).to_pylist():
        gold.setdefault(r["run"], {}).setdefault(r["id"], []).append(r["gold"])
    per_prompt = {run: {i: fmean(v) for i, v in ids.items()} for run, ids in gold.items()}
    table = {r["method"]: r for r in demo["table"]}

    def matrix(runs: list[str]):
        ids = sorted(set.intersection(*(set(per_prompt[run]) for run in runs)))
        return np.array([[per_prompt[run][i] for i in ids] for run in runs])

    for method, row in table.items():
        hand = crossed_by_hand(matrix(row["runs"]))
        assert row["gold"]["mean"] == approx(hand["mean"], abs=1e-9), method
        assert row["gold"]["seed_means"] == approx(hand["seed_means"], abs=1e-9), method
        assert row["gold"]["interval"] == approx(hand["interval"], abs=1e-6), method

    def paired(higher: str, lower: str):  # a one-run method is paired with every seed of the other
        a, b = table[higher]["runs"], table[lower]["runs"]
        n = max(len(a), len(b))
        return matrix([a[i % len(a)] for i in range(n)]) - matrix([b[i % len(b)] for i in range(n)])

    for o in demo["orderings"]:
        d = paired(o["higher"], o["lower"])
        hand = crossed_by_hand(d)
        assert hand["mean"] >= 0 and o["diff"] == approx(hand["mean"], abs=1e-9), o  # the higher is higher
        assert o["seed_diffs"] == approx(list(d.mean(axis=1)), abs=1e-9), o
        assert o["interval"] == approx(hand["interval"], abs=1e-6), o
        assert o["holds"] == (hand["interval"][0] > 0), o

    judged: dict[tuple[str, str], dict[str, str]] = {}
    for r in pq.read_table(out / "report" / "judge.parquet", columns=["a", "b", "id", "outcome"]).to_pylist():
        judged.setdefault((r["a"], r["b"]), {})[r["id"]] = r["outcome"]
    for method, j in demo["judge_over_seeds"].items():
        pairs = [v for (a, b), v in judged.items() if a.startswith("pargs seed=") and b in table[method]["runs"]]
        outcomes = [o for v in pairs for o in v.values()]
        assert (j["win"], j["tie"], j["loss"]) == tuple(outcomes.count(k) for k in ("win", "tie", "loss")), method
        ids = sorted(set.intersection(*(set(v) for v in pairs)))
        hand = crossed_by_hand([[float(v[i] in ("win", "tie")) for i in ids] for v in pairs])
        assert j["win_tie"]["mean"] == approx((j["win"] + j["tie"]) / (j["win"] + j["tie"] + j["loss"])), method
        assert j["win_tie"]["mean"] == approx(hand["mean"]), method
        assert j["win_tie"]["interval"] == approx(hand["interval"], abs=1e-6), method

    diagnosis, seeds = demo["diagnose"], demo["rm_seeds"]
    for rm, spread in diagnosis["over_seeds"].items():
        whole = [diagnosis[rm if i == 0 else f"{rm}_seed{i}"]["pairwise_accuracy"] for i in range(seeds)]
        assert spread["whole"]["per_seed"] == whole and spread["whole"]["mean"] == approx(fmean(whole)), rm
        assert (spread["whole"]["min"], spread["whole"]["max"]) == (min(whole), max(whole)), rm

    triples = [json.loads(line) for line in Path(world["preferences"]["heldout"]).read_text().splitlines()]
    prompts = [t["prompt"] for t in triples]
    from experiments.world.gold import gold_reward

    chosen, rejected = [t["chosen"] for t in triples], [t["rejected"] for t in triples]
    gc, gr = gold_reward(prompts, chosen), gold_reward(prompts, rejected)
    decided = [(q, c > r) for q, c, r in zip(prompts, gc, gr) if c != r]
    labels = diagnosis["labels"]["whole"]
    assert (labels["pairs"], labels["ties"]) == (len(triples), len(triples) - len(decided))
    assert labels["accuracy"] == approx(fmean(agree for _, agree in decided))
    assert labels["interval"] == approx(cluster_bootstrap_by_hand([a for _, a in decided], [q for q, _ in decided]))

    from pargs_batch.config import RewardConfig
    from pargs_batch.rewards.hf import HFRewardScorer

    scorer = HFRewardScorer(RewardConfig(path=world["rm_partial"], template=world["template"], max_length=128))
    right = list(scorer.score(prompts, chosen) > scorer.score(prompts, rejected))
    assert diagnosis["rm_partial"]["pairwise_accuracy"] == approx(fmean(right))
    assert diagnosis["rm_partial"]["pairwise_interval"] == approx(cluster_bootstrap_by_hand(right, prompts))


@pytest.mark.slow
def test_demo_runs_end_to_end_on_the_reduced_world(reduced_world, tmp_path):
    world_dir = str(Path(reduced_world["llm"]).parent)
    result = subprocess.run([CLI, "demo", "--reduced-world", "--world-dir", world_dir, "--num-prompts", "16",
                             "--max-new-tokens", "24", "--sweep-beta", "0,3", "--with-trained-baselines",
                             "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=1800, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("method"))
    assert "gold mean [95% CI]" in lines[header] and "gold per seed" in lines[header]
    printed = [line.split()[0] for line in lines[header + 1: header + 10]]
    assert printed == ["topk", "args", "pargs-greedy", "pargs", "pargs-causal-rm", "pargs-ar", "best-of-n", "DPO",
                       "online"]
    # the fine-tuned rows: LLM not frozen, their training wall time beside them
    for line in lines[header + 8: header + 10]:
        assert line.split(")")[1].split()[0] == "no" and line.split()[-1].isdigit(), line

    demo = json.loads((tmp_path / "demo.json").read_text())
    table = {r["method"]: r for r in demo["table"]}
    assert all(r["rows"] == 32 for r in table.values())  # 16 prompts x 2 samples
    # the trained baselines: merged checkpoints that vLLM loaded and sampled with the same top-k sampler
    for label, method in (("dpo-trained", "dpo"), ("online-rl-trained", "online-rl")):
        row, policy = table[label], demo["policies"][method]
        assert row["llm_frozen"] is False and row["train_seconds"] == policy["seconds"] > 0
        assert policy["path"] == str(tmp_path / "policies" / method)
        import pyarrow.parquet as pq

        run = pq.read_table(tmp_path / "runs" / label).to_pandas()
        assert (run["llm"] == policy["path"]).all() and (run["method"] == "topk").all() and run["error"].isna().all()
        assert (run["num_tokens"] > 0).all()
    assert table["dpo-trained"]["name"] == "DPO (trained)" and table["pargs"]["llm_frozen"] is True
    assert table["best-of-n"]["single_response"] is False and table["pargs"]["single_response"] is True
    # greedy methods give both samples the same reply: no diversity at all
    assert table["args"]["rouge_l"] == pytest.approx(1.0) and table["topk"]["rouge_l"] < 1.0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["evaluation_model"] == reduced_world["rm_eval"]
    assert report["gold_reward"] == "experiments.world.gold:gold_reward"
    assert (tmp_path / "report" / "plots" / "gold_distribution.png").exists()
    # every guided method ran once per reward-model seed (2 in the reduced world): its gold mean and
    # interval are over seeds and prompts, and the seeds' own means differ (two trainings, two RMs;
    # a greedy method may still choose alike under both on 16 short prompts)
    assert demo["rm_seeds"] == 2
    guided = ("args", "pargs-greedy", "pargs", "pargs-causal-rm", "pargs-ar", "best-of-n")
    for method in guided:
        row = table[method]
        assert row["seeds"] == 2 and row["runs"] == [f"{method} seed=0", f"{method} seed=1"], method
        gold = row["gold"]
        assert gold["seeds"] == 2 and gold["prompts"] == 16 and len(gold["seed_means"]) == 2, method
    assert sum(table[m]["gold"]["seed_sd"] > 0 for m in guided) >= 3
    assert table["topk"]["seeds"] == table["dpo-trained"]["seeds"] == 1
    assert table["topk"]["gold"]["estimator"].startswith("one seed")
    # the diagnostic ran for each seed of the full- and the partial-sequence RMs, by prefix bucket
    assert set(demo["diagnose"]) == {f"{rm}{s}" for rm in ("rm_full", "rm_partial", "rm_partial_causal", "rm_autoregressive")
                                     for s in ("", "_seed1")} | {"labels", "over_seeds"}
    assert len(demo["diagnose"]["over_seeds"]["rm_full"]["whole"]["per_seed"]) == 2
    assert "accuracy, mean over 2 seeds [min, max]" in result.stdout
    # every pair of the 9 methods ordered by gold, paired on seed and prompt, with its verdict
    ordered = demo["orderings"]
    assert len(ordered) == 36 and "ordering by gold" in result.stdout
    unguided = {"topk", "dpo-trained", "online-rl-trained"}  # one run each: a pair of them has one seed
    for o in ordered:
        seeds = 1 if {o["higher"], o["lower"]} <= unguided else 2
        assert len(o["seed_diffs"]) == seeds, o
    labels = demo["diagnose"]["labels"]
    assert set(labels) == {"0-25%", "25-50%", "50-75%", "75-100%", "whole"}
    assert 0.5 < labels["whole"]["accuracy"] <= 1
    assert set(demo["diagnose"]["rm_partial"]["prefix_accuracy"]) == {"0-25%", "25-50%", "50-75%", "75-100%"}
    # every interval, difference and spread above, recomputed here from the rows and pairs it came from
    check_demo_figures_by_hand(demo, tmp_path, reduced_world)
    assert (tmp_path / "diagnose" / "prefix_accuracy.png").exists()
    # the gold judge ran through the real openai client: PARGS against each other method, paired on seed
    # (a method without a reward model against both pargs seeds), with intervals over seeds and prompts
    judged = demo["judge_over_seeds"]
    assert set(judged) == {"topk", "args", "pargs-greedy", "pargs-causal-rm", "pargs-ar", "best-of-n", "dpo-trained",
                           "online-rl-trained"}
    for j in judged.values():
        assert j["seeds"] == 2 and j["invalid"] == 0 and j["win"] + j["tie"] + j["loss"] == 32
        assert j["win_tie"]["prompts"] == 16
    for p in demo["judge"]["pairs"]:
        # identical replies from two methods are one comparison: the cache answers the repeat
        assert p["prompts"] == 16 and p["invalid"] == 0 and 0 <= p["requests"] <= 16
    assert "pargs vs" in result.stdout and "gold judge" in result.stdout
    seeded = {f"{m} seed={s}" for m in ("args", "pargs-greedy", "pargs-causal-rm", "pargs-ar", "best-of-n")
              for s in (0, 1)}
    pairs = {(p["a"], p["b"]) for p in demo["paired"]}
    assert pairs == {(f"pargs seed={b[-1]}", b) for b in seeded} | {
        (f"pargs seed={s}", b) for s in (0, 1) for b in ("topk", "dpo-trained", "online-rl-trained")}
    assert [t["beta"] for t in demo["sweep"]["table"]] == [0.0, 3.0]
    assert (tmp_path / "sweep" / "report" / "plots" / "reward_vs_beta_0.png").exists()
    # quiet by default: the terminal has stage lines, bars and tables; library output is in the log
    log = (tmp_path / "demo.log").read_text()
    assert result.stderr.splitlines()[-1].startswith(f"log: {tmp_path / 'demo.log'}") and "world: reused" in result.stderr
    for noise in ("Warning", "WARNING", "INFO"):
        assert noise not in result.stdout + result.stderr, noise
    assert "WARNING" in log or "Warning" in log  # vLLM's CPU platform warns on start: it is in the log
    assert demo["world_reused"] is True and "world (reused, built earlier" in result.stdout


@pytest.mark.slow
def test_compare_rms_gives_both_modes_the_same_steps_and_tokens(reduced_world, tmp_path):
    from experiments.world.rm_compare import BUCKETS, compare_rms

    world_dir = str(Path(reduced_world["llm"]).parent)
    report = compare_rms(world_dir, str(tmp_path), steps=6, lrs=(3e-3, 1e-2), seeds=(0,), select_limit=20,
                         log=lambda text: None)
    assert {g["steps"] for g in report["grid"].values()} == {6} and len(report["grid"]) == 4
    full, partial = report["results"]["full"], report["results"]["partial"]
    # the partial model's batch makes up for its shorter examples: about the same tokens a step
    assert partial["batch"] >= full["batch"]
    assert abs(partial["tokens_per_step"] - full["tokens_per_step"]) / full["tokens_per_step"] < 0.05
    for mode in (full, partial):  # each mode's rate is the best of the grid on the evaluation split
        best = max((g for g in report["grid"].values() if g["mode"] == ("full" if mode is full else "partial")),
                   key=lambda g: g["selection_score"])
        assert mode["lr"] == best["lr"] and set(mode["mean"]) == set(BUCKETS)
        assert all(0 <= v <= 1 for v in mode["mean"].values())
    assert json.loads((tmp_path / "compare.json").read_text())["steps"] == 6


ROOT = Path(__file__).resolve().parents[1]


def documented_recipes(text: str) -> dict[str, dict]:
    """The recipe of each matched reward model as docs/world.md's reward-model table records the
    documented default build (`| \`rm_partial\` ... | 1,500 steps × 39 of 44,188 prefix pairs, lr 3e-3 |`):
    its optimiser steps, its batch and its learning rate, by world.json key."""
    import re

    found = {}
    for line in text.splitlines():
        m = re.match(r"\| `(rm_\w+)`.*?\| ([\d,]+) steps × (\d+) of [^|]*?, lr ([\d.e-]+)", line)
        if m:
            found[m[1]] = {"steps": int(m[2].replace(",", "")), "batch": int(m[3]), "lr": float(m[4])}
    return found


def documented_build_matched() -> dict | None:
    """matched_compute of the documented default world (DOCUMENTED_FINGERPRINT), when outputs/world holds it."""
    from experiments.world.default import DOCUMENTED_FINGERPRINT, DefaultWorldSpec, built_world

    world = built_world(ROOT / "outputs" / "world", DefaultWorldSpec())
    return world["matched_compute"] if world and world.get("fingerprint") == DOCUMENTED_FINGERPRINT else None


def test_the_documented_recipes_are_the_ones_the_builds_rules_give():
    """docs/world.md's record of the default build: rm_full's and rm_partial's steps are the spec's, the
    full and autoregressive batches the spec's, and rm_partial's batch is what `matched_batches`' rule
    gives from the tokens a step the same page documents (32 whole pairs: 1,817 tokens; 39 prefix
    pairs: 1,840)."""
    import re

    from experiments.world.default import DefaultWorldSpec

    spec, text = DefaultWorldSpec(), (ROOT / "docs" / "world.md").read_text()
    recipes = documented_recipes(text)
    assert set(recipes) == {"rm_full", "rm_partial", "rm_autoregressive"}
    assert recipes["rm_full"]["steps"] == recipes["rm_partial"]["steps"] == spec.rm_steps
    assert recipes["rm_full"]["batch"] == recipes["rm_autoregressive"]["batch"] == spec.rm_batch_size
    assert (recipes["rm_full"]["lr"], recipes["rm_partial"]["lr"], recipes["rm_autoregressive"]["lr"]) == (
        spec.rm_lr_full, spec.rm_lr_partial, spec.rm_lr_autoregressive)
    m = re.search(r"\((\d+) whole pairs against (\d+) prefix pairs: ([\d,]+) against\s+([\d,]+)\s+tokens\)", text)
    full_batch, partial_batch, full_tokens, partial_tokens = (int(g.replace(",", "")) for g in m.groups())
    assert (full_batch, partial_batch) == (spec.rm_batch_size, recipes["rm_partial"]["batch"])
    per_example = {"full": full_tokens / full_batch, "partial": partial_tokens / partial_batch}
    assert partial_batch == max(1, round(spec.rm_batch_size * per_example["full"] / per_example["partial"]))
    assert re.search(rf"of {partial_batch} prefix pairs buy, {recipes['rm_autoregressive']['steps']} \(", text)
    matched = documented_build_matched()  # the build itself, where the documented world is on this machine
    if matched is not None:
        assert (matched["batches"]["partial"], matched["autoregressive"]["steps"]) == (
            recipes["rm_partial"]["batch"], recipes["rm_autoregressive"]["steps"])


@pytest.mark.parametrize("mode", ["full", "partial", "autoregressive"])
def test_the_world_rm_configs_hold_the_builds_matched_recipe(mode):
    """rm_training/configs/world_{full,partial,autoregressive}.yaml train what the world's build trains:
    the build's recipe (`matched_rm_config`) at the steps and batch the default build used - world.json's
    matched_compute of the documented world where outputs/world holds it, and always the figures
    docs/world.md records of that build (the test above ties them to the build's rules)."""
    import yaml

    from experiments.world.default import DefaultWorldSpec, matched_rm_config

    spec = DefaultWorldSpec()
    shipped = yaml.safe_load((ROOT / "rm_training" / "configs" / f"world_{mode}.yaml").read_text())
    recipe = documented_recipes((ROOT / "docs" / "world.md").read_text())[f"rm_{mode}"]
    matched = documented_build_matched()
    if matched is not None:
        assert recipe["steps"] == (matched["autoregressive"]["steps"] if mode == "autoregressive" else matched["steps"])
        assert recipe["batch"] == (matched["autoregressive"]["batch"] if mode == "autoregressive"
                                   else matched["batches"][mode])
    lr = {"full": spec.rm_lr_full, "partial": spec.rm_lr_partial, "autoregressive": spec.rm_lr_autoregressive}[mode]
    built = matched_rm_config(spec, mode, "init", "train", "heldout", "out", lr, 0, recipe["steps"], recipe["batch"])
    assert shipped["mode"] == built["mode"]
    for key in ("learning_rate", "max_steps", "per_device_train_batch_size", "warmup_ratio", "max_length",
                "gradient_accumulation_steps"):
        assert shipped["training"][key] == built["training"][key], key
    if mode == "partial":
        assert {k: shipped["prefixes"][k] for k in ("strategy", "stride")} == {"strategy": "stride", "stride": 2}
    elif mode == "autoregressive":
        assert shipped["autoregressive_scale"] == spec.rm_autoregressive_scale


def test_the_demos_documented_gold_intervals_are_read_from_the_docs_tables():
    """The demo's `in docs CI` column judges a run against DOCUMENTED_GOLD, which is read from the demo
    tables docs/world.md prints: every demo method, each interval the one its rows print (a method in
    several tables with one interval), and only for a run comparable with them (default spec, all seeds)."""
    from dataclasses import asdict

    from experiments.demo import DEMO_RUNS, DOCUMENTED_GOLD, documented_gold, documented_intervals
    from experiments.world.default import DefaultWorldSpec

    text = (ROOT / "docs" / "world.md").read_text()
    assert documented_gold(text) == DOCUMENTED_GOLD and set(DOCUMENTED_GOLD) == {r.label for r in DEMO_RUNS}
    assert all(lo < hi for lo, hi in DOCUMENTED_GOLD.values())
    table = """method            LLM frozen single resp.        gold mean [95% CI]         gold per seed     eval-RM mean [95% CI]
topk                     yes          yes   -0.448 [-0.579, -0.316]                     —      3.286 [3.174, 3.399]
pargs                    yes          yes      0.927 [0.802, 1.052]      0.89, 1.00, 0.89      4.526 [4.333, 4.719]
(β = 2, ...)
pargs                    yes          yes      9.000 [8.000, 10.000]    not a table row: after the footnote
method            LLM frozen single resp.        gold mean ± SE
pargs                    no          yes       1.077 ± 0.051      4.533 [4.5, 4.6]
"""
    assert documented_gold(table) == {"topk": (-0.579, -0.316), "pargs": (0.802, 1.052)}
    with pytest.raises(ValueError, match="two gold intervals for pargs"):
        documented_gold(table + table.splitlines()[0] + "\npargs   yes  yes   0.900 [0.800, 1.000]\n")
    spec = DefaultWorldSpec()
    assert documented_intervals({"spec": asdict(spec)}, spec.rm_seeds) == DOCUMENTED_GOLD
    assert documented_intervals({"spec": asdict(spec)}, 1) is None
    assert documented_intervals({"spec": asdict(DefaultWorldSpec.reduced())}, 2) is None
