"""The default world: the paper's whole pipeline, offline, with a gold reward known exactly.

``build_default_world(out_dir, spec)`` makes, from ``spec.seed`` alone:

1. a corpus of review replies in the language of :mod:`experiments.world.gold` (prompts ask about
   one aspect of a subject; replies mix pleasant and unpleasant clauses, on and off topic, with
   fitting or clashing connectives and verdicts), split by *prompt* into train / held-out;
2. a byte-level BPE tokenizer and a GPT-2-style causal LM trained on the train replies, with its
   perplexity on held-out replies;
3. preference pairs: two LM samples per prompt, labelled by the gold reward with Bradley-Terry
   noise (P(a preferred) = sigmoid((gold(a) - gold(b)) / bt_temperature), seeded), in three
   disjoint prompt splits: ``guidance`` (trains the guidance RMs), ``evaluation`` (trains the
   evaluation RM) and ``heldout`` (on the demo's prompts; for `diagnose-rm`);
4. reward models, each trained by ``rm_training`` exactly as a user trains theirs:
   ``rm_full`` (DeBERTa-v2 with its own WordPiece tokenizer, Eq. 1 - ARGS's and Best-of-N's),
   ``rm_partial`` (the same architecture on prefix pairs, Eq. 5 - PARGS's),
   ``rm_partial_causal`` (GPT-2 initialised from the LM, sharing its tokenizer, Eq. 5 over every
   prefix in one pass), ``rm_autoregressive`` (the LM itself trained as an autoregressive RM, its
   reward the summed token log-probabilities, at rm_partial's training FLOPs: see
   :func:`matched_autoregressive`) and ``rm_eval`` (DeBERTa, Eq. 1, on the disjoint ``evaluation`` split) -
   each ``spec.rm_seeds`` times, the recipe unchanged but for the seed of the initialisation (a
   DeBERTa start of its own per seed; the causal RM's score head) and of the data order
   (``rm_full``, ``rm_full_seed1``, ...), ``spec.rm_workers`` side by side in processes of their own;
5. ``prompts_heldout.jsonl``: prompts no corpus reply, preference pair or RM has seen.

Everything is an ordinary Hugging Face checkpoint or JSONL file; ``world.json`` lists the paths
(``rm_seeds``: each reward model's seeds in order, the first the one under its plain key), the
LM's perplexity, each RM's held-out accuracy per seed and the build time. A world whose
``world.json`` matches the spec and version is reused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from experiments.world import gold
from pargs_batch.console import console
from experiments.world.builders import (encode_texts, new_deberta_rm, new_llm, train_llm, train_llm_tokenizer,
                                        train_rm_tokenizer)

WORLD_VERSION = 5  # 3: deterministic RM tokenizer; rm_full / rm_partial at matched compute; 4: RM seeds;
# 5: rm_autoregressive
STRIDE = 2  # every second token boundary of a pair is a prefix pair (Eq. 5)
GOLD_REWARD = "experiments.world.gold:gold_reward"
TEMPLATE = "{prompt}{response}"


@dataclass(frozen=True)
class DefaultWorldSpec:
    """Sizes of the default world (about 15 minutes on two cores); ``reduced()`` is the tests' one."""

    seed: int = 0
    corpus_size: int = 20000
    heldout_prompts: int = 256
    llm_vocab_size: int = 600
    llm_layers: int = 4
    llm_width: int = 128
    llm_positions: int = 256
    llm_steps: int = 2500
    llm_batch_size: int = 32
    rm_vocab_size: int = 400
    rm_layers: int = 2
    rm_width: int = 64
    pairs_per_prompt: int = 24
    eval_prompt_share: float = 0.4
    heldout_pairs: int = 512
    sample_max_tokens: int = 64
    bt_temperature: float = 0.5
    rm_epochs: float = 3.0  # rm_partial_causal and rm_eval
    rm_batch_size: int = 32
    # rm_full and rm_partial: the same optimiser steps and about the same tokens (the partial batch
    # scaled by the ratio of mean example lengths), each at the learning rate that
    # `pargs-batch world compare-rms` chose on the evaluation split (grid 1e-3, 3e-3, 1e-2)
    rm_steps: int = 1500
    rm_lr_full: float = 1e-3
    rm_lr_partial: float = 3e-3
    # rm_autoregressive: rm_partial's training FLOPs (6 N tokens) in batches of rm_batch_size pairs;
    # accuracy on the evaluation split (one seed, matched steps): 0.724, 0.740, 0.743, 0.720
    rm_lr_autoregressive: float = 3e-3  # of 3e-4, 1e-3, 3e-3, 1e-2, the best on the evaluation split
    rm_autoregressive_scale: float = 0.1
    threads: int = 2  # torch CPU threads while building: the artefacts depend on it
    rm_seeds: int = 3  # each reward model trained this many times, seeds of initialisation and data order
    rm_workers: int = 2  # reward models trained side by side, each process on threads // rm_workers threads

    @classmethod
    def reduced(cls, seed: int = 0) -> DefaultWorldSpec:
        """Tiny sizes for tests: the same pipeline in a minute or two."""
        return cls(seed=seed, corpus_size=3000, heldout_prompts=64, llm_vocab_size=400, llm_layers=2,
                   llm_width=64, llm_steps=300, rm_vocab_size=300, rm_width=32, pairs_per_prompt=2,
                   heldout_pairs=64, sample_max_tokens=40, rm_epochs=1.0, rm_steps=40, rm_seeds=2)


