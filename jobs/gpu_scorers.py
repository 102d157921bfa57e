"""Part 1 of the GPU check (``jobs/gpu_check.py``): the reward scorers and the V2 logits processor
timed on the device, with torch and transformers only - it runs where vLLM's CUDA build cannot be
installed, and needs no file from outside (tokenizers are word-level ones built in memory, models
random-weight ones built from their configs).

Both reward backends run in bfloat16 on random-weight RMs of real size, saved to disk and loaded
through the project's scorers as a checkpoint would be - ``causal`` on a 406M-parameter GPT-2-shaped
RM, ``hf`` on a DeBERTa-v3-large-shaped one (435M) - at B x k = 256 x 10 = 2,560 candidates and
prefixes of 32 to 1,024 tokens: milliseconds per guided step and the step's peak device memory
above the weights. Then the V2 logits processor (``pargs_batch.in_engine.v2``) on device logits
(B = 256, vocabulary 32,000) with the runner's state layout, guided by a small causal RM and
unguided, 32 steps from prefix 32 and from 1,024: milliseconds per ``apply`` and the share the
reward scorer takes.

``scale`` is ``full`` where torch sees CUDA and ``tiny`` elsewhere (small models, B = 4, k = 3,
prefixes 8 and 16, 3 steps: seconds on CPU, where peak memory is reported as null - torch keeps no
allocator statistics there).

Each timed step is also set beside the memory plan: one more step's peak above what was allocated
before it (``measure.peak_bytes``: torch's allocator on CUDA; every storage counted on CPU) against
the plan's estimate of that step from the RM's config.json (``shapes.Architecture.forward_bytes``),
``plan_over_measured`` - so the first GPU this runs on checks the plan's activation formulas.

Cost at full scale, H200 (~990 TFLOP/s dense bf16, 4.8 TB/s). The largest hf step, 2,560 inputs of
1,024 tokens through DeBERTa-v3-large (302M parameters besides the embeddings, 24 layers of width
1,024), would be 2.6M tokens x (2 x 302M + 4 x 24 x 1,024 x 1,024 for attention) ~ 0.71 GFLOP = 1.9
PFLOP: 4-10 s at the 20-50 % of peak eager DeBERTa reaches. But the hf scorer cuts every input at
the model's 512 positions (``max_position_embeddings``), so from prefix 512 on it reads 512 tokens
(``tokens_read`` shows the cut): ~0.86 PFLOP, 2-4 s. ``batch_size`` 128 keeps its memory small:
DeBERTa's disentangled attention holds a few (128 x 16, L, L) bf16 tensors per layer, ~1.1 GB each at
L = 512 (4.3 GB at 1,024). The causal step is one forward of 2,560 new tokens (~1.8 TFLOP) over a KV
cache of 256 x 1,024 tokens (28 layers: ~32 GB bf16, read once a step): tens of ms. The whole of
part 1: ~2 minutes (the three RMs built, saved and loaded ~30 s, causal ~15 s, hf ~40 s - a warm-up
and two timed steps a prefix, ~10 s a pass - processor ~10 s, imports and CUDA start ~20 s), well
inside 8.
"""

from __future__ import annotations

import contextlib
import gc
import json
import statistics
import tempfile
import time
import types
from pathlib import Path
from typing import NamedTuple


class Scale(NamedTuple):
    """The sizes of one run of part 1."""

    rows: int                      # B: sequences per guided step
    k: int                         # candidates per sequence
    prefixes: tuple[int, ...]      # prefix lengths (tokens) the reward steps are timed at
    steps: int                     # timed causal steps per prefix (the median is reported), after a warm-up
    hf_steps: int                  # timed hf steps per prefix (each is B x k whole inputs)
    hf_batch: int                  # hf candidates per forward pass (reward.batch_size)
    proc_rows: int                 # the V2 processor's batch
    proc_vocab: int                # its logits' width (the small RM's and tokenizer's vocabulary)
    proc_steps: int                # steps from each of proc_prefixes
    proc_prefixes: tuple[int, ...]


