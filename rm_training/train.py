"""`python -m rm_training.train --config FILE [key=value ...]`: train a Bradley-Terry reward model.

Modes:
- ``full``: Eq. 1 on whole responses (the reward model ARGS and the evaluation use);
- ``partial``: Eq. 5 on prefix pairs (PARGS's reward model), through TRL's RewardTrainer;
- ``partial-causal``: Eq. 5 over all prefix lengths from one pass per sequence (causal models);
- ``autoregressive``: a causal LM whose reward is its summed token log-probabilities, Bradley-Terry
  on that sum (``rm_training.autoregressive``; full weights or LoRA).

The output directory is an ordinary Hugging Face checkpoint plus ``training_summary.json``;
``pargs-batch generate`` takes it as ``reward.path`` as it is. Under ``torchrun`` / ``deepspeed``
launchers the same command trains data-parallel, with ZeRO-3 when ``training.deepspeed`` names
``rm_training/configs/zero3.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from pathlib import Path


from pargs_batch.configlib import ConfigError, load_config
from rm_training import data as prefs
from rm_training.config import TrainConfig
from rm_training.prefixes import prefix_pairs

log = logging.getLogger("rm_training")

# ---------------------------------------------------------------- data

def _read(cfg: TrainConfig, source: str, split: str, render=None) -> tuple[list[prefs.Triple], prefs.DataReport]:
    d = cfg.data
    try:
        rows, columns = prefs.read_rows(source, d.subset, split)
    except (FileNotFoundError, ValueError, ConnectionError) as e:
        raise ConfigError("data.source", source, f"could not be read ({e.__class__.__name__})") from None
    missing = [c for c in prefs.required_columns(d.format, d.columns) if c not in columns]
    if missing:
        raise ConfigError("data.format", d.format, f"needs column(s) {', '.join(missing)}; "
                          f"{source} has {', '.join(columns)}")
    triples, report = prefs.to_triples(rows, d.format, d.columns, d.limit, render)
    if report.malformed_fraction > d.max_malformed_fraction:
        reasons = ", ".join(f"{k}: {v}" for k, v in report.malformed.most_common())
        raise ConfigError("data.max_malformed_fraction", d.max_malformed_fraction,
                          f"{report.malformed_fraction:.1%} of {report.rows} rows in {source} are malformed ({reasons})")
    return triples, report


def load_triples(cfg: TrainConfig, tokenizer=None):
    """Train and held-out triples, with a per-source report of rows, triples and malformed rows.
    ``tokenizer``: the reward model's, which decides how conversations become text (read from
    ``cfg`` when not given)."""
    d = cfg.data
    render = None
    if d.format == "conversational":
        render = prefs.reading(d.format, cfg.mode, tokenizer or load_tokenizer(cfg), cfg.template).get("render")
    train, train_report = _read(cfg, d.source, d.split, render)
    if d.eval_source or d.eval_split:
        held, eval_report = _read(cfg, d.eval_source or d.source, d.eval_split or d.split, render)
    else:
        train, held = prefs.split_triples(train, d.eval_fraction, cfg.training.seed)
        eval_report = None
    reports = {"train": train_report.to_dict(), "eval": eval_report.to_dict() if eval_report else "split"}
    for name, report in reports.items():
        if isinstance(report, dict):
            log.info("%s data: %d rows, %d triples, malformed %s", name, report["rows"], report["triples"],
                     report["malformed"] or "none")
    if not train:
        raise ConfigError("data.source", d.source, "no usable preference triples")
    return train, held, reports


def load_tokenizer(cfg: TrainConfig):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer or cfg.model)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ConfigError("tokenizer", cfg.tokenizer or cfg.model, "has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
        log.warning("tokenizer has no pad token; using its EOS token %r", tokenizer.eos_token)
    tokenizer.padding_side = "right"
    tokenizer.truncation_side = "left"  # cut the prompt's start, as pargs_batch.rewards.hf does
    return tokenizer


def check_architecture(cfg: TrainConfig) -> None:
    """Refuse, before loading weights, a model that cannot carry a reward head for ``cfg.mode``."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES)

    model_type = AutoConfig.from_pretrained(cfg.model).model_type
    if cfg.mode == "autoregressive":
        if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
            raise ConfigError("mode", cfg.mode, f"needs a causal language model; {cfg.model} is {model_type}")
        return
    if model_type not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES:
        raise ConfigError("model", cfg.model, f"its architecture ({model_type}) has no sequence-classification "
                          "head in transformers, so it cannot be a reward model")
    if cfg.mode == "partial-causal" and model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ConfigError("mode", cfg.mode, f"needs a causal model with a per-position reward head; "
                          f"{cfg.model} is {model_type} (use mode: partial)")