# ---------------------------------------------------------------- language

def all_prompts() -> list[str]:
    return [form.format(subject=s, aspect=a) for form in gold.PROMPT_FORMS for s in gold.SUBJECTS
            for a in gold.ASPECTS]


def split_prompts(spec: DefaultWorldSpec) -> tuple[list[str], list[str]]:
    """(train prompts, held-out prompts): disjoint, from the seed."""
    prompts = all_prompts()
    random.Random(spec.seed).shuffle(prompts)
    return prompts[spec.heldout_prompts:], prompts[: spec.heldout_prompts]


def sample_reply(rng: random.Random, aspect: str) -> str:
    """One corpus reply: 1-5 clauses (each on the focus aspect with probability 0.35), random
    polarity and intensity, connectives and a verdict that fit or clash at random."""
    clauses = []
    for i in range(rng.choice([1, 1, 2, 2, 2, 3, 3, 4, 5])):
        noun = aspect if rng.random() < 0.35 else rng.choice(gold.ASPECTS)
        adj = rng.choice(gold.GOOD if rng.random() < 0.5 else gold.BAD)
        clause = f"the {noun} was {'very ' if rng.random() < 0.2 else ''}{adj}"
        if i:
            link = rng.choice(gold.CONTRAST + gold.AGREE + [","])
            clause = f"{link} {clause}"
        clauses.append(clause)
    reply = " " + " ".join(clauses) + " ."
    if rng.random() < 0.8:
        reply += " " + rng.choice(gold.GOOD_VERDICTS + gold.BAD_VERDICTS)
    return reply


def make_corpus(prompts: list[str], size: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(size):
        prompt = rng.choice(prompts)
        pairs.append((prompt, sample_reply(rng, gold.focus_aspect(prompt))))
    return pairs


# ---------------------------------------------------------------- LM

def perplexity(model, tokenizer, texts: list[str], prompts: list[str]) -> float:
    """Per-token perplexity of the replies (EOS included) given their prompts."""
    import torch

    data, mask = encode_texts(tokenizer, texts)
    labels = data.masked_fill(mask == 0, -100)
    for i, p in enumerate(prompts):  # score the reply only, not the prompt
        labels[i, : len(tokenizer(p)["input_ids"])] = -100
    nll, count = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(texts), 128):
            logits = model(input_ids=data[s:s + 128], attention_mask=mask[s:s + 128]).logits[:, :-1]
            target = labels[s:s + 128, 1:]
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                                     ignore_index=-100, reduction="sum")
            nll += float(loss)
            count += int((target != -100).sum())
    return math.exp(nll / count)