SCALES = {
    "full": Scale(256, 10, (32, 64, 128, 256, 512, 1024), 5, 2, 128, 256, 32000, 32, (32, 1024)),
    "tiny": Scale(4, 3, (8, 16), 3, 2, 16, 4, 512, 3, (8, 16)),
}
FIRST_WORD = 4  # ids 0-3 of the word tokenizers are [PAD] [UNK] [CLS] [SEP]
WORD_IDS = {"pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 3}  # the RMs' configs agree with them


def library() -> types.SimpleNamespace:
    """What part 1 drives, imported from the library as a user would: the scorers and the V2
    processor import with neither pyarrow nor vLLM installed."""
    from pargs_batch.config import RewardConfig
    from pargs_batch.guidance import GuideArgs, GuideSetup
    from pargs_batch.in_engine.v2 import PargsLogitsProcessorV2
    from pargs_batch.rewards.factory import make_scorer

    return types.SimpleNamespace(RewardConfig=RewardConfig, make_scorer=make_scorer, GuideArgs=GuideArgs, GuideSetup=GuideSetup,
                                 ProcessorV2=PargsLogitsProcessorV2)


def rm_configs(scale: str) -> dict:
    """The random reward models' transformers configs: ``causal`` (GPT-2's shape, 406M parameters
    at full scale), ``hf`` (DeBERTa-v3-large's, 435M) and ``processor`` (a small causal RM over a
    32k vocabulary, so the processor's figures are its own overhead more than the RM's)."""
    from transformers import DebertaV2Config, GPT2Config

    s, full = SCALES[scale], scale == "full"
    causal = dict(vocab_size=50257, n_embd=1024, n_layer=28, n_head=16) if full else \
        dict(vocab_size=1000, n_embd=64, n_layer=2, n_head=4)
    deberta = dict(vocab_size=128100, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                   intermediate_size=4096, position_buckets=256, max_position_embeddings=512) if full else \
        dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
             position_buckets=16, max_position_embeddings=64)
    small = dict(n_embd=256, n_layer=2, n_head=4) if full else dict(n_embd=32, n_layer=1, n_head=2)
    return {
        "causal": GPT2Config(**causal, n_positions=2 * max(s.prefixes), num_labels=1, **WORD_IDS),
        "hf": DebertaV2Config(**deberta, relative_attention=True, pos_att_type=["p2c", "c2p"],
                              norm_rel_ebd="layer_norm", share_att_key=True, position_biased_input=False,
                              max_relative_positions=-1, type_vocab_size=0, hidden_act="gelu", num_labels=1,
                              **WORD_IDS),
        "processor": GPT2Config(vocab_size=s.proc_vocab, **small, n_positions=2 * max(s.proc_prefixes),
                                num_labels=1, **WORD_IDS),
    }


def param_count(config) -> int:
    """Parameters of the sequence-classification model ``config`` describes, built on the meta
    device (no memory, no init)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(config)
    return sum(p.numel() for p in model.parameters())


def word_tokenizer(vocab_size: int, cls_sep: bool):
    """A word-level tokenizer of ``vocab_size`` ids, built in memory: [PAD] [UNK] [CLS] [SEP], then
    the words w4, w5, ... - one token each, so a text of n random words is n tokens. ``cls_sep``
    wraps inputs in [CLS] ... [SEP] as DeBERTa's tokenizer does."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, **{f"w{i}": i for i in range(FIRST_WORD, vocab_size)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if cls_sep:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", eos_token="[SEP]")


def save_random_rm(config, directory: Path, dev: Device, cls_sep: bool) -> str:
    """A random-weight RM of ``config`` and its word tokenizer, saved as a bf16 checkpoint."""
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    with torch.device(dev.name):  # initialised where it will run: seconds for 400M parameters on a GPU
        model = AutoModelForSequenceClassification.from_config(config)
    model.to(torch.bfloat16).save_pretrained(directory)
    word_tokenizer(config.vocab_size, cls_sep).save_pretrained(directory)
    del model
    dev.free()
    return str(directory)


class Device:
    """The device part 1 runs on: timing that waits for its queued work, and memory figures (None
    off CUDA, where torch keeps no allocator statistics)."""

    def __init__(self, name: str):
        import torch

        self.name, self.torch, self.cuda = name, torch, name == "cuda"

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()

    def allocated(self) -> int | None:
        return self.torch.cuda.memory_allocated() if self.cuda else None

    @contextlib.contextmanager
    def timed(self, seconds: list):
        """Appends the block's seconds, its device work included."""
        self.sync()
        t0 = time.perf_counter()
        yield
        self.sync()
        seconds.append(time.perf_counter() - t0)

    @contextlib.contextmanager
    def peak(self, got: dict):
        """``got["peak"]``: the most bytes torch held on the device during the block."""
        if self.cuda:
            self.sync()
            self.torch.cuda.reset_peak_memory_stats()
        yield
        got["peak"] = self.torch.cuda.max_memory_allocated() if self.cuda else None


