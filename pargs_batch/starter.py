"""`pargs-batch init`: a commented starting config written from what the models and data say.

It reads tokenizers, the LLM's generation config and the data's first rows (never a model's
weights) and decides what a user would otherwise look up: whether prompts are rendered with the
LLM's chat template (a ``messages`` column, or plain prompts as one user turn), how the reward model
reads a (prompt, response) (its chat template, a segment pair, or one joined text), which ids end a
response, and which columns hold the prompt and the id. The file it writes runs as written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pargs_batch.configlib import ConfigError, check_model_path

PROMPT_NAMES = ("prompt", "question", "instruction", "query", "input", "text", "source")
ID_NAMES = ("id", "uid", "prompt_id", "example_id", "idx", "index", "key")
SAMPLE_ROWS = 200


@dataclass
class Findings:
    """What `init` found, and why it chose each setting (the comments of the file it writes)."""

    llm_chat_template: bool
    eos_ids: list[int]
    eos_tokens: list[str]
    columns: list[str]
    rows_read: int
    prompt_column: str | None = None
    messages_column: str | None = None
    format: str = "prompts"                 # prompts | hh (HH-RLHF transcripts)
    id_column: str | None = None
    reward_input: str | None = None
    reward_why: str = ""
    reward_template: str | None = None
    reward_autoregressive: bool = False  # rm_training's autoregressive mode made it: backend autoregressive
    notes: list[str] = field(default_factory=list)


PREFERENCE_SIDES = ("chosen", "rejected")  # a preference dataset's answers: never a prompt


def inspect(llm: str, reward: str | None, data: str, split: str = "train", fmt: str = "prompts") -> Findings:
    """Tokenizers, the LLM's end ids and the data's first rows; a path that does not load is a config
    error naming the flag. ``fmt``: hh reads HH-RLHF transcripts (the prompt is the conversation
    before the last assistant reply)."""
    from transformers import AutoTokenizer

    from pargs_batch.models.engine import eos_token_ids

    check_model_path("--llm", llm)
    if reward:
        check_model_path("--reward", reward)
    tokenizer = AutoTokenizer.from_pretrained(llm)
    eos = sorted(eos_token_ids(llm, tokenizer))
    records = first_records(data, split)
    columns = list(records[0]) if records else []
    found = Findings(llm_chat_template=bool(getattr(tokenizer, "chat_template", None)), eos_ids=eos,
                     eos_tokens=tokenizer.convert_ids_to_tokens(eos), columns=columns, rows_read=len(records))
    if fmt == "hh":
        return _hh_findings(found, records, data, reward)
    found.messages_column = next((c for c in columns if c not in PREFERENCE_SIDES
                                  and all(is_conversation(r.get(c)) for r in records)), None)
    if found.messages_column and not found.llm_chat_template:
        found.notes.append(f"column {found.messages_column!r} holds conversations, but the LLM's tokenizer has no "
                           "chat template: prompts are read from a text column instead")
        found.messages_column = None
    if not found.messages_column:
        text = [c for c in columns if all(isinstance(r.get(c), str) for r in records)]
        found.prompt_column = next((c for c in PROMPT_NAMES if c in text), text[0] if text else None)
        if found.prompt_column in PREFERENCE_SIDES:
            hh = all(str(r.get(found.prompt_column, "")).lstrip(" ").startswith("\n\nHuman:") for r in records)
            raise ConfigError("--data", data, f"its only text column for prompts is {found.prompt_column!r}, a "
                              "preference answer (the whole reply included), not a prompt: "
                              + ("these are HH-RLHF transcripts, read them with data.format: hh (pargs-batch init "
                                 "--format hh)" if hh else "give a file or dataset with a prompt or messages column "
                                 "(data.prompt_column / data.messages_column)"))
        if found.prompt_column is None:
            raise ConfigError("--data", data, "no column holds text in every row read (columns: "
                              + ", ".join(columns) + ")")
    return _ids_and_reward(found, records, reward)


def _hh_findings(found: Findings, records: list[dict], data: str, reward: str | None) -> Findings:
    """``--format hh``: transcripts in ``chosen`` (the prompt: the turns before its last reply)."""
    from pargs_batch.io.contexts import hh_prompt

    if "chosen" not in found.columns:
        raise ConfigError("--format", "hh", f"reads HH-RLHF transcripts from a 'chosen' column; {data} has "
                          + ", ".join(found.columns))
    try:
        for r in records:
            hh_prompt(r["chosen"])
    except (ValueError, TypeError, AttributeError) as e:
        raise ConfigError("--format", "hh", f"column 'chosen' of {data} does not hold HH transcripts ({e})") from None
    if not found.llm_chat_template:
        raise ConfigError("--format", "hh", "renders each conversation with the LLM's chat template; the LLM's "
                          "tokenizer has none")
    found.format, found.prompt_column = "hh", "chosen"
    return _ids_and_reward(found, records, reward)


def _ids_and_reward(found: Findings, records: list[dict], reward: str | None) -> Findings:
    found.id_column = next((c for c in ID_NAMES if c in found.columns and unique_ids(records, c)), None)
    if reward:
        from pargs_batch.rewards.reading import detect

        reading = detect(reward)
        found.reward_input, found.reward_why, found.reward_template = reading.input, reading.why, reading.template
        from pargs_batch.rewards.autoregressive import is_autoregressive

        found.reward_autoregressive = is_autoregressive(reward)
    return found


def first_records(data: str, split: str) -> list[dict]:
    """The first ``SAMPLE_ROWS`` records of a .jsonl/.parquet file or a Hugging Face dataset."""
    from pargs_batch.config import DataConfig
    from pargs_batch.io.prompts import PromptSource

    try:
        config = DataConfig(source=data, split=split)
        rows = (PromptSource(config, check_columns=False).records() if config.is_file
                else hub_records(config))
    except ConfigError as e:
        raise ConfigError("--data", data, e.allowed) from None
    records = []
    for record in rows:
        if "__error__" not in record:
            records.append(record)
        if len(records) >= SAMPLE_ROWS:
            break
    if not records:
        raise ConfigError("--data", data, "no readable row")
    return records


def hub_records(config) -> Any:
    """A Hugging Face dataset's rows, streamed: the first rows without downloading the whole split."""
    import datasets

    try:
        return iter(datasets.load_dataset(config.source, config.subset, split=config.split, streaming=True))
    except (FileNotFoundError, ValueError, ConnectionError, datasets.exceptions.DatasetNotFoundError) as e:
        raise ConfigError("data.source", config.source,
                          f"could not load it as a Hugging Face dataset ({e.__class__.__name__})") from None