def sample_replies(model, tokenizer, prompts: list[str], max_new_tokens: int, seed: int) -> list[str]:
    """One ancestral sample (temperature 1, no truncation) from the LM per prompt."""
    import torch

    tokenizer.padding_side = "left"
    torch.manual_seed(seed)
    out = []
    for s in range(0, len(prompts), 256):
        batch = tokenizer(prompts[s:s + 256], return_tensors="pt", padding=True)
        with torch.no_grad():
            ids = model.generate(**batch, do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
                                 max_new_tokens=max_new_tokens, pad_token_id=tokenizer.eos_token_id)
        out += tokenizer.batch_decode(ids[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    tokenizer.padding_side = "right"
    return out


# ---------------------------------------------------------------- preferences

def label_pairs(prompts: list[str], a: list[str], b: list[str], temperature: float, seed: int) -> list[dict]:
    """Bradley-Terry labels from the gold reward: a is chosen with probability
    sigmoid((gold(a) - gold(b)) / temperature). Identical replies are dropped."""
    rng = random.Random(seed)
    rows = []
    for p, x, y in zip(prompts, a, b):
        if x.strip() == y.strip():
            continue
        gx, gy = gold.gold_score(p, x), gold.gold_score(p, y)
        chosen_x = rng.random() < 1 / (1 + math.exp(-(gx - gy) / temperature))
        chosen, rejected = (x, y) if chosen_x else (y, x)
        rows.append({"prompt": p, "chosen": chosen, "rejected": rejected,
                     "gold_chosen": gold.gold_score(p, chosen), "gold_rejected": gold.gold_score(p, rejected)})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


# ---------------------------------------------------------------- reward models

def rm_config(spec: DefaultWorldSpec, mode: str, model: str, train: str, heldout: str, out: str,
              lr: float, seed: int) -> dict:
    """The rm_training config of one of the world's reward models (what a YAML file would hold)."""
    return {
        "mode": mode, "model": model, "template": TEMPLATE,
        "data": {"source": train, "format": "generic", "eval_source": heldout},
        "prefixes": {"strategy": "stride", "stride": STRIDE, "min_length": 1, "seed": seed},
        "training": {"output_dir": out, "learning_rate": lr, "per_device_train_batch_size": spec.rm_batch_size,
                     "per_device_eval_batch_size": 128, "gradient_accumulation_steps": 1,
                     "num_train_epochs": spec.rm_epochs, "warmup_ratio": 0.05, "max_length": 128,
                     "logging_steps": 50, "seed": seed},
    }


def read_triples(path: str, limit: int | None = None):
    from rm_training import data as prefs

    rows, _ = prefs.read_rows(path)
    triples, _ = prefs.to_triples(rows, "generic", {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"},
                                  limit)
    return triples


def mean_example_tokens(triples, tokenizer, template: str = TEMPLATE) -> dict[str, float]:
    """Mean reward-model tokens of one training example (both sides of a pair) in each mode."""
    import statistics

    from rm_training.prefixes import prefix_pairs

    def size(prompt: str, a: str, b: str) -> int:
        return sum(len(tokenizer(template.format(prompt=prompt, response=r))["input_ids"]) for r in (a, b))

    full = [size(t.prompt, t.chosen, t.rejected) for t in triples]
    partial = [size(t.prompt, p.chosen, p.rejected) for t in triples
               for p in prefix_pairs(t.chosen, t.rejected, tokenizer, "stride", 1, STRIDE)[0]]
    return {"full": statistics.fmean(full), "partial": statistics.fmean(partial)}


def matched_batches(rm_init: str, guidance: str, base_batch: int) -> tuple[dict[str, int], dict[str, float]]:
    """Batch sizes that give rm_full and rm_partial about the same tokens a step: the full model's
    ``base_batch`` and the partial model's scaled by the ratio of mean example lengths."""
    from transformers import AutoTokenizer

    tokens = mean_example_tokens(read_triples(guidance), AutoTokenizer.from_pretrained(rm_init))
    return {"full": base_batch, "partial": max(1, round(base_batch * tokens["full"] / tokens["partial"]))}, tokens


def matched_autoregressive(spec: DefaultWorldSpec, llm: str, rm_init: str, guidance: str, batches: dict[str, int],
                           tokens: dict[str, float]) -> dict:
    """rm_autoregressive's optimiser steps at rm_partial's training FLOPs (6 N x tokens, Kaplan et
    al.): batches of ``rm_batch_size`` pairs, each both whole sequences (prompt and response) in the
    LM's tokens, for as many steps as rm_partial's FLOPs buy. The LM is the larger model, so it
    gets fewer steps: compute is matched, not steps or examples."""
    from transformers import AutoTokenizer

    from experiments.bench.flops import flop_params

    ar_tokens = mean_example_tokens(read_triples(guidance), AutoTokenizer.from_pretrained(llm))["full"]
    partial_flops = 6 * flop_params(rm_init, False) * batches["partial"] * tokens["partial"] * spec.rm_steps
    step_flops = 6 * flop_params(llm, True) * spec.rm_batch_size * ar_tokens
    steps = max(1, round(partial_flops / step_flops))
    return {"steps": steps, "batch": spec.rm_batch_size, "tokens_per_example": round(ar_tokens, 2),
            "training_flops": {"rm_partial": float(f"{partial_flops:.4g}"),
                               "rm_autoregressive": float(f"{step_flops * steps:.4g}")}}


def matched_rm_config(spec: DefaultWorldSpec, mode: str, rm_init: str, guidance: str, heldout: str, out: str,
                      lr: float, seed: int, steps: int, batch: int) -> dict:
    """rm_full's or rm_partial's recipe: ``steps`` optimiser steps of ``batch`` examples (5 % warm-up,
    linear decay), whatever the number of epochs that makes."""
    cfg = rm_config(spec, mode, rm_init, guidance, heldout, out, lr, seed)
    cfg["training"].update({"max_steps": steps, "num_train_epochs": 1000.0, "per_device_train_batch_size": batch,
                            "logging_steps": max(1, steps // 10)})
    return cfg


RM_NAMES = ("rm_full", "rm_partial", "rm_partial_causal", "rm_eval", "rm_autoregressive")
# their training times, in the build
LONGEST_FIRST = ("rm_partial_causal", "rm_partial", "rm_full", "rm_autoregressive", "rm_eval")


def seed_key(name: str, index: int) -> str:
    """A reward model's directory (and world.json key) for its ``index``-th seed: the plain name first."""
    return name if index == 0 else f"{name}_seed{index}"


def check_seed_count(spec: DefaultWorldSpec, seeds: int | None) -> None:
    """Refuse a number of reward-model seeds the world built from ``spec`` does not have (None: all)."""
    from pargs_batch.configlib import ConfigError

    if seeds is not None and not 1 <= seeds <= spec.rm_seeds:
        raise ConfigError("--rm-seeds", seeds, f"1 to {spec.rm_seeds}: the reward-model seeds the world is built with")


def reward_seed_paths(world: dict, key: str | None, seeds: int) -> list[str]:
    """The first ``seeds`` seeds of reward model ``key`` in a built world ([""] for no reward model)."""
    from pargs_batch.configlib import ConfigError

    built = len(world["rm_seeds"]["rm_full"])
    if not 1 <= seeds <= built:
        raise ConfigError("--rm-seeds", seeds, f"1 to {built}: the reward-model seeds this world was built with")
    return world["rm_seeds"][key][:seeds] if key else [""]


def rm_init_seed(spec: DefaultWorldSpec, index: int) -> int:
    """The torch seed of the untrained DeBERTa the ``index``-th seed of the DeBERTa RMs starts from."""
    return spec.seed + 1000 * index


def rm_jobs(spec: DefaultWorldSpec, out: Path, files: dict, batches: dict[str, int],
            autoregressive: dict) -> dict[tuple[str, int], dict]:
    """The rm_training config of every reward model and seed, by (name, seed index)."""
    recipes = {  # in the order that gives each its data seed (a new one goes last)
        "rm_full": ("full", "rm_init", "guidance_pairs", spec.rm_lr_full),
        "rm_partial": ("partial", "rm_init", "guidance_pairs", spec.rm_lr_partial),
        "rm_partial_causal": ("partial-causal", "llm", "guidance_pairs", 1e-3),
        "rm_eval": ("full", "rm_init", "evaluation_pairs", 3e-3),
        "rm_autoregressive": ("autoregressive", "llm", "guidance_pairs", spec.rm_lr_autoregressive),
    }
    matched = {"rm_full": (spec.rm_steps, batches["full"]), "rm_partial": (spec.rm_steps, batches["partial"]),
               "rm_autoregressive": (autoregressive["steps"], autoregressive["batch"])}  # (steps, batch)
    jobs = {}
    for index in range(spec.rm_seeds):
        for i, (name, (mode, init, train_file, lr)) in enumerate(recipes.items()):
            init_path = files["rm_inits"][index] if init == "rm_init" else files[init]
            seed = spec.seed + 10 + i + 100 * index
            path = str(out / seed_key(name, index))
            if name in matched:
                cfg = matched_rm_config(spec, mode, init_path, files[train_file], files["heldout_pairs"], path, lr,
                                        seed, *matched[name])
                if mode == "autoregressive":
                    cfg["autoregressive_scale"] = spec.rm_autoregressive_scale
            else:
                cfg = rm_config(spec, mode, init_path, files[train_file], files["heldout_pairs"], path, lr, seed)
            jobs[(name, index)] = cfg
    return jobs


def train_one_rm(cfg: dict, threads: int) -> dict:
    """Train one of the world's reward models under :func:`deterministic_torch` (in a process of its
    own when the build trains them side by side); what world.json records of it."""
    from pargs_batch.configlib import build
    from rm_training.config import TrainConfig
    from rm_training.train import train

    t0 = time.perf_counter()
    with deterministic_torch(cfg["training"]["seed"], threads):
        summary = train(build(TrainConfig, cfg))
    return {"path": cfg["training"]["output_dir"], "seed": cfg["training"]["seed"], "steps": summary["steps"],
            "train_pairs": summary["train_pairs"], "heldout_accuracy": summary.get("pairwise_accuracy"),
            "seconds": round(time.perf_counter() - t0, 1)}


def train_reward_models(spec: DefaultWorldSpec, out: Path, files: dict, log=None) -> dict:
    """Every reward model at every seed, ``spec.rm_workers`` at a time (spawned processes, each on
    ``threads // rm_workers`` torch threads: these small models use one thread about as well as two)."""
    import concurrent.futures
    import multiprocessing

    log = log or (lambda _: None)
    batches, tokens = matched_batches(files["rm_init"], files["guidance_pairs"], spec.rm_batch_size)
    autoregressive = matched_autoregressive(spec, files["llm"], files["rm_init"], files["guidance_pairs"], batches,
                                            tokens)
    matched = {"steps": spec.rm_steps, "batches": batches, "tokens_per_example": tokens,
               "tokens_per_step": {m: round(batches[m] * tokens[m], 1) for m in batches},
               "autoregressive": autoregressive}
    jobs = rm_jobs(spec, out, files, batches, autoregressive)
    threads = max(1, spec.threads // max(1, spec.rm_workers))
    done: dict[tuple[str, int], dict] = {}

    def record(key: tuple[str, int], result: dict) -> None:
        done[key] = result
        log(f"world: {seed_key(*key)} ({jobs[key]['mode']}) trained: {result['steps']} steps in {result['seconds']} s, "
            f"held-out accuracy {result['heldout_accuracy']:.3f}")

    if spec.rm_workers <= 1:
        for key, cfg in jobs.items():
            record(key, train_one_rm(cfg, threads))
    else:
        order = sorted(jobs, key=lambda k: (LONGEST_FIRST.index(k[0]), k[1]))  # so the processes end together
        with concurrent.futures.ProcessPoolExecutor(spec.rm_workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(train_one_rm, jobs[key], threads): key for key in order}
            for future in concurrent.futures.as_completed(futures):
                record(futures[future], future.result())
    models = {}
    for name in RM_NAMES:
        seeds = [done[(name, index)] for index in range(spec.rm_seeds)]
        cfg = jobs[(name, 0)]
        accuracies = [s["heldout_accuracy"] for s in seeds]
        models[name] = {**seeds[0], "mode": cfg["mode"], "learning_rate": cfg["training"]["learning_rate"],
                        "batch_size": cfg["training"]["per_device_train_batch_size"], "seeds": seeds,
                        "heldout_accuracy_over_seeds": {"mean": round(sum(accuracies) / len(accuracies), 4),
                                                        "min": min(accuracies), "max": max(accuracies)}}
    return {"models": models, "matched": matched}


# ---------------------------------------------------------------- build

def sample_gold_means(drawn: dict[str, tuple[list[str], list[str], list[str]]]) -> dict[str, float]:
    """Mean gold reward of the LM's samples - both replies of every pair - per split and over all
    (``drawn``: split -> (queries, replies a, replies b))."""
    out, everything = {}, []
    for name, (queries, a, b) in drawn.items():
        scores = [gold.gold_score(q, r) for q, r in zip(queries + queries, a + b)]
        out[name] = round(sum(scores) / len(scores), 3)
        everything += scores
    out["all"] = round(sum(everything) / len(everything), 3)
    return out


RUN_RECORDS = {"world.json", "training_args.bin", "training_summary.json", "build.log"}  # times and paths of one build


def artefact_hashes(world_dir: str | Path) -> dict[str, str]:
    """SHA-256 of every artefact of a built world (weights, tokenizers, configs, preference and
    prompt files) by relative path; leaves out the records of the build itself (times, paths)."""
    root = Path(world_dir)
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name not in RUN_RECORDS}


# the default world whose tables the docs and the README print (docs/world.md); another CPU model
# builds another world from the same seed (the float rounding of its kernels differs)
DOCUMENTED_FINGERPRINT = "87b432cff29ebde7"  # 306cdfce1fc07c51's artefacts (2026-12-03) and rm_autoregressive


def fingerprint_note(world: dict) -> str:
    """Whether ``world`` is the one the docs' figures came from, so a reader knows which digits to expect."""
    mine = world.get("fingerprint")
    if world.get("spec") != asdict(DefaultWorldSpec()):
        return f"fingerprint {mine}; not the default spec (reduced or changed): the docs' figures are not for this world"
    if mine == DOCUMENTED_FINGERPRINT:
        return f"fingerprint {mine}, the documented world: expect the docs' figures digit for digit"
    return (f"fingerprint {mine}, not the documented {DOCUMENTED_FINGERPRINT}: built on another CPU model (or "
            f"software), so expect figures near the docs' but not the same digits")


def fingerprint(hashes: dict[str, str]) -> str:
    """One short hash of a world's artefacts: two builds with the same fingerprint are the same world."""
    return hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()[:16]


def built_world(out: Path, spec: DefaultWorldSpec) -> dict | None:
    """The world.json in ``out`` when it was built from ``spec`` by this version, else None."""
    path = Path(out) / "world.json"
    if path.exists():
        manifest = json.loads(path.read_text())
        if manifest.get("spec") == asdict(spec) and manifest.get("version") == WORLD_VERSION:
            return manifest
    return None


def build_default_world(out_dir: str | Path, spec: DefaultWorldSpec = DefaultWorldSpec(),
                        log=None) -> dict:
    """Build (or reuse, when its spec and version match) the default world in ``out_dir``; return
    world.json. The same spec gives the same artefacts, byte for byte, run after run on one machine
    (``world.json``'s ``fingerprint``); see :func:`deterministic_torch` for what that takes."""
    log = log or console.say
    out = Path(out_dir)
    manifest = built_world(out, spec)
    if manifest is not None:
        return manifest
    with deterministic_torch(spec.seed, spec.threads):
        return _build(out, spec, log)


@contextlib.contextmanager
def deterministic_torch(seed: int, threads: int):
    """Torch as the world build needs it: a fixed number of CPU threads (a matmul's reduction
    order follows the thread count), deterministic algorithms, the seed set; restored afterwards.
    Every other random choice in the build comes from its own seeded generator, and the RM
    tokenizer is learned without hash-map order (:func:`~experiments.world.builders.train_rm_tokenizer`)."""
    import torch

    # cuBLAS refuses deterministic mode without a fixed workspace (the RMs train on a GPU if one is there)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled())
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1], warn_only=before[2])


def _build(out: Path, spec: DefaultWorldSpec, log) -> dict:
    manifest_path = out / "world.json"
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    timings = {}

    def phase(name: str, t0: float) -> None:
        timings[name] = round(time.perf_counter() - t0, 1)
        log(f"world: {name} done in {timings[name]} s")

    t0 = time.perf_counter()
    train_prompts, heldout_prompts = split_prompts(spec)
    corpus = make_corpus(train_prompts, spec.corpus_size, spec.seed + 1)
    ppl_corpus = make_corpus(heldout_prompts, 500, spec.seed + 2)  # replies to prompts never trained on
    texts = [p + r for p, r in corpus]
    llm_tok = train_llm_tokenizer(texts, spec.llm_vocab_size, spec.llm_positions)
    llm = new_llm(llm_tok, spec.llm_layers, spec.llm_width, spec.llm_positions)
    loss = train_llm(llm, llm_tok, texts, spec.llm_steps, spec.seed, batch_size=spec.llm_batch_size, decay=True,
                     progress=True)
    ppl = perplexity(llm, llm_tok, [p + r for p, r in ppl_corpus], [p for p, _ in ppl_corpus])
    llm.save_pretrained(out / "llm")
    llm_tok.save_pretrained(out / "llm")
    phase("llm", t0)
    log(f"world: LM held-out perplexity {ppl:.2f} (final train loss {loss:.3f})")

    t0 = time.perf_counter()
    rm_tok = train_rm_tokenizer(texts, spec.rm_vocab_size)
    import torch

    rm_inits = []
    for index in range(spec.rm_seeds):  # an untrained DeBERTa a seed (the first one's seed the build's)
        if index:
            torch.manual_seed(rm_init_seed(spec, index))
        rm = new_deberta_rm(rm_tok, spec.rm_layers, spec.rm_width)
        rm_inits.append(str(out / seed_key("rm_init", index)))
        rm.save_pretrained(rm_inits[-1])
        rm_tok.save_pretrained(rm_inits[-1])

    # preference pairs: two LM samples per prompt, three disjoint prompt splits
    rng = random.Random(spec.seed + 3)
    shuffled = list(train_prompts)
    rng.shuffle(shuffled)
    n_eval = int(len(shuffled) * spec.eval_prompt_share)
    splits = {"guidance": shuffled[n_eval:], "evaluation": shuffled[:n_eval], "heldout": heldout_prompts}
    files = {"llm": str(out / "llm"), "rm_init": rm_inits[0], "rm_inits": rm_inits}
    pair_stats, drawn = {}, {}
    for i, (name, prompts) in enumerate(splits.items()):
        reps = spec.pairs_per_prompt if name != "heldout" else max(1, -(-spec.heldout_pairs // len(prompts)))
        queries = [p for p in prompts for _ in range(reps)]
        a = sample_replies(llm, llm_tok, queries, spec.sample_max_tokens, spec.seed + 20 + 2 * i)
        b = sample_replies(llm, llm_tok, queries, spec.sample_max_tokens, spec.seed + 21 + 2 * i)
        drawn[name] = (queries, a, b)
        rows = label_pairs(queries, a, b, spec.bt_temperature, spec.seed + 30 + i)
        if name == "heldout":
            rows = rows[: spec.heldout_pairs]
        files[f"{name}_pairs"] = write_jsonl(out / f"preferences_{name}.jsonl", rows)
        agree = sum(r["gold_chosen"] > r["gold_rejected"] for r in rows) / max(len(rows), 1)
        pair_stats[name] = {"prompts": len(prompts), "pairs": len(rows), "gold_agreement": round(agree, 3)}
        log(f"world: {name} preferences: {len(rows)} pairs on {len(prompts)} prompts "
            f"(chosen has the higher gold reward in {agree:.1%})")
    sample_gold = sample_gold_means(drawn)
    phase("preferences", t0)

    t0 = time.perf_counter()
    trained = train_reward_models(spec, out, files, log)
    rms = trained["models"]
    phase("reward models", t0)

    prompts_file = write_jsonl(out / "prompts_heldout.jsonl",
                               [{"id": f"h{i:04d}", "prompt": p} for i, p in enumerate(heldout_prompts)])
    manifest = {
        "version": WORLD_VERSION, "spec": asdict(spec), "kind": "default",
        "llm": str(out / "llm"), "rm_init": str(out / "rm_init"),
        "rm_full": rms["rm_full"]["path"], "rm_partial": rms["rm_partial"]["path"],
        "rm_partial_causal": rms["rm_partial_causal"]["path"], "rm_eval": rms["rm_eval"]["path"],
        "rm_autoregressive": rms["rm_autoregressive"]["path"],
        "rm_seeds": {name: [s["path"] for s in rm["seeds"]] for name, rm in rms.items()},
        "prompts": prompts_file, "template": TEMPLATE, "gold_reward": GOLD_REWARD,
        "preferences": {k: files[f"{k}_pairs"] for k in splits},
        "llm_heldout_perplexity": round(ppl, 3), "llm_final_train_loss": round(loss, 4),
        "llm_sample_gold_mean": sample_gold["all"], "llm_sample_gold_by_split": sample_gold,
        "pairs": pair_stats, "reward_models": rms, "matched_compute": trained["matched"], "timings_s": timings,
        "build_seconds": round(time.perf_counter() - start, 1),
        "fingerprint": fingerprint(artefact_hashes(out)),
    }
    manifest_path.write_text(json.dumps(manifest, indent=2))
    log(f"world: built in {manifest['build_seconds']} s -> {out} (fingerprint {manifest['fingerprint']})")
    return manifest


def ensure_world(world_dir: str, reduced: bool, log=None) -> dict:
    """The default world (or its reduced twin) in ``world_dir``, built unless it is there."""
    log = log or console.say
    spec = DefaultWorldSpec.reduced() if reduced else DefaultWorldSpec()
    world = built_world(Path(world_dir), spec)
    if world is not None:
        log(f"world: reused {world_dir} (built earlier in {world['build_seconds']} s; fingerprint "
            f"{world.get('fingerprint')}; LM held-out perplexity {world['llm_heldout_perplexity']:.2f})")
        return world
    log(f"world: building in {world_dir} (about {'1' if reduced else '15'} min on two cores)")
    return build_default_world(world_dir, spec, log=log)