def mib(n: int | None, *minus: int | None) -> float | None:
    """``n`` less ``minus``, in MiB (None where any figure is)."""
    return None if n is None or None in minus else round((n - sum(minus)) / 2**20, 1)


def time_causal(scorer, s: Scale, dev: Device, base: int | None, weights: int | None, rng) -> dict:
    """Per prefix length: ms of one guided step of the causal backend - ``score_candidates`` of B x k
    candidates, then ``commit`` - on a session started at that length (median of ``s.steps`` after a
    warm-up), ms of the session's ``start``, the session's memory and the step's peak above the weights."""
    import numpy as np

    out, vocab = {}, scorer.model.config.vocab_size
    for n in s.prefixes:
        try:
            start, times, finite, mem = [], [], True, {}
            with dev.timed(start):
                session = scorer.start(rng.integers(FIRST_WORD, vocab, (s.rows, n)).tolist())
            cands, choice = rng.integers(FIRST_WORD, vocab, (s.rows, s.k)), rng.integers(0, s.k, s.rows)
            scorer.score_candidates(session, cands)  # warm-up at this shape
            scorer.commit(session, choice)
            held = dev.allocated()
            with dev.peak(mem):
                for _ in range(s.steps):
                    with dev.timed(times):
                        rewards = scorer.score_candidates(session, cands)
                        scorer.commit(session, choice)
                    finite &= bool(np.isfinite(rewards).all())
            out[str(n)] = {"ms": 1000 * statistics.median(times), "start_ms": 1000 * start[0],
                           "session_mib": mib(held, base, weights),
                           "peak_over_weights_mib": mib(mem["peak"], base, weights), "finite": finite,
                           **plan_check(scorer.config.path, "causal", s, n,
                                        lambda: (scorer.score_candidates(session, cands), scorer.commit(session, choice)), dev)}
        except dev.torch.cuda.OutOfMemoryError:
            out[str(n)] = {"error": "out of memory"}
        session = None
        dev.free()
    return out


def hf_inputs(rng, rows: int, k: int, n: int, vocab: int) -> tuple[list[str], list[str]]:
    """rows x k (prompt, response) texts of n random words - n tokens - together: a row's k
    candidates share the first n - 1 words and differ in the last, as one step's candidates do."""
    ids, cands = rng.integers(FIRST_WORD, vocab, (rows, n - 1)), rng.integers(FIRST_WORD, vocab, (rows, k))
    prompts, responses, half = [], [], n // 2
    for row, cand in zip(ids, cands):
        prompt = " ".join(f"w{i}" for i in row[:half]) + " "
        body = "".join(f"w{i} " for i in row[half:])
        prompts += [prompt] * k
        responses += [f"{body}w{c}" for c in cand]
    return prompts, responses


def forward_flops(config, tokens: float, length: float) -> float:
    """~FLOPs of ``tokens`` tokens through ``config``'s transformer at ``length`` tokens per input:
    2 x the parameters besides the embeddings, plus attention's 4 x layers x length x width, per token."""
    width, layers = config.hidden_size, config.num_hidden_layers
    body = layers * (4 * width * width + 2 * width * config.intermediate_size)
    return tokens * (2 * body + 4 * layers * length * width)


def plan_check(path: str, backend: str, s: Scale, n: int, step, dev: Device) -> dict:
    """The memory plan's estimate of one guided step's activations (``shapes.Architecture``, from the
    RM's config.json) against the peak one more step holds above what was allocated before it
    (``measure.peak_bytes``: torch's allocator on CUDA, every storage counted on CPU)."""
    from pargs_batch.plan.measure import peak_bytes
    from pargs_batch.plan.shapes import Architecture

    arch = Architecture.read(path, "classifier")
    if backend == "causal":  # every row's k candidates, attending its n-token session
        plan = arch.forward_bytes(s.rows, s.k, n + s.k, "bfloat16")
    else:  # hf_batch texts a forward, each n tokens (the scorer pads a batch to its longest)
        plan = arch.forward_bytes(min(s.hf_batch, s.rows * s.k), n, n, "bfloat16")
    measured = peak_bytes(step, dev.name)
    return {"plan_step_mib": mib(plan), "measured_step_mib": mib(measured),
            "plan_over_measured": round(plan / measured, 3) if measured else None}