def is_conversation(value: Any) -> bool:
    """A list of {role, content} turns with a user turn to answer (assistant turns at its end, the
    reply a chat dataset stores, are left out when generating)."""
    from pargs_batch.io.prompts import conversation

    return conversation(value)[1] is None and any(m["role"] == "user" for m in value)


def unique_ids(records: list[dict], column: str) -> bool:
    values = [r.get(column) for r in records]
    return all(v is not None for v in values) and len({str(v) for v in values}) == len(values)


def starter_yaml(llm: str, reward: str | None, data: str, found: Findings, split: str = "train",
                 output: str | None = None, memory=None) -> str:
    """The commented config: PARGS (or top-k sampling without a reward model) on ``data``, in this
    process; every choice ``init`` made says why. ``memory``: the memory plan of the config on this
    machine, whose model and reward choices (caps, dtypes, vLLM's share) are written as keys."""
    method = "pargs" if reward else "topk"
    chosen = {} if memory is None else {k: (v, memory.reasons.get(k, "")) for k, v in memory.settings.items()}

    def planned(section: str) -> list[str]:
        return [f"  {key.split('.', 1)[1]}: {json.dumps(value)}   # memory plan: {why}"
                for key, (value, why) in chosen.items() if key.startswith(section + ".")]

    name = Path(data.split("?")[0]).stem or "run"
    lines = [
        "# Written by `pargs-batch init`: a starting config that runs as written",
        f"#   pargs-batch generate --config <this file>    (all keys: the docs' configuration reference)",
        "model:",
        f"  path: {json.dumps(llm)}",
        f"  # ends a response: {', '.join(f'{t} ({i})' for t, i in zip(found.eos_tokens, found.eos_ids)) or 'none found'}"
        " (the tokenizer's EOS and the generation config's eos_token_id)",
        *planned("model"),
    ]
    if reward:
        lines += [
            "reward:",
            f"  path: {json.dumps(reward)}",
            f"  input: {found.reward_input}   # {found.reward_why}",
            *([f"  template: {json.dumps(found.reward_template)}"] if found.reward_template else []),
            "  backend: autoregressive   # an autoregressive reward model (rm_training mode autoregressive): its "
            "summed token log-probabilities" if found.reward_autoregressive else
            "  # backend: causal   # faster when the reward model is a causal LM sharing the LLM's tokenizer",
            *(planned("reward") or ["  dtype: auto   # the checkpoint's own (a float32 checkpoint runs in bfloat16 on "
                                    "a GPU)"]),
        ]
    else:
        lines += ["# reward:            # give a reward model (and decode.method: pargs) for guided decoding",
                  "#   path: my/reward-model"]
    lines += [
        "decode:",
        f"  method: {method}      # topk | args | pargs-greedy | pargs | best-of-n | blockwise | blockwise-greedy | early-rejection | smc",
        "  beta: 1.0            # score = log pi_ref + beta * reward",
        "  top_k: 10            # candidates per step",
        "  max_new_tokens: 64",
        "  seed: 0",
        "data:",
        f"  source: {json.dumps(data)}",
    ]
    if split != "train":
        lines.append(f"  split: {json.dumps(split)}")
    if found.format == "hh":
        lines += ["  format: hh   # HH-RLHF transcripts: the prompt is the conversation before the last reply, "
                  "rendered with the LLM's chat template",
                  f"  prompt_column: {json.dumps(found.prompt_column)}"]
    elif found.messages_column:
        lines.append(f"  messages_column: {json.dumps(found.messages_column)}   # conversations, rendered with the "
                     "LLM's chat template")
    else:
        lines.append(f"  prompt_column: {json.dumps(found.prompt_column)}")
        if found.llm_chat_template:
            lines.append("  chat_template: true   # the LLM's tokenizer has a chat template: each prompt is one user turn")
    if found.id_column:
        lines.append(f"  id_column: {json.dumps(found.id_column)}   # unique in the {found.rows_read} rows read")
    else:
        lines.append("  # id_column: no column of unique ids found: rows are known by their position")
    lines += [
        "output:",
        f"  path: {json.dumps(output or f'outputs/{name}-{method}')}   # Parquet part files; a rerun resumes",
        "ray:",
        "  enabled: false       # true: a Ray pool of ray.num_workers engines (a cluster, or a local Ray)",
    ]
    lines += [f"# note: {n}" for n in found.notes]
    if memory is not None:
        lines.append(f"# {memory.summary()}   (pargs-batch plan --config <this file> shows every device)")
    return "\n".join(lines) + "\n"


def write_starter(out: str | Path, llm: str, reward: str | None, data: str, split: str = "train",
                  force: bool = False, fmt: str = "prompts") -> tuple[Path, Findings]:
    """Inspect, write the config to ``out`` (an existing file only with ``force``) and check that it
    loads; returns the path and what was found."""
    from pargs_batch.config import GenerateConfig

    out = Path(out)
    if out.exists() and not force:
        raise ConfigError("--out", str(out), "the file exists (--force replaces it)")
    from pargs_batch.plan.memory import plan_memory
    from pargs_batch.plan.shapes import Devices

    found = inspect(llm, reward, data, split, fmt)
    text = starter_yaml(llm, reward, data, found, split)
    devices = Devices.detect()
    try:  # the caps and dtypes this machine's devices need, written as keys (on a GPU; a refusal stops here)
        memory = plan_memory(GenerateConfig.from_dict(yaml.safe_load(text)), devices)
    except ConfigError as e:
        if devices.gpu or e.key != "memory plan":
            raise
        memory = None
    text = starter_yaml(llm, reward, data, found, split, memory=memory)
    GenerateConfig.from_dict(yaml.safe_load(text))  # what it writes loads (a failure here is init's bug)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return out, found
