"""A tiny offline world: a synthetic corpus, an LLM and a reward model with different tokenizers.

Nothing here is downloaded. Everything is built from a seed and saved as ordinary Hugging Face
checkpoints, so the rest of the package loads it exactly as it would load ``gpt2-large`` or a
DeBERTa reward model. The unit tests use it (``pargs-batch world build --kind tiny``).

The LLM is a two-layer GPT-2 trained for a few hundred steps on the corpus, enough that it ends
its replies with EOS. The reward model is a two-layer DeBERTa-v2 classifier with its own WordPiece
tokenizer (the paper's GPT-2 + DeBERTa pairing, in miniature), regressed for a few hundred steps
onto ``sentiment`` of response *prefixes*: a stand-in partial-sequence reward model whose scores
mean something (more pleasant words, higher reward), until a Bradley-Terry-trained world
replaces it. The loading paths stay the same.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from experiments.world.builders import new_deberta_rm, new_llm, train_llm, train_llm_tokenizer, train_rm_tokenizer

WORLD_VERSION = 3  # 3: the reward model records how it reads; bump when the files a world holds change, so cached worlds are rebuilt

_SUBJECTS = ["the cafe", "this hotel", "the movie", "my phone", "the train", "our guide",
             "the garden", "this book", "the concert", "the museum", "the bakery", "that game"]
_GOOD = ["lovely", "friendly", "bright", "calm", "clever", "warm", "quick", "fresh", "kind"]
_BAD = ["noisy", "slow", "dull", "cold", "rude", "stale", "messy", "late", "broken"]
_NOUNS = ["staff", "food", "music", "room", "story", "screen", "seats", "coffee", "view", "price"]
_LINKS = ["and", "but", "so", "while", "because"]
_ENDINGS = ["i would go back .", "never again .", "worth a visit .", "not for me .",
            "five stars .", "two stars ."]


@dataclass(frozen=True)
class TinyWorldSpec:
    """Sizes of the tiny world; the defaults build in well under a minute on two cores."""

    seed: int = 0
    corpus_size: int = 3000
    llm_vocab_size: int = 400
    rm_vocab_size: int = 300
    llm_layers: int = 2
    llm_width: int = 64
    llm_positions: int = 256
    rm_layers: int = 2
    rm_width: int = 32
    train_steps: int = 300
    num_prompts: int = 256


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_NOUNS), "was", rng.choice(_GOOD + _BAD)]
    if rng.random() < 0.6:
        words += [rng.choice(_LINKS), "the", rng.choice(_NOUNS), "was", rng.choice(_GOOD + _BAD)]
    return " ".join(words)


def make_corpus(spec: TinyWorldSpec) -> list[tuple[str, str]]:
    """(prompt, response) pairs of short reviews, from the spec's seed."""
    rng = random.Random(spec.seed)
    pairs = []
    for _ in range(spec.corpus_size):
        prompt = f"review of {rng.choice(_SUBJECTS)} :"
        clauses = [_sentence(rng) for _ in range(rng.randint(1, 3))]
        response = " " + " , ".join(clauses) + " . " + rng.choice(_ENDINGS)
        pairs.append((prompt, response))
    return pairs


def write_preferences(path: str | Path, spec: TinyWorldSpec, num_triples: int = 300) -> Path:
    """(prompt, chosen, rejected) triples of corpus replies to one prompt, the pleasanter one chosen."""
    corpus = make_corpus(TinyWorldSpec(corpus_size=2000, seed=spec.seed + 5))
    by_prompt: dict[str, list[str]] = {}
    for prompt, response in corpus:
        by_prompt.setdefault(prompt, []).append(response)
    rng, rows = random.Random(spec.seed), []
    for prompt, responses in by_prompt.items():
        for _ in range(60):
            a, b = rng.sample(responses, 2)
            if sentiment(a) != sentiment(b):
                chosen, rejected = (a, b) if sentiment(a) > sentiment(b) else (b, a)
                rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    rng.shuffle(rows)
    path = Path(path)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:num_triples]))
    return path