def time_hf(scorer, s: Scale, dev: Device, base: int | None, weights: int | None, rng) -> dict:
    """Per prefix length: ms of one guided step of the hf backend - ``score_costed`` of B x k texts of
    that many tokens, re-tokenised as every step does (median of ``s.hf_steps``) - the tokens it read
    per input (the scorer cuts at the model's limit), the step's peak memory above the weights and
    its rough TFLOP/s."""
    import numpy as np

    out, vocab = {}, len(scorer.tokenizer)
    for i, n in enumerate(s.prefixes):
        try:
            prompts, responses = hf_inputs(rng, s.rows, s.k, n, vocab)
            if i == 0:
                scorer.score_costed(prompts, responses)  # warm-up
            times, finite, mem = [], True, {}
            with dev.peak(mem):
                for _ in range(s.hf_steps):
                    with dev.timed(times):
                        rewards, tokens, _ = scorer.score_costed(prompts, responses)
                    finite &= bool(np.isfinite(rewards).all())
            seconds, read = statistics.median(times), float(tokens.mean())
            out[str(n)] = {"ms": 1000 * seconds, "tokens_read": read,
                           "peak_over_weights_mib": mib(mem["peak"], base, weights),
                           "tflops": forward_flops(scorer.model.config, tokens.sum(), read) / seconds / 1e12,
                           "finite": finite,
                           **plan_check(scorer.config.path, "hf", s, int(tokens.max()),
                                        lambda: scorer.score_costed(prompts, responses), dev)}
        except dev.torch.cuda.OutOfMemoryError:
            out[str(n)] = {"error": "out of memory"}
        dev.free()
    return out


def runner_state(rows: int, max_len: int, vocab: int, dev: Device):
    """Model Runner V2's request state as a processor sees it: ``all_token_ids.gpu``, an int32
    (max_num_reqs, max_model_len) device tensor of each slot's committed tokens (the runner keeps it
    in UVA host memory unless told otherwise: reads there may be slower), and ``prompt_len``,
    ``prefill_len``, ``total_len`` with their int32 host arrays. vLLM's own dataclass where vLLM is
    installed, a namespace of the same fields where not."""
    import numpy as np

    torch = dev.torch
    host = lambda: types.SimpleNamespace(np=np.zeros(rows, dtype=np.int32))  # noqa: E731
    fields = dict(device=torch.device(dev.name), max_num_reqs=rows, vocab_size=vocab,
                  all_token_ids=types.SimpleNamespace(gpu=torch.zeros((rows, max_len), dtype=torch.int32,
                                                                      device=dev.name)),
                  prompt_len=host(), prefill_len=host(), total_len=host())
    try:
        from vllm.v1.worker.gpu.sample.logits_processor import LogitsProcRequestState
    except ImportError:
        return types.SimpleNamespace(**fields)
    return LogitsProcRequestState(**fields)


def logits_context(idx, slots, lengths, last, dev: Device):
    """The step's batch layout (``LogitsContext``'s fields) for rows ``slots``, one logits row each;
    vLLM's dataclass where vLLM is installed."""
    torch = dev.torch
    fields = dict(expanded_idx_mapping=idx, idx_mapping=idx, idx_mapping_np=slots,
                  expanded_local_pos=torch.zeros(len(slots), dtype=torch.int32, device=dev.name), input_ids=last,
                  pos=torch.as_tensor(lengths - 1, device=dev.name), seq_lens_upper_bound_np=lengths)
    try:
        from vllm.v1.worker.gpu.sample.logits_processor import LogitsContext
    except ImportError:
        return types.SimpleNamespace(**fields)
    return LogitsContext(**fields)


