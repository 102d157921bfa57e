"""`pargs-batch bench` (= `make bench`): how fast guided decoding runs, against what bounds it.

For two model pairs - the default world's (LLM + DeBERTa partial RM + causal GPT-2 RM) and a
"paper ratio" pair with random weights (LLM about 20x the reward model's parameters, as
Llama-2-7B to DeBERTa-v3-large) - and each batch size B, with k = 10 and a fixed number of new
tokens (EOS ignored, so every configuration makes the same tokens), it times:

- ``plain``: one vLLM call sampling the same tokens without guidance (the ceiling);
- ``pargs`` in ``stepped`` mode with the ``hf`` and ``causal`` reward backends and in ``fused``
  mode (``hf``), through the same ``run_generate`` path `pargs-batch generate` uses;
- ``reference``: the published code's structure - one prompt at a time, the LLM through
  transformers with its KV cache, one reward-model forward per candidate on the whole text.

Each row reports tokens/s, its ratio to ``plain`` and to ``reference``, the step split
(engine / reward / decode-and-glue) and the Section 5.3 FLOP bound per token
(C_forward + k * C_RM, C = 2N + 2 n_layers n_ctx d_model) at the machine's measured matmul rate.
A correctness guard reruns the timed ``pargs`` configurations through a config loaded like the
CLI's, at another micro-batch size, and requires identical rows. The reward-vs-prefix curve
times one reward step of each backend at growing prefix lengths.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

K = 10


@dataclass
class Pair:
    name: str
    llm: str
    rm_hf: str
    rm_causal: str
    note: str


# ---------------------------------------------------------------- models

def count_params(path: str) -> dict:
    """Non-embedding parameters N = 12 n_layers d_model^2 (Kaplan et al.), and the shape."""
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(path)
    layers = getattr(c, "n_layer", None) or c.num_hidden_layers
    width = getattr(c, "n_embd", None) or c.hidden_size
    return {"n_layers": layers, "d_model": width, "N": 12 * layers * width ** 2}


def paper_ratio_pair(out: Path, world: dict) -> Pair:
    """Random-weight models whose parameter ratio is the paper's Llama-2-7B : DeBERTa-v3-large (~20:1).

    The LLM reuses the world's LLM tokenizer, the DeBERTa RM the world's WordPiece one, the causal RM
    the LLM's. Saved as ordinary checkpoints (built once)."""
    import torch
    from transformers import (
        AutoTokenizer,
        DebertaV2Config,
        DebertaV2ForSequenceClassification,
        GPT2Config,
        GPT2ForSequenceClassification,
        GPT2LMHeadModel,
    )

    paths = {name: out / name for name in ("llm", "rm_hf", "rm_causal")}
    if not all((p / "config.json").exists() for p in paths.values()):
        torch.manual_seed(0)
        llm_tok = AutoTokenizer.from_pretrained(world["llm"])
        rm_tok = AutoTokenizer.from_pretrained(world["rm_init"])
        eos = llm_tok.eos_token_id
        GPT2LMHeadModel(GPT2Config(vocab_size=len(llm_tok), n_positions=1024, n_embd=256, n_layer=6, n_head=8,
                                   bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)).save_pretrained(paths["llm"])
        llm_tok.save_pretrained(paths["llm"])
        DebertaV2ForSequenceClassification(DebertaV2Config(
            vocab_size=len(rm_tok), hidden_size=64, num_hidden_layers=4, num_attention_heads=2,
            intermediate_size=256, max_position_embeddings=1024, num_labels=1,
            pad_token_id=rm_tok.pad_token_id)).save_pretrained(paths["rm_hf"])
        rm_tok.save_pretrained(paths["rm_hf"])
        GPT2ForSequenceClassification(GPT2Config(vocab_size=len(llm_tok), n_positions=1024, n_embd=64, n_layer=4,
                                                  n_head=2, num_labels=1, bos_token_id=eos, eos_token_id=eos,
                                                  pad_token_id=eos)).save_pretrained(paths["rm_causal"])
        llm_tok.save_pretrained(paths["rm_causal"])
    return Pair("paper-ratio", str(paths["llm"]), str(paths["rm_hf"]), str(paths["rm_causal"]),
                "random weights, LLM ~20x the RM's non-embedding parameters")