# ---------------------------------------------------------------- examples

def encode(tokenizer, template: str, prompt: str, response: str, max_length: int,
           special_tokens: bool = True) -> list[int]:
    """(a chat template's text carries its own special tokens: ``special_tokens`` False, as when scoring)"""
    return tokenizer(template.format(prompt=prompt, response=response), truncation=True,
                     max_length=max_length, add_special_tokens=special_tokens)["input_ids"]


def text_examples(cfg: TrainConfig, tokenizer, triples: list[prefs.Triple], partial: bool):
    """Tokenised (chosen_ids, rejected_ids) pairs: whole responses, or prefix pairs with their fraction."""
    p, rng, max_len = cfg.prefixes, random.Random(cfg.prefixes.seed), cfg.training.max_length
    read = prefs.reading(cfg.data.format, cfg.mode, tokenizer, cfg.template)
    template, special = read["template"], read.get("special_tokens", True)
    rows, identical = [], 0
    for t in triples:
        if partial:
            pairs, skipped = prefix_pairs(t.chosen, t.rejected, tokenizer, p.strategy, p.min_length,
                                          p.stride, p.num_samples, rng)
            identical += skipped
            sides = [(x.chosen, x.rejected, x.fraction) for x in pairs]
        else:
            sides = [(t.chosen, t.rejected, 1.0)]
        for c, r, fraction in sides:
            rows.append({"chosen_ids": encode(tokenizer, template, t.prompt, c, max_len, special),
                         "rejected_ids": encode(tokenizer, template, t.prompt, r, max_len, special),
                         "fraction": fraction})
    return rows, identical


def causal_examples(cfg: TrainConfig, tokenizer, triples: list[prefs.Triple]):
    """Whole sequences with the position where the response starts (prompts cut from the left)."""
    head, _, tail = cfg.template.partition("{response}")
    max_len, rows = cfg.training.max_length, []
    for t in triples:
        prompt_ids = tokenizer(head.format(prompt=t.prompt))["input_ids"]
        row = {}
        for side, response in (("chosen", t.chosen), ("rejected", t.rejected)):
            resp = tokenizer(response + tail, add_special_tokens=False)["input_ids"][:max_len]
            kept = prompt_ids[max(0, len(prompt_ids) + len(resp) - max_len):]
            row[f"{side}_ids"] = kept + resp
            row[f"{side}_start"] = len(kept)
        rows.append(row)
    return rows, 0


def build_examples(cfg: TrainConfig, tokenizer, triples):
    import datasets

    if cfg.mode in ("partial-causal", "autoregressive"):
        rows, identical = causal_examples(cfg, tokenizer, triples)
    else:
        rows, identical = text_examples(cfg, tokenizer, triples, partial=cfg.mode == "partial")
    return datasets.Dataset.from_list(rows), identical


# ---------------------------------------------------------------- training

def make_trainer(cfg: TrainConfig, model, tokenizer, train_ds, eval_ds):
    from trl import RewardConfig, RewardTrainer

    t = cfg.training
    args = RewardConfig(
        output_dir=t.output_dir, learning_rate=t.learning_rate,
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps, num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps, warmup_steps=t.warmup_ratio,  # a float in [0, 1) is a ratio
        weight_decay=t.weight_decay,
        logging_steps=t.logging_steps, seed=t.seed, data_seed=t.seed, bf16=t.bf16, fp16=t.fp16,
        gradient_checkpointing=t.gradient_checkpointing, deepspeed=t.deepspeed, report_to=t.report_to,
        max_length=None,  # sequences are cut here already (from the left), never dropped
        save_strategy="no", eval_strategy="no", disable_tqdm=False,
        ddp_backend=ddp_backend_for(t.deepspeed), use_cpu=several_processes_on_cpu(),
    )
    if cfg.mode == "autoregressive":
        return autoregressive_trainer(cfg, model, tokenizer, args, train_ds, eval_ds)
    if cfg.mode != "partial-causal":
        return RewardTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                             processing_class=tokenizer)

    from rm_training.causal import CausalPrefixCollator, partial_causal_loss

    class PartialCausalTrainer(RewardTrainer):
        """RewardTrainer whose loss is Eq. 5 over every prefix length of each pair."""

        def _set_signature_columns_if_needed(self):
            self._signature_columns = ["chosen_ids", "rejected_ids", "chosen_start", "rejected_start"]

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, stats = partial_causal_loss(model, inputs)
            mode = "train" if model.training else "eval"
            for key, value in stats.items():
                self._metrics[mode][key].append(value)
            return (loss, {}) if return_outputs else loss

    return PartialCausalTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                                processing_class=tokenizer,
                                data_collator=CausalPrefixCollator(tokenizer.pad_token_id))


