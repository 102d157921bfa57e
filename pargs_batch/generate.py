"""One generation run on one machine: prompts in, Parquet shards out, a summary at the end."""

from __future__ import annotations

import json
import time

from pargs_batch.config import GenerateConfig
from pargs_batch.decoding import METHODS
from pargs_batch.io import PromptSource, ShardWriter, prepare_output_dir
from pargs_batch.stepper import Stepper


def load_models(config: GenerateConfig):
    """The engine, the LLM's tokenizer and (for guided methods) the reward scorer."""
    from transformers import AutoTokenizer

    from pargs_batch.engine import Engine
    from pargs_batch.reward import HFRewardScorer

    engine = Engine(config.model)
    tokenizer = AutoTokenizer.from_pretrained(config.model.tokenizer or config.model.path)
    scorer = HFRewardScorer(config.reward) if METHODS[config.decode.method].uses_reward else None
    return engine, tokenizer, scorer


def run_generate(config: GenerateConfig, models=None, progress: bool = True) -> dict:
    """Generate for every prompt of ``config.data`` into ``config.output.path``; return a summary.

    Everything that can be checked without models (config, input columns, output directory) is
    checked before ``models`` are loaded. Pass ``models`` (from ``load_models``) to reuse them.
    """
    from tqdm import tqdm

    source = PromptSource(config.data)
    out_dir = prepare_output_dir(config.output)
    engine, tokenizer, scorer = models or load_models(config)
    stepper = Stepper(engine, scorer, tokenizer, config.decode, llm_name=config.model.path,
                      reward_name=config.reward.path or None)
    writer = ShardWriter(out_dir, config.to_json(), config.output.compression)
    errors, start = 0, time.perf_counter()
    with tqdm(desc=f"generate {config.decode.method}", unit="row", disable=not progress,
              dynamic_ncols=True) as bar:
        for prompts in source.batches(config.decode.micro_batch_size):
            rows = stepper.run(prompts)
            t0 = time.perf_counter()
            writer.write(rows)
            stepper.timings["io"] += time.perf_counter() - t0
            errors += sum(r.error is not None for r in rows)
            bar.update(len(rows))
    wall = time.perf_counter() - start
    summary = {
        "method": config.decode.method,
        "rows": writer.rows,
        "error_rows": errors,
        "shards": writer.shards,
        "tokens": stepper.tokens_generated,
        "wall_s": round(wall, 3),
        "tokens_per_s": round(stepper.tokens_generated / wall, 1) if wall > 0 else 0.0,
        "phase_s": {k: round(v, 3) for k, v in sorted(stepper.timings.items())},
        "output": str(out_dir),
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