def sentiment(response: str) -> float:
    """The tiny world's notion of a good reply: pleasant words minus unpleasant ones, halved."""
    words = response.split()
    return 0.5 * (sum(w in _GOOD for w in words) - sum(w in _BAD for w in words))


def gold_reward(prompts: list[str], responses: list[str]) -> list[float]:
    """The tiny world's known reward of whole responses (for `pargs-batch evaluate` gold_reward)."""
    return [sentiment(r) for r in responses]


def _train_rm(model, tokenizer, pairs: list[tuple[str, str]], spec: TinyWorldSpec) -> float:
    """Regress the reward head onto ``sentiment`` of random response prefixes; returns the last loss."""
    import torch

    rng = random.Random(spec.seed + 2)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(spec.train_steps):
        texts, targets = [], []
        for prompt, response in rng.sample(pairs, 32):
            words = response.split()
            prefix = " " + " ".join(words[: rng.randint(0, len(words))])
            texts.append(prompt + prefix)
            targets.append(sentiment(prefix))
        batch = tokenizer(texts, padding=True, return_tensors="pt")
        pred = model(**batch).logits[:, 0]
        loss = torch.nn.functional.mse_loss(pred, torch.tensor(targets))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return float(loss.detach())


def build_tiny_world(out_dir: str | Path, spec: TinyWorldSpec = TinyWorldSpec()) -> dict:
    """Build (or reuse, when its spec matches) the tiny world in ``out_dir``; return its paths."""
    import torch

    out = Path(out_dir)
    manifest_path = out / "world.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("spec") == asdict(spec) and manifest.get("version") == WORLD_VERSION:
            return manifest

    torch.manual_seed(spec.seed)
    pairs = make_corpus(spec)
    texts = [p + r for p, r in pairs]

    llm_tok = train_llm_tokenizer(texts, spec.llm_vocab_size, spec.llm_positions)
    llm = new_llm(llm_tok, spec.llm_layers, spec.llm_width, spec.llm_positions)
    final_loss = train_llm(llm, llm_tok, texts, spec.train_steps, spec.seed)
    llm.save_pretrained(out / "llm")
    llm_tok.save_pretrained(out / "llm")

    rm_tok = train_rm_tokenizer(texts, spec.rm_vocab_size)
    rm = new_deberta_rm(rm_tok, spec.rm_layers, spec.rm_width)
    rm.save_pretrained(out / "reward_model_init")  # untrained: a starting point for rm_training
    rm_tok.save_pretrained(out / "reward_model_init")
    rm_loss = _train_rm(rm, rm_tok, pairs, spec)
    # trained on joined text (prompt + response prefix): recorded as rm_training records it, so
    # reward.input: auto reads it that way rather than as the segment pair its tokenizer could build
    rm.config.pargs_batch_input = {"input": "template", "template": "{prompt}{response}"}
    rm.save_pretrained(out / "reward_model")
    rm_tok.save_pretrained(out / "reward_model")

    rng = random.Random(spec.seed + 1)
    with open(out / "prompts.jsonl", "w") as f:
        for i in range(spec.num_prompts):
            f.write(json.dumps({"id": f"p{i:05d}", "prompt": f"review of {rng.choice(_SUBJECTS)} :"}) + "\n")

    write_preferences(out / "preferences.jsonl", spec)

    manifest = {
        "version": WORLD_VERSION,
        "spec": asdict(spec),
        "llm": str(out / "llm"),
        "reward_model": str(out / "reward_model"),
        "prompts": str(out / "prompts.jsonl"),
        "reward_model_init": str(out / "reward_model_init"),
        "preferences": str(out / "preferences.jsonl"),
        "llm_final_train_loss": final_loss,
        "reward_model_final_mse": rm_loss,
    }
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return manifest
