"""Preference pairs from a run's own samples, ordered by a gold measure: ``pargs-batch pairs``.

Each prompt's good rows (several per prompt: ``decode.num_samples``) are scored by a
``module:function`` of (prompts, responses) -> floats; every two of a prompt's responses whose gold
differs by more than ``min_margin`` make one pair, the higher one ``chosen``. The pairs are JSON
lines with ``prompt``, ``chosen`` and ``rejected`` strings (``rm_training``'s ``generic`` format)
plus the id and both gold values. ``prompt`` is the user's text as the run's rows hold it, or with
``prompt="rendered"`` the text the LLM read (its chat template applied): what a reward model that
reads the LLM's own token ids (``reward.backend: causal`` or ``autoregressive``) sees while guiding.
A seeded share of the prompts (by a hash of the id, so a prompt's pairs stay together) can go to a
second, held-out file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from pargs_batch.configlib import ConfigError
from pargs_batch.evaluation.scoring import import_callable
from pargs_batch.io.output import iter_output, output_info

PROMPTS = ("user", "rendered")


@dataclass
class Pairs:
    """What ``make_pairs`` wrote: pairs and prompts per file, prompts without a pair (all their
    samples within ``min_margin`` of each other), rows left out for an error."""

    pairs: dict[str, int] = field(default_factory=dict)
    prompts: dict[str, int] = field(default_factory=dict)
    tied_prompts: int = 0
    error_rows: int = 0
    samples_per_prompt: int = 0


def heldout(row_id: str, fraction: float, seed: int = 0) -> bool:
    """Whether a prompt id falls in the held-out share (a stable hash, not Python's salted one)."""
    digest = hashlib.sha256(f"{seed}:{row_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def prompt_pairs(samples: list[tuple[str, float]], min_margin: float = 0.0) -> list[tuple[str, str, float, float]]:
    """(chosen, rejected, chosen gold, rejected gold) of every two samples whose gold differs by more
    than ``min_margin``, the higher first; identical texts make no pair."""
    out = []
    for i, (a, ga) in enumerate(samples):
        for b, gb in samples[i + 1:]:
            if abs(ga - gb) > min_margin and a != b:
                out.append((a, b, ga, gb) if ga > gb else (b, a, gb, ga))
    return out


def rendered_prompts(config: dict) -> dict[str, str]:
    """id -> the text the run's LLM read for it: its conversation through the tokenizer's chat
    template (with the generation prompt), or the prompt itself when the run rendered none."""
    from transformers import AutoTokenizer

    from pargs_batch.config import DataConfig
    from pargs_batch.configlib import build
    from pargs_batch.io.prompts import PromptSource

    tokenizer = AutoTokenizer.from_pretrained(config["model"].get("tokenizer") or config["model"]["path"])
    out = {}
    for batch in PromptSource(build(DataConfig, config["data"], "data.")).batches(1024):
        for row in batch:
            if row.error is None:
                out[row.id] = row.prompt if row.messages is None else tokenizer.apply_chat_template(
                    row.messages, tokenize=False, add_generation_prompt=True)
    return out


def make_pairs(run_dir: str, gold: str, out: str, prompt: str = "user", heldout_fraction: float = 0.0,
               heldout_out: str | None = None, min_margin: float = 0.0, seed: int = 0) -> Pairs:
    """Write the pairs of ``run_dir``'s samples under ``gold`` to ``out`` (and the held-out prompts'
    pairs to ``heldout_out``); returns what was written."""
    if prompt not in PROMPTS:
        raise ConfigError("--prompt", prompt, "one of " + ", ".join(PROMPTS))
    if not 0.0 <= heldout_fraction < 1.0:
        raise ConfigError("--heldout-fraction", heldout_fraction, "a share in [0, 1)")
    if (heldout_fraction > 0) != (heldout_out is not None):
        raise ConfigError("--heldout-out", heldout_out, "give it together with --heldout-fraction > 0")
    if min_margin < 0:
        raise ConfigError("--min-margin", min_margin, "a number >= 0")
    if ":" not in gold:
        raise ConfigError("--gold", gold, "expected 'module.path:function'")
    try:
        config, _ = output_info(run_dir)
    except (FileNotFoundError, IndexError):
        raise ConfigError("RUN_DIR", run_dir, "a run directory that pargs-batch generate wrote") from None
    score = import_callable(gold)
    groups: dict[str, list[tuple[str, str]]] = {}
    done = Pairs()
    for batch in iter_output(run_dir, columns=["id", "prompt", "response", "error"]):
        for row in batch.to_pylist():
            if row["error"] is not None or row["response"] is None:
                done.error_rows += 1
                continue
            groups.setdefault(row["id"], []).append((row["prompt"], row["response"]))
    texts = rendered_prompts(config) if prompt == "rendered" else {}
    ids = list(groups)
    flat = [s for i in ids for s in groups[i]]
    golds = iter(score([p for p, _ in flat], [r for _, r in flat]))
    files = {"train": out, **({"heldout": heldout_out} if heldout_out else {})}
    handles = {}
    for name, path in files.items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handles[name] = open(path, "w")
        done.pairs[name] = done.prompts[name] = 0
    try:
        for row_id in ids:
            samples = [(response, float(next(golds))) for _, response in groups[row_id]]
            done.samples_per_prompt = max(done.samples_per_prompt, len(samples))
            pairs = prompt_pairs(samples, min_margin)
            if not pairs:
                done.tied_prompts += 1
                continue
            name = "heldout" if heldout_out and heldout(row_id, heldout_fraction, seed) else "train"
            text = texts.get(row_id, groups[row_id][0][0])
            for chosen, rejected, gc, gr in pairs:
                handles[name].write(json.dumps({"id": row_id, "prompt": text, "chosen": chosen, "rejected": rejected,
                                                "chosen_gold": gc, "rejected_gold": gr}) + "\n")
            done.pairs[name] += len(pairs)
            done.prompts[name] += 1
    finally:
        for handle in handles.values():
            handle.close()
    return done