def autoregressive_trainer(cfg: TrainConfig, model, tokenizer, args, train_ds, eval_ds):
    """TRL's RewardTrainer with the autoregressive loss: Bradley-Terry on summed log-probabilities."""
    from trl import RewardTrainer

    from rm_training.autoregressive import SequenceCollator, autoregressive_loss

    class AutoregressiveTrainer(RewardTrainer):
        def _set_signature_columns_if_needed(self):
            self._signature_columns = ["chosen_ids", "rejected_ids", "chosen_start", "rejected_start"]

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, stats = autoregressive_loss(model, inputs, cfg.autoregressive_scale)
            mode = "train" if model.training else "eval"
            for key, value in stats.items():
                self._metrics[mode][key].append(value)
            return (loss, {}) if return_outputs else loss

    from rm_training.adapters import lora_config

    return AutoregressiveTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                                 processing_class=tokenizer, data_collator=SequenceCollator(tokenizer.pad_token_id),
                                 peft_config=lora_config(cfg))


def ddp_backend_for(deepspeed: str | None) -> str | None:
    """gloo for distributed runs on CPU (launched by torchrun/deepspeed); the default elsewhere."""
    import os

    import torch

    distributed = deepspeed is not None or int(os.environ.get("WORLD_SIZE", "1")) > 1
    return "gloo" if distributed and not torch.cuda.is_available() else None


def several_processes_on_cpu() -> bool:
    """Several processes (torchrun's or Ray Train's workers) and no GPU. accelerate counts such a run
    as distributed only when told it is on CPU (``use_cpu``): otherwise each process trains on its shard
    of the data alone, no gradient all-reduced, and DeepSpeed's batch-size check fails (world size 1)."""
    import os

    import torch

    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


# ---------------------------------------------------------------- evaluation

def evaluate_checkpoint(cfg: TrainConfig, out_dir: str, held: list[prefs.Triple], tokenizer) -> dict:
    """Held-out pairwise accuracy of the saved checkpoint, scored by ``pargs_batch.rewards.hf``:
    whole responses always, and per prefix-length bucket for the partial modes."""
    from pargs_batch.config import RewardConfig
    from pargs_batch.rewards.factory import make_scorer
    from rm_training.diagnose import prefix_accuracy, whole_accuracy

    if not held:
        return {}
    backend = "autoregressive" if cfg.mode == "autoregressive" else "hf"
    # the held-out triples are text as trained (an HH transcript or a rendered chat already): read as such
    template = prefs.reading(cfg.data.format, cfg.mode, tokenizer, cfg.template)["template"]
    scorer = make_scorer(RewardConfig(path=out_dir, input="template", template=template,
                                      max_length=cfg.training.max_length,
                                      batch_size=cfg.training.per_device_eval_batch_size, backend=backend))
    whole = whole_accuracy(scorer, held)
    result = {"pairwise_accuracy": whole["accuracy"], "pairwise_interval": whole["interval"], "eval_triples": len(held)}
    if cfg.mode != "full":
        result["prefix_accuracy"] = prefix_accuracy(scorer, held, cfg.training.eval_prefix_stride)
    return result


# ---------------------------------------------------------------- main

