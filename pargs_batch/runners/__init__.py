"""The runners: how one micro-batch of prompts becomes rows. Each takes the engine, the LLM's
tokenizer and (except fused, whose reward model lives in the engine) a scorer, and returns a
``batch.MicroBatchResult`` from ``run(prompts)``.

- ``stepped``: Algorithm 1's token-at-a-time loop, the reward model outside the engine;
- ``fused``: the driver's side of guidance inside vLLM (``pargs_batch.in_engine``);
- ``best_of_n``: N whole responses, the reward model keeps one;
- ``blocks``: blockwise and early-rejection, the reward model between blocks of tokens;
- ``smc``: sequential Monte Carlo, particles weighted by the reward model and resampled.

``make_runner`` picks one for a config; where the runner runs (this process, a Ray actor) is
``pool``'s business.
"""

from __future__ import annotations

from pargs_batch.io.batch import Runner
from pargs_batch.config import GenerateConfig
from pargs_batch.decoding import METHODS
from pargs_batch.runners.rows import RowMaker


def make_runner(config: GenerateConfig, engine, tokenizer, scorer) -> Runner:
    """The runner of ``config``: best-of-n, a block method, smc, fused (guidance inside vLLM) or stepped."""
    rows = RowMaker(config.decode, config.model.path, config.reward.label or None)
    runner = METHODS[config.decode.method].runner
    if runner == "best-of-n":
        from pargs_batch.runners.best_of_n import BestOfN

        return BestOfN(engine, tokenizer, config.decode, rows, scorer)
    if runner in ("blockwise", "early-rejection"):
        from pargs_batch.runners.blocks import Blockwise, EarlyRejection

        cls = Blockwise if runner == "blockwise" else EarlyRejection
        return cls(engine, tokenizer, config.decode, rows, scorer)
    if runner == "smc":
        from pargs_batch.runners.smc import SMC

        return SMC(engine, tokenizer, config.decode, rows, scorer)
    if config.engine.mode == "fused":
        from pargs_batch.runners.fused import FusedRunner

        return FusedRunner(engine, tokenizer, config.decode, rows)
    from pargs_batch.runners.stepped import Stepper

    return Stepper(engine, tokenizer, config.decode, rows, scorer)