def time_processor(lib, rm_dir: str, s: Scale, dev: Device, guided: bool, prefix: int, rng) -> dict:
    """The V2 processor driven as the runner drives it, from prefix ``prefix``: all requests added,
    then ``s.proc_steps`` steps of random float32 logits (B, vocab) on the device, each step's argmax
    written into ``all_token_ids`` at the row's length (the runner's post-update), so each step the
    processor gathers one new token a row - the first step reads every row whole, as it does for a
    slot just added. ms per ``apply`` (median of the steps after the first: the first reads whole
    prompts and, guided, starts the RM's session), and for guided rows the reward scorer's share of
    that (the rows' ``timings``)."""
    import numpy as np

    torch, rows, vocab = dev.torch, s.proc_rows, s.proc_vocab
    reward = {"path": rm_dir, "backend": "causal", "dtype": "bfloat16", "device": dev.name, "batch_size": 1024}
    config = types.SimpleNamespace(additional_config=lib.GuideSetup(tokenizer=rm_dir,
                                                                    reward=reward if guided else None).to_wire(),
                                   speculative_config=None)
    state = runner_state(rows, prefix + s.proc_steps + 1, vocab, dev)
    proc = lib.ProcessorV2(config, state)
    tokens = state.all_token_ids.gpu
    tokens[:, :prefix] = torch.as_tensor(rng.integers(FIRST_WORD, vocab, (rows, prefix)), dtype=torch.int32)
    for buffer in (state.prompt_len, state.prefill_len, state.total_len):
        buffer.np[:] = prefix
    for slot in range(rows):
        args = lib.GuideArgs(key=f"slot{slot}", k=s.k, beta=1.0, guided=guided, greedy=True, prompt="")
        assert proc.add_request(slot, types.SimpleNamespace(extra_args=args.to_wire()))
    slots = rng.permutation(rows)  # batch row -> slot: the runner's rows are not in slot order
    idx = torch.as_tensor(slots, dtype=torch.int64, device=dev.name)
    lengths = np.full(rows, prefix, dtype=np.int32)
    generator = torch.Generator(dev.name).manual_seed(0)
    times, reward_s = [], []
    for _ in range(s.proc_steps):
        logits = torch.randn((rows, vocab), generator=generator, device=dev.name)
        at = torch.as_tensor(lengths[slots], dtype=torch.int64, device=dev.name)
        ctx = logits_context(idx, slots, lengths[slots].copy(), tokens[idx, at - 1], dev)
        with dev.timed(times):
            new = proc.apply(logits, ctx)
        reward_s.append(sum(row.timings["reward"] for row in proc.records.values()))
        tokens[idx, at] = new.argmax(-1).to(torch.int32)
        lengths[slots] += 1
        state.total_len.np[:] = lengths
    steady, prompts, written = times[1:] or times, tokens[:, :prefix].tolist(), tokens[:, prefix:].tolist()
    read = [(proc.records[f"slot{slot}"].prompt_ids, proc.records[f"slot{slot}"].committed) for slot in range(rows)]
    out = {"ms_per_apply": 1000 * statistics.median(steady), "mean_ms": 1000 * statistics.fmean(steady),
           "first_step_ms": 1000 * times[0],
           # each row read its slot's prompt (whole, once, the step after add_request) and committed
           # the tokens written into its slot after it (the last waits for the next step)
           "follows_runner": not proc.fresh and all(p == q and c == w[:s.proc_steps - 1]
                                                    for (p, c), q, w in zip(read, prompts, written))}
    if guided:
        spent = reward_s[-1] - reward_s[0] if len(times) > 1 else reward_s[0]
        out.update(reward_ms_per_step=1000 * spent / len(steady), reward_share=spent / sum(steady),
                   first_step_reward_ms=1000 * reward_s[0],
                   rewards_recorded=min(len(row.rewards) for row in proc.records.values()))
    del proc, state
    dev.free()
    return out