def curve_model(out: Path, world: dict) -> str:
    """A causal reward model in the paper's regime (d_model = 512 >> n_ctx / 12, as DeBERTa-v3-large's
    1024 is for its contexts), random weights, sharing the LLM's tokenizer: the reward-vs-prefix RM."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2ForSequenceClassification

    if not (out / "config.json").exists():
        torch.manual_seed(0)
        tok = AutoTokenizer.from_pretrained(world["llm"])
        eos = tok.eos_token_id
        GPT2ForSequenceClassification(GPT2Config(vocab_size=len(tok), n_positions=1024, n_embd=512, n_layer=2,
                                                  n_head=8, num_labels=1, bos_token_id=eos, eos_token_id=eos,
                                                  pad_token_id=eos)).save_pretrained(out)
        tok.save_pretrained(out)
    return str(out)


def world_pair(world: dict) -> Pair:
    return Pair("world", world["llm"], world["rm_partial"], world["rm_partial_causal"],
                "the default world's LLM, partial DeBERTa RM and causal GPT-2 RM")


def machine_flops() -> float:
    """Sustained float32 matmul FLOP/s of this process's torch (the bound's denominator)."""
    import torch

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    t0 = time.perf_counter()
    for _ in range(20):
        a @ b
    return 20 * 2 * 1024 ** 3 / (time.perf_counter() - t0)


def flop_bound(llm: dict, rm: dict, n_ctx: float, k: int, flops: float) -> float:
    """Section 5.3: seconds per token of C_forward(LLM) + k * C_RM at ``flops``."""
    def c(m):
        return 2 * m["N"] + 2 * m["n_layers"] * n_ctx * m["d_model"]

    return (c(llm) + k * c(rm)) / flops


# ---------------------------------------------------------------- runs

def generate_config(pair: Pair, prompts: str, out: Path, b: int, mode: str, backend: str, tokens: int,
                    method: str = "pargs") -> dict:
    return {
        "model": {"path": pair.llm, "dtype": "float32", "kv_cache_memory_bytes": 256 << 20},
        "engine": {"mode": mode},
        "reward": {"path": pair.rm_causal if backend == "causal" else pair.rm_hf, "backend": backend,
                   "batch_size": 1024},
        "decode": {"method": method, "beta": 1.0, "top_k": K, "max_new_tokens": tokens, "ignore_eos": True,
                   "seed": 0, "micro_batch_size": b},
        "data": {"source": prompts, "id_column": "id", "limit": b},
        "output": {"path": str(out), "overwrite": True},
        "ray": {"enabled": False},
    }


def write_prompts(world: dict, path: Path, n: int) -> str:
    rows = [json.loads(line) for line in Path(world["prompts"]).read_text().splitlines()]
    with open(path, "w") as f:
        f.writelines(json.dumps({"id": f"b{i:05d}", "prompt": rows[i % len(rows)]["prompt"]}) + "\n" for i in range(n))
    return str(path)


def split(phases: dict) -> dict:
    parts = {"engine": phases.get("engine", 0.0) + phases.get("engine_wait", 0.0),
             "reward": phases.get("reward", 0.0), "decode": phases.get("decode", 0.0)}
    total = sum(parts.values()) or 1.0
    return {name: round(v / total, 3) for name, v in parts.items()}


def time_plain(engine, tokenizer, prompts: list[str], tokens: int) -> dict:
    ids = [tokenizer(p)["input_ids"] for p in prompts]
    engine.sample(ids[:1], 1, [0], 2, -1, 1.0, [], True)  # warm-up
    t0 = time.perf_counter()
    out = engine.sample(ids, 1, list(range(len(ids))), tokens, -1, 1.0, [], True)
    wall = time.perf_counter() - t0
    made = sum(len(o[0][0]) for o in out)
    return {"tokens": made, "seconds": wall, "tokens_per_s": made / wall, "split": {"engine": 1.0, "reward": 0.0,
                                                                                   "decode": 0.0}}


def time_generate(config: dict, models) -> tuple[dict, list]:
    from pargs_batch.config import GenerateConfig, build
    from pargs_batch.generate import run_generate
    from pargs_batch.io import read_output

    cfg = build(GenerateConfig, config)
    summary = run_generate(cfg, models=models, progress=False)
    rows = read_output(cfg.output.path).to_pylist()
    return {"tokens": summary["tokens"], "seconds": summary["wall_s"], "tokens_per_s": summary["tokens_per_s"],
            "split": split(summary["phase_s"])}, rows


def reference_loop(llm: str, rm_path: str, prompts: list[str], tokens: int, beta: float = 1.0,
                   seed: int = 0) -> dict:
    """The published loop's structure: one prompt at a time, LLM with its KV cache, one RM forward
    per candidate on the whole text (re-tokenised with the RM's tokenizer)."""
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    lm_tok, rm_tok = AutoTokenizer.from_pretrained(llm), AutoTokenizer.from_pretrained(rm_path)
    lm = AutoModelForCausalLM.from_pretrained(llm, dtype=torch.float32).eval()
    rm = AutoModelForSequenceClassification.from_pretrained(rm_path, dtype=torch.float32).eval()
    rng = np.random.default_rng(seed)
    timings = {"engine": 0.0, "reward": 0.0, "decode": 0.0}
    made, t_start = 0, time.perf_counter()
    with torch.inference_mode():
        for prompt in prompts:
            ids = lm_tok(prompt, return_tensors="pt")["input_ids"]
            past, response = None, []
            step_input = ids
            for _ in range(tokens):
                t0 = time.perf_counter()
                out = lm(input_ids=step_input, past_key_values=past, use_cache=True)
                past = out.past_key_values
                logp = torch.log_softmax(out.logits[0, -1].float(), -1)
                top_lp, top_ids = logp.topk(K)
                t1 = time.perf_counter()
                rewards = []
                for cand in top_ids.tolist():
                    text = prompt + lm_tok.decode(response + [cand], skip_special_tokens=True)
                    enc = rm_tok(text, return_tensors="pt", truncation=True, max_length=512)
                    rewards.append(float(rm(**enc).logits[0, 0]))
                t2 = time.perf_counter()
                score = top_lp.numpy() + beta * np.array(rewards)
                p = np.exp(score - score.max())
                choice = int(top_ids[rng.choice(K, p=p / p.sum())])
                response.append(choice)
                step_input = torch.tensor([[choice]])
                made += 1
                timings["engine"] += t1 - t0
                timings["reward"] += t2 - t1
                timings["decode"] += time.perf_counter() - t2
    wall = time.perf_counter() - t_start
    return {"tokens": made, "seconds": wall, "tokens_per_s": made / wall, "split": split(timings)}


def reward_vs_prefix(model: str, lengths: list[int], b: int = 64, steps: int = 3) -> dict:
    """Seconds of one reward step (B sequences x k candidates) per backend, by prefix length, on the
    same causal reward model, with the Section 5.3 FLOP count of each step."""
    from pargs_batch.causal_reward import CausalRewardScorer
    from pargs_batch.config import RewardConfig
    from pargs_batch.reward import HFRewardScorer

    causal = CausalRewardScorer(RewardConfig(path=model, batch_size=1024, backend="causal"))
    hf = HFRewardScorer(RewardConfig(path=model, batch_size=1024, max_length=2048))
    shape = count_params(model)
    vocab = causal.model.config.vocab_size
    rng = np.random.default_rng(0)
    out = {"hf": {}, "causal": {}, "b": b, "k": K, "model": model, "shape": shape, "flops": {"hf": {}, "causal": {}}}
    for length in lengths:
        def c(n_ctx):
            return 2 * shape["N"] + 2 * shape["n_layers"] * n_ctx * shape["d_model"]

        out["flops"]["causal"][length] = b * K * c(length)  # one new token per candidate
        out["flops"]["hf"][length] = b * K * (length + 1) * c(length / 2)  # every candidate re-encoded
        seqs = [list(map(int, rng.integers(1, vocab, length))) for _ in range(b)]
        cands = rng.integers(1, vocab, (b, K))
        session = causal.start(seqs)
        causal.score_candidates(session, cands)  # warm-up at this shape
        causal.commit(session, np.zeros(b, dtype=int))
        t0 = time.perf_counter()
        for _ in range(steps):
            causal.score_candidates(session, cands)
            causal.commit(session, np.zeros(b, dtype=int))
        out["causal"][length] = (time.perf_counter() - t0) / steps
        # the hf backend scores every candidate's whole text (the same GPT-2 reward model)
        texts = [causal.tokenizer.decode(s + [int(c)]) for s, row in zip(seqs, cands) for c in row]
        if length == lengths[0]:
            hf.score([""] * len(texts), texts)  # warm-up
        t0 = time.perf_counter()
        hf.score([""] * len(texts), texts)
        out["hf"][length] = time.perf_counter() - t0
        del session
    return out


# ---------------------------------------------------------------- driver

def run_pair(pair: Pair, world: dict, out: Path, batch_sizes: list[int], tokens: int, reference_prompts: int,
             flops: float, log=print) -> list[dict]:
    from transformers import AutoTokenizer

    from pargs_batch.causal_reward import CausalRewardScorer
    from pargs_batch.config import ModelConfig, RewardConfig
    from pargs_batch.engine import Engine
    from pargs_batch.fused import engine_kwargs
    from pargs_batch.reward import HFRewardScorer

    prompts_file = write_prompts(world, out / f"prompts-{pair.name}.jsonl", max(batch_sizes))
    prompt_texts = [json.loads(line)["prompt"] for line in Path(prompts_file).read_text().splitlines()]
    llm, rm_hf, rm_causal = count_params(pair.llm), count_params(pair.rm_hf), count_params(pair.rm_causal)
    n_ctx = float(np.mean([len(p.split()) for p in prompt_texts])) + tokens / 2
    rows, guard_rows = [], {}

    def add(method, mode, backend, b, result, rm):
        bound = flop_bound(llm, rm, n_ctx, K if rm else 0, flops) if method != "plain" else \
            flop_bound(llm, llm, n_ctx, 0, flops)
        rows.append({"pair": pair.name, "method": method, "mode": mode, "backend": backend, "B": b, **result,
                     "bound_s_per_token": bound, "measured_over_bound": (1 / result["tokens_per_s"]) / bound})
        log(f"  {pair.name:<12}{method:<10}{mode:<9}{backend:<8}B={b:<4} {result['tokens_per_s']:>9.0f} tok/s")

    model_cfg = ModelConfig(path=pair.llm, dtype="float32", kv_cache_memory_bytes=256 << 20)
    engine = Engine(model_cfg)
    tokenizer = AutoTokenizer.from_pretrained(pair.llm)
    scorers = {"hf": HFRewardScorer(RewardConfig(path=pair.rm_hf, batch_size=1024)),
               "causal": CausalRewardScorer(RewardConfig(path=pair.rm_causal, batch_size=1024, backend="causal"),
                                            len(tokenizer))}
    try:
        for backend in ("hf", "causal"):  # warm-up: first calls at new shapes compile and allocate
            cfg = generate_config(pair, prompts_file, out / "runs" / "warm-up", batch_sizes[0], "stepped", backend, 4)
            time_generate(cfg, (engine, tokenizer, scorers[backend]))
        for b in batch_sizes:
            add("plain", "-", "-", b, time_plain(engine, tokenizer, prompt_texts[:b], tokens), None)
            for backend in ("hf", "causal"):
                cfg = generate_config(pair, prompts_file, out / "runs" / f"{pair.name}-stepped-{backend}-{b}", b,
                                      "stepped", backend, tokens)
                result, out_rows = time_generate(cfg, (engine, tokenizer, scorers[backend]))
                guard_rows[("stepped", backend, b)] = (cfg, out_rows)
                add("pargs", "stepped", backend, b, result, rm_causal if backend == "causal" else rm_hf)
        guard = check_guard(guard_rows, {"stepped": (engine, tokenizer, scorers)})
    finally:
        engine.close()
    for backend in ("hf", "causal"):
        reward = RewardConfig(path=pair.rm_causal if backend == "causal" else pair.rm_hf, batch_size=1024,
                              backend=backend)
        fused = Engine(model_cfg, fused=engine_kwargs(reward, pair.llm))
        try:
            fused_rows = {}
            for b in batch_sizes:
                cfg = generate_config(pair, prompts_file, out / "runs" / f"{pair.name}-fused-{backend}-{b}", b,
                                      "fused", backend, tokens)
                if b == batch_sizes[0]:
                    time_generate(cfg, (fused, tokenizer, None))  # warm-up: the first guided steps compile
                result, out_rows = time_generate(cfg, (fused, tokenizer, None))
                fused_rows[("fused", backend, b)] = (cfg, out_rows)
                add("pargs", "fused", backend, b, result, rm_causal if backend == "causal" else rm_hf)
            guard.update(check_guard(fused_rows, {"fused": (fused, tokenizer, None)}))
        finally:
            fused.close()
    # the reference runs each reward model the pargs rows use, so every ratio is on the same models
    refs = {}
    for backend, path, shape in (("hf", pair.rm_hf, rm_hf), ("causal", pair.rm_causal, rm_causal)):
        refs[backend] = reference_loop(pair.llm, path, prompt_texts[:reference_prompts], tokens)
        add("reference", "loop", backend, 1, refs[backend], shape)
    for r in rows:
        plain = next(p for p in rows if p["method"] == "plain" and p["B"] == r["B"] and p["pair"] == pair.name) \
            if r["method"] != "reference" else None
        r["vs_plain"] = r["tokens_per_s"] / plain["tokens_per_s"] if plain else None
        r["vs_reference"] = r["tokens_per_s"] / refs[r["backend"] if r["backend"] in refs else "hf"]["tokens_per_s"]
    log(f"  {pair.name}: correctness guard {'passed' if all(guard.values()) else 'FAILED'}: {guard}")
    return rows, {"llm": llm, "rm_hf": rm_hf, "rm_causal": rm_causal, "n_ctx": n_ctx,
                  "ratio_llm_to_rm": llm["N"] / rm_hf["N"]}, guard


def check_guard(runs: dict, models: dict) -> dict:
    """Rerun each timed configuration from a YAML config, as `pargs-batch generate --config` loads it,
    at another micro-batch size: the rows must be identical."""
    import tempfile

    import yaml

    from pargs_batch.config import GenerateConfig, load_config
    from pargs_batch.generate import run_generate
    from pargs_batch.io import read_output

    result = {}
    for (mode, backend, b), (cfg, rows) in runs.items():
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "run.yaml"
            path.write_text(yaml.safe_dump(cfg))
            again = load_config(GenerateConfig, str(path), [f"output.path={tmp}/out",
                                                           f"decode.micro_batch_size={max(1, b // 2)}"])
            engine, tokenizer, scorers = models[mode]
            scorer = scorers[backend] if isinstance(scorers, dict) else scorers
            run_generate(again, models=(engine, tokenizer, scorer), progress=False)
            other = read_output(f"{tmp}/out").to_pylist()
        same = [(r["id"], r["response_token_ids"]) for r in rows] == [(r["id"], r["response_token_ids"]) for r in other]
        result[f"{mode}-{backend}-B{b}"] = same
    return result


def format_table(rows: list[dict]) -> str:
    head = (f"{'pair':<12}{'method':<10}{'mode':<9}{'backend':<8}{'B':>4}{'tok/s':>9}{'×plain':>8}{'×ref':>8}"
            f"{'engine':>8}{'reward':>8}{'decode':>8}{'bound ms/tok':>13}{'meas/bound':>11}")
    lines = [head]
    for r in rows:
        plain = "—" if r["vs_plain"] is None else f"{r['vs_plain']:.2f}"
        s = r["split"]
        lines.append(f"{r['pair']:<12}{r['method']:<10}{r['mode']:<9}{r['backend']:<8}{r['B']:>4}"
                     f"{r['tokens_per_s']:>9.0f}{plain:>8}{r['vs_reference']:>8.1f}{s['engine']:>8.0%}"
                     f"{s['reward']:>8.0%}{s['decode']:>8.0%}{1000 * r['bound_s_per_token']:>13.4f}"
                     f"{r['measured_over_bound']:>11.0f}")
    return "\n".join(lines)


def plot_reward_vs_prefix(curve: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for (backend, marker), color in zip((("hf", "o"), ("causal", "s")), ("tab:red", "tab:blue")):
        xs = sorted(curve[backend])
        ax.plot(xs, [1000 * curve[backend][x] for x in xs], marker=marker, color=color, label=f"{backend} backend")
        flops = curve["flops"][backend]  # Section 5.3's count, scaled to the first measured point
        scale = 1000 * curve[backend][xs[0]] / flops[xs[0]]
        ax.plot(xs, [scale * flops[x] for x in xs], linestyle=":", color=color, label=f"{backend}: FLOP count")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("prefix length (tokens)")
    ax.set_ylabel(f"reward time per step (ms), B={curve['b']}, k={curve['k']}")
    ax.set_title("reward cost per step against prefix length")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def targets(rows: list[dict], curve: dict, b_max: int) -> list[dict]:
    def best(pair):
        return max((r for r in rows if r["pair"] == pair and r["method"] == "pargs" and r["B"] == b_max),
                   key=lambda r: r["tokens_per_s"], default=None)

    out = []
    w = best("world")
    if w:
        out.append({"target": f"best pargs at B={b_max} >= 50x reference on the same models (world)",
                    "measured": w["vs_reference"],
                    "met": w["vs_reference"] >= 50, "config": f"{w['mode']}/{w['backend']}"})
    p = best("paper-ratio")
    if p:
        out.append({"target": f"best pargs >= 1/3 of plain at B={b_max} (paper-ratio)", "measured": p["vs_plain"],
                    "met": p["vs_plain"] >= 1 / 3, "config": f"{p['mode']}/{p['backend']}"})
    lo, hi = min(curve["causal"]), max(curve["causal"])
    ratio = curve["causal"][hi] / curve["causal"][lo]
    out.append({"target": f"causal reward step at prefix {hi} <= 1.5x prefix {lo}", "measured": ratio,
                "met": ratio <= 1.5, "hf_ratio": curve["hf"][hi] / curve["hf"][lo],
                "flop_ratio_causal": curve["flops"]["causal"][hi] / curve["flops"]["causal"][lo],
                "flop_ratio_hf": curve["flops"]["hf"][hi] / curve["flops"]["hf"][lo]})
    dec = [r["split"]["decode"] for r in rows if r["mode"] == "stepped" and r["B"] == b_max]
    if dec:
        out.append({"target": f"decode-and-glue <= 15% of step time at B={b_max} (stepped)",
                    "measured": max(dec), "met": max(dec) <= 0.15})
    return out


def run_bench(out_dir: str = "outputs/bench", world_dir: str = "outputs/world", batch_sizes=(1, 64, 256),
              tokens: int = 64, reference_prompts: int = 2, prefix_lengths=(32, 64, 128, 256, 512),
              reduced_world: bool = False, pairs=("world", "paper-ratio")) -> dict:
    from pargs_batch.demo import ensure_world

    out = Path(out_dir)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    world = ensure_world(world_dir, reduced_world)
    random.seed(0)
    flops = machine_flops()
    print(f"machine: {flops / 1e9:.1f} GFLOP/s sustained float32 matmul (the FLOP bound's rate)")
    chosen = {"world": lambda: world_pair(world), "paper-ratio": lambda: paper_ratio_pair(out / "paper-ratio", world)}
    rows, models, guards = [], {}, {}
    for name in pairs:
        pair = chosen[name]()
        print(f"pair {pair.name}: {pair.note}")
        pair_rows, models[pair.name], guards[pair.name] = run_pair(pair, world, out, list(batch_sizes), tokens,
                                                                   reference_prompts, flops)
        rows += pair_rows
    curve = reward_vs_prefix(curve_model(out / "curve-rm", world), list(prefix_lengths))
    plot_reward_vs_prefix(curve, out / "reward_vs_prefix.png")
    goals = targets(rows, curve, max(batch_sizes))
    print("\n" + format_table(rows))
    print(f"\nreward step of {curve['model']} (d_model {curve['shape']['d_model']}), B={curve['b']}, k={K}, "
          f"ms by prefix length:\n  {'prefix':<8}" + "".join(f"{x:>9}" for x in curve["hf"]))
    for backend in ("hf", "causal"):
        print(f"  {backend:<8}" + "".join(f"{1000 * curve[backend][x]:>9.1f}" for x in curve[backend]))
    print("\ntargets:")
    for g in goals:
        print(f"  [{'met' if g['met'] else 'NOT met'}] {g['target']}: {g['measured']:.3g}"
              + (f" ({g['config']})" if "config" in g else ""))
    result = {"k": K, "new_tokens": tokens, "batch_sizes": list(batch_sizes), "machine_flops": flops,
              "models": models, "rows": rows, "reward_vs_prefix": curve, "targets": goals, "guard": guards}
    (out / "bench.json").write_text(json.dumps(result, indent=2, default=str))
    print(f"\nwritten: {out / 'bench.json'}, {out / 'reward_vs_prefix.png'}")
    return result

