"""What the memory plan reads: a checkpoint's shape from its config.json (no weights), the dtype it
loads in, the devices, and vLLM's defaults for them; and the activation formulas per architecture
family. ``memory.plan_memory`` adds them up.

The activation formulas count what a forward holds at its peak, in elements per token: for a gated
decoder (Llama, Qwen, Mistral) the layer's input kept by the caller, the embedding output, the
residual and the norm (4 hidden) beside the MLP's gate activation, up projection and product
(3 intermediate) - or, at attention, q and its rotary temporaries and k, v; GPT-2's MLP holds two
intermediates; DeBERTa's disentangled attention materialises several rows x heads x tokens^2 score
matrices. Each is checked against ``measure.peak_bytes`` for small models of the family on CPU
(tests/test_memory_plan.py).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from pargs_batch.configlib import ConfigError

GIB = 1 << 30
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
LOGIT_POSITIONS = 256  # positions whose vocabulary log-softmax the autoregressive RM holds at once re-reading a response


@dataclass(frozen=True)
class Architecture:
    """The shape of a checkpoint, from its config.json."""

    path: str
    model_type: str
    family: str            # gated (Llama, Qwen, Mistral), gpt2, encoder (DeBERTa)
    head: str              # lm (next-token logits) or classifier (one score)
    params: int
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    max_positions: int | None
    dtype: str             # the checkpoint's own
    position_buckets: int = 0

    @classmethod
    def read(cls, path: str, head: str, trust_remote_code: bool = False) -> Architecture:
        """``head``: ``lm`` for a causal LM (the LLM, an autoregressive RM), ``classifier`` for a
        sequence-classification RM."""
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as e:
            raise ConfigError("memory plan", path, f"a readable config.json ({type(e).__name__}: "
                                                   f"{str(e).splitlines()[0][:160]})") from None
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        hidden, heads = int(text.hidden_size), int(text.num_attention_heads)
        head_dim = getattr(text, "head_dim", None) or hidden // heads
        kind = config.model_type
        family = "encoder" if kind.startswith(("deberta", "bert", "roberta", "electra")) else \
            "gpt2" if kind in ("gpt2", "gpt_bigcode") else "gated"
        intermediate = getattr(text, "intermediate_size", None) or getattr(text, "n_inner", None) or 4 * hidden
        buckets = int(getattr(text, "position_buckets", 0) or 0) if family == "encoder" else 0
        if family == "encoder" and buckets <= 0:
            buckets = int(getattr(text, "max_relative_positions", -1) or -1)
            buckets = buckets if buckets > 0 else int(getattr(text, "max_position_embeddings", 512))
        return cls(path=path, model_type=kind, family=family, head=head,
                   params=count_params(config, head, trust_remote_code), layers=int(text.num_hidden_layers),
                   hidden=hidden, heads=heads, kv_heads=int(getattr(text, "num_key_value_heads", None) or heads),
                   head_dim=int(head_dim), intermediate=int(intermediate), vocab=int(text.vocab_size),
                   max_positions=getattr(text, "max_position_embeddings", None), dtype=config_dtype(config),
                   position_buckets=buckets)

    def weight_bytes(self, dtype: str) -> int:
        return self.params * DTYPE_BYTES[dtype]

    def kv_bytes_per_token(self, dtype: str, tensor_parallel: int = 1) -> int:
        """Keys and values of one token in every layer (a tensor-parallel rank holds its heads' share)."""
        heads = max(1, self.kv_heads // tensor_parallel) if tensor_parallel > 1 else self.kv_heads
        return 2 * self.layers * heads * self.head_dim * DTYPE_BYTES[dtype]

    def forward_bytes(self, rows: int, new: int, context: int, dtype: str, logits: int = 0,
                      mask: bool = True) -> int:
        """Peak activations of one inference forward: ``rows`` sequences of ``new`` tokens each,
        attending to ``context`` tokens (new ones included); ``logits``: positions per row whose
        next-token log-softmax is taken (an LM head); ``mask``: a padding mask is built (transformers
        builds rows x new x context booleans; vLLM's own kernels build none). The KV cache a forward
        fills is not counted here (``kv_bytes_per_token``)."""
        b, h, i = DTYPE_BYTES[dtype], self.hidden, self.intermediate
        tokens = rows * new
        if self.family == "encoder":
            # disentangled attention materialises rows x heads x new^2 scores several times, and the
            # c2p / p2c terms rows x heads x new x 2*buckets; coefficients from measured peaks
            span2 = 2 * self.position_buckets
            elems = (2.5 * tokens * i + 5.2 * rows * self.heads * new * new + 0.3 * rows * self.heads * new * span2
                     + 3.3 * new * new + 2.9 * rows * span2 * h)
            return int(elems * b)
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        if self.family == "gpt2":
            per_token = max(8.4 * h, 5.5 * h + 2 * i)
        else:  # the layer's input kept by the caller, the residual, the norm; q/k/v and rotary temporaries
            per_token = max(4 * h + 3.25 * q + 2 * kv, 4 * h + 3 * i)
        total = tokens * per_token * b + (rows * new * context if mask else 0)
        if logits:  # logits in the model's dtype, a float32 copy (unless float32) and the log-softmax
            total += rows * logits * self.vocab * (b + (4 if b != 4 else 0) + 4)
        return int(total)


def count_params(config, head: str, trust_remote_code: bool = False) -> int:
    """Parameters of the model ``config`` describes, built on torch's meta device (no memory, no
    weights read); tied embeddings count once."""
    import logging

    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    auto = AutoModelForCausalLM if head == "lm" else AutoModelForSequenceClassification
    level = logging.getLogger("transformers").level
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        with torch.device("meta"):
            model = auto.from_config(config, trust_remote_code=trust_remote_code)
    finally:
        logging.getLogger("transformers").setLevel(level)
    return int(sum(p.numel() for p in model.parameters()))


def checkpoint_dtype(path: str) -> str:
    """The dtype a checkpoint's config.json records (float32 when it records none)."""
    from transformers import AutoConfig

    return config_dtype(AutoConfig.from_pretrained(path))


def config_dtype(config) -> str:
    """The dtype a loaded config records, as a DTYPE_BYTES name (float32 when it records none)."""
    dtype = str(getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "float32")
    dtype = dtype.replace("torch.", "")
    return dtype if dtype in DTYPE_BYTES else "float32"


def resolved_dtype(requested: str, checkpoint: str, gpu: bool) -> str:
    """``reward.dtype`` / ``model.dtype`` as loaded: ``auto`` is the checkpoint's own dtype, except a
    float32 checkpoint on a GPU, which runs in bfloat16 (as vLLM's own ``auto`` does)."""
    if requested != "auto":
        return requested
    if checkpoint not in DTYPE_BYTES:
        return "float32"
    return "bfloat16" if gpu and checkpoint == "float32" else checkpoint


# ---------------------------------------------------------------------------- devices

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(GiB|GB|G|MiB|MB|M)?\s*$", re.IGNORECASE)


def parse_size(text: str, key: str = "--gpu-memory") -> int:
    """``80GiB``, ``80GB`` (taken as GiB, as GPU makers mean it), ``24G``, ``512MiB`` -> bytes."""
    match = _SIZE.match(str(text))
    if not match:
        raise ConfigError(key, text, "a size such as 80GiB, 24GB or 512MiB")
    number, unit = float(match.group(1)), (match.group(2) or "GiB").lower()
    value = int(number * (GIB if unit.startswith("g") else 1 << 20))
    if value <= 0:
        raise ConfigError(key, text, "a size > 0")
    return value


@dataclass(frozen=True)
class Devices:
    """The devices a run plans for: ``count`` GPUs of ``bytes`` each, or this machine's CPU memory."""

    kind: str              # cuda or cpu
    count: int
    bytes: int
    name: str = ""

    @classmethod
    def detect(cls) -> Devices:
        import torch

        if torch.cuda.is_available() and torch.cuda.device_count():
            props = torch.cuda.get_device_properties(0)
            return cls("cuda", torch.cuda.device_count(), int(props.total_memory), props.name)
        return cls("cpu", 1, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "CPU")

    @classmethod
    def given(cls, gpus: int, memory: str) -> Devices:
        if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
            raise ConfigError("--gpus", gpus, "an integer >= 1")
        return cls("cuda", gpus, parse_size(memory), f"{parse_size(memory) / GIB:g} GiB GPU")

    @property
    def gpu(self) -> bool:
        return self.kind == "cuda"


def vllm_defaults(devices: Devices, tensor_parallel: int = 1) -> tuple[int, int]:
    """vLLM 0.32's offline defaults (``max_num_seqs``, ``max_num_batched_tokens``) for these devices
    (``EngineArgs._set_default_max_num_seqs_and_batched_tokens_args``)."""
    if not devices.gpu:
        return 256 * tensor_parallel, 4096 * tensor_parallel
    if devices.bytes >= 70 * GIB and "a100" not in devices.name.lower():
        return 1024, 16384
    return 256, 8192