def scorer_check(out_dir: str, scale: str = "auto") -> dict:
    """Part 1: the reward backends' guided steps and the V2 processor's overhead at ``scale`` (full:
    the docstring's sizes, tiny: seconds on CPU; auto: full where torch sees CUDA), in bfloat16.
    Writes OUT/gpu_check.json as each section ends; returns the figures."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").unlink(missing_ok=True)  # what is there after a failure is this run's
    try:
        import numpy as np
        import torch
    except ImportError:
        report = {"ran": False, "why": "torch is not installed"}
        (out / "gpu_check.json").write_text(json.dumps({"scorers": report}, indent=2))
        return report
    dev = Device("cuda" if torch.cuda.is_available() else "cpu")
    scale = scale if scale != "auto" else ("full" if dev.cuda else "tiny")
    s, t_start = SCALES[scale], time.perf_counter()
    lib = library()
    configs = rm_configs(scale)
    report = {"ran": True, "scale": scale, "device": dev.name,
              "device_name": torch.cuda.get_device_name(0) if dev.cuda else "cpu", "dtype": "bfloat16",
              "rows": s.rows, "k": s.k, "candidates": s.rows * s.k,
              "models": {name: {"params": param_count(c)} for name, c in configs.items()},
              "reward_step": {}, "processor": {"rows": s.proc_rows, "vocab": s.proc_vocab, "steps": s.proc_steps}}

    def save(stage: str) -> None:
        report["seconds"] = round(time.perf_counter() - t_start, 1)
        (out / "gpu_check.json").write_text(json.dumps({"scorers": report}, indent=2))
        print(f"scorer check: {stage} ({report['seconds']} s)", flush=True)

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        paths = {name: save_random_rm(c, Path(tmp) / name, dev, cls_sep=name == "hf") for name, c in configs.items()}
        save("random RMs built")
        for backend, timer in (("causal", time_causal), ("hf", time_hf)):
            dev.free()
            base = dev.allocated()
            # the DeBERTa built here records nothing: read as joined text, the inputs the figures assume
            scorer = lib.make_scorer(lib.RewardConfig(path=paths[backend], backend=backend, input="template",
                                                      dtype="bfloat16", device=dev.name, batch_size=s.hf_batch))
            weights = None if base is None else dev.allocated() - base
            report["models"][backend]["weights_mib"] = mib(weights)
            report["reward_step"][backend] = timer(scorer, s, dev, base, weights, rng)
            scorer = None
            save(f"{backend} backend timed")
        for guided in (True, False):
            report["processor"]["guided" if guided else "unguided"] = {
                str(n): time_processor(lib, paths["processor"], s, dev, guided, n, rng) for n in s.proc_prefixes}
        save("V2 processor timed")
    print_scorers(report)
    return report


def print_scorers(r: dict) -> None:
    """Part 1's figures as two tables."""
    def f(x, spec=".1f"):
        return "-" if x is None else format(x, spec)

    m, steps = r["models"], r["reward_step"]
    print(f"scorer check on {r['device_name']} ({r['scale']} scale, {r['dtype']}): B x k = {r['rows']} x {r['k']} "
          f"= {r['candidates']} candidates per step")
    print(f"  causal RM {m['causal']['params'] / 1e6:.1f}M params (weights {f(m['causal'].get('weights_mib'))} MiB), "
          f"hf RM {m['hf']['params'] / 1e6:.1f}M (weights {f(m['hf'].get('weights_mib'))} MiB); "
          "peak = the step's peak device memory above the weights, MiB")
    print(f"  {'prefix':>6} | {'causal ms':>9} {'start ms':>9} {'session':>8} {'peak':>8} {'plan/meas':>9} | "
          f"{'hf ms':>9} {'tokens':>6} {'peak':>8} {'TFLOP/s':>7} {'plan/meas':>9}")
    for n in steps["causal"]:
        c, h = steps["causal"][n], steps["hf"].get(n, {})
        print(f"  {n:>6} | {f(c.get('ms'), '.2f'):>9} {f(c.get('start_ms')):>9} {f(c.get('session_mib')):>8} "
              f"{f(c.get('peak_over_weights_mib')):>8} {f(c.get('plan_over_measured'), '.2f'):>9} | "
              f"{f(h.get('ms'), '.2f'):>9} {f(h.get('tokens_read'), '.0f'):>6} {f(h.get('peak_over_weights_mib')):>8} "
              f"{f(h.get('tflops')):>7} {f(h.get('plan_over_measured'), '.2f'):>9}" +
              "".join(f"  [{b}: {x['error']}]" for b, x in (("causal", c), ("hf", h)) if "error" in x))
    p = r["processor"]
    print(f"  V2 processor: {p['rows']} rows, vocabulary {p['vocab']}, {p['steps']} steps from each prefix; "
          f"ms per apply (median after the first step)")
    print(f"  {'prefix':>6} | {'guided':>8} {'reward':>7} {'first':>8} | {'unguided':>8}")
    for n, g in p["guided"].items():
        u = p["unguided"][n]
        print(f"  {n:>6} | {g['ms_per_apply']:>8.2f} {g['reward_share']:>7.0%} {g['first_step_ms']:>8.1f} | "
              f"{u['ms_per_apply']:>8.2f}")

