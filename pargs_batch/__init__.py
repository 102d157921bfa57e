"""pargs_batch: batch tokenwise reward-guided text generation (PARGS, ARGS, top-k) on vLLM.

``import pargs_batch as pb`` offers the Python API (``pargs_batch.api``): ``pb.generate``,
``pb.evaluate``, ``pb.compare``, ``pb.serve``, ``pb.read_output``, the configs (``pb.GenerateConfig``, ``pb.EvalConfig``,
``pb.CompareConfig``), the
run summary, ``pb.Models`` (loaded models kept across calls) and ``pb.ConfigError``. Names load on first use, so importing the package is cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "generate": "pargs_batch.api",
    "evaluate": "pargs_batch.api",
    "compare": "pargs_batch.api",
    "read_output": "pargs_batch.api",
    "serve": "pargs_batch.api",
    "CompareConfig": "pargs_batch.comparison.run",
    "GenerateConfig": "pargs_batch.config",
    "EvalConfig": "pargs_batch.evaluation.config",
    "RunSummary": "pargs_batch.generation",
    "Models": "pargs_batch.models.loading",
    "ConfigError": "pargs_batch.configlib",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from pargs_batch.api import compare, evaluate, generate, read_output, serve
    from pargs_batch.comparison.config import CompareConfig
    from pargs_batch.config import GenerateConfig
    from pargs_batch.configlib import ConfigError
    from pargs_batch.evaluation.config import EvalConfig
    from pargs_batch.generation import RunSummary
    from pargs_batch.models.loading import Models


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pargs_batch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