def train(cfg: TrainConfig) -> dict:
    """Run one training job; returns (and writes) the training summary."""
    import torch
    from transformers import AutoModelForSequenceClassification

    start = time.perf_counter()
    check_architecture(cfg)
    tokenizer = load_tokenizer(cfg)
    train_triples, held, reports = load_triples(cfg, tokenizer)
    train_ds, identical = build_examples(cfg, tokenizer, train_triples)
    eval_ds, _ = build_examples(cfg, tokenizer, held) if held else (None, 0)
    log.info("mode %s: %d training pairs (%d identical prefix pairs skipped), %d held-out triples",
             cfg.mode, len(train_ds), identical, len(held))

    torch.manual_seed(cfg.training.seed)
    if cfg.mode == "autoregressive":
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=torch.float32)
        model.config.num_labels = 1  # TRL's RewardTrainer asks for one output; an LM head's config ignores it
    else:
        model = AutoModelForSequenceClassification.from_pretrained(cfg.model, num_labels=1)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    # how the model read (prompt, response) in training, for `pargs-batch init` to read back
    read = prefs.reading(cfg.data.format, cfg.mode, tokenizer, cfg.template)
    model.config.pargs_batch_input = {"input": read["input"], "template": cfg.template if read["input"] == "template"
                                      else "{prompt}{response}"}
    trainer = make_trainer(cfg, model, tokenizer, train_ds, eval_ds)
    # (under DeepSpeed an evaluation before training would leave the engine in inference mode)
    before = trainer.evaluate()["eval_loss"] if eval_ds is not None and not cfg.training.deepspeed else None
    fit_start = time.perf_counter()
    result = trainer.train()
    fit_seconds = time.perf_counter() - fit_start
    after = trainer.evaluate()["eval_loss"] if eval_ds is not None else None
    if cfg.mode == "autoregressive":
        from rm_training.autoregressive import mark_checkpoint
        from rm_training.adapters import save_merged

        save_merged(cfg, trainer)  # LoRA adapters folded into the weights; the tokenizer as given
        if trainer.is_world_process_zero():
            mark_checkpoint(cfg.training.output_dir, cfg.autoregressive_scale, cfg.template)
    else:
        trainer.save_model(cfg.training.output_dir)
    if not trainer.is_world_process_zero():
        return {}
    tokenizer.save_pretrained(cfg.training.output_dir)
    if cfg.training.deepspeed:
        # training is over: let from_pretrained load whole weights again (not ZeRO-3 partitions)
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()

    pairs_seen = len(train_ds) * cfg.training.num_train_epochs if cfg.training.max_steps < 0 else \
        result.global_step * cfg.training.per_device_train_batch_size * cfg.training.gradient_accumulation_steps
    summary = {
        "mode": cfg.mode, "model": cfg.model, "data": reports,
        "train_pairs": len(train_ds), "identical_prefix_pairs_skipped": identical,
        "eval_pairs": len(eval_ds) if eval_ds is not None else 0,
        "steps": result.global_step, "train_loss": result.training_loss,
        "world_size": trainer.args.world_size,  # data-parallel processes (torchrun's or Ray Train's workers)
        "deepspeed_zero_stage": zero_stage(trainer),
        "eval_loss_before": before, "eval_loss_after": after,
        "train_seconds": round(fit_seconds, 2), "pairs_per_second": round(pairs_seen / fit_seconds, 1),
        **evaluate_checkpoint(cfg, cfg.training.output_dir, held, tokenizer),
        "wall_seconds": round(time.perf_counter() - start, 2),
        "config": _config_dict(cfg),
    }
    Path(cfg.training.output_dir, "training_summary.json").write_text(json.dumps(summary, indent=2))
    print_summary(summary)
    return summary


def zero_stage(trainer) -> int | None:
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    return plugin.zero_stage if plugin is not None else None


def _config_dict(cfg: TrainConfig) -> dict:
    import dataclasses

    return dataclasses.asdict(cfg)


def print_summary(s: dict) -> None:
    print(f"\n{s['mode']} reward model -> {s['config']['training']['output_dir']}")
    print(f"  pairs: {s['train_pairs']} train, {s['eval_pairs']} held out; {s['steps']} updates, "
          f"{s['pairs_per_second']} pairs/s, {s['train_seconds']} s")
    if s.get("eval_loss_after") is not None:
        before = f"{s['eval_loss_before']:.4f} -> " if s.get("eval_loss_before") is not None else ""
        print(f"  held-out loss: {before}{s['eval_loss_after']:.4f}")
    if "pairwise_accuracy" in s:
        print(f"  held-out pairwise accuracy (whole responses): {s['pairwise_accuracy']:.3f}")
    for name, b in s.get("prefix_accuracy", {}).items():
        print(f"    prefixes {name:>8} of the response: accuracy {b['accuracy']:.3f} over {b['pairs']} pairs")


def job_main(argv: list[str] | None, prog: str, doc: str, schema: type, job, examples: str) -> int:
    """The command line of a training job: ``--config FILE`` plus dotted overrides into ``schema``,
    then ``job(config)``; a ConfigError is one line on stderr and exit code 2."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.splitlines()[0])
    parser.add_argument("--config", help=f"YAML config (see {examples})")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. training.max_steps=10")
    parser.add_argument("--local_rank", type=int, default=-1, help=argparse.SUPPRESS)  # deepspeed launcher
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        job(load_config(schema, args.config, args.overrides))
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    return job_main(argv, "python -m rm_training.train", __doc__, TrainConfig, train, "rm_training/configs/")


if __name__ == "__main__":
    sys.exit(main())
