"""The frozen LLM behind vLLM, in token ids.

``topk`` (the stepped loop): token-id prefixes in, top-k (token id, log pi_ref) arrays out - one
token per prefix with ``logprobs=k`` under prefix caching, so a prompt's KV blocks are computed once
and reused every step. vLLM reports raw log-probabilities (before temperature or top-k), which is
what ``log pi_ref`` means in the paper. ``sample`` (best-of-n, the block methods) and ``guided``
(fused mode) run whole requests: they take token-id prefixes and vLLM's stop strings, and return
each request's token ids with the text vLLM detokenised for its stop-string check, and why it ended.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading

import numpy as np

from pargs_batch import decoding
from pargs_batch.config import ModelConfig
from pargs_batch.guidance import GuideInfo, GuideRecord


SHUTDOWN_S = 60.0  # vLLM's own grace is 5 s, after which it force-kills an engine core still tearing down


def topk_arrays(step_logprobs: list, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Turn vLLM's per-request logprobs of one generated position into (B, k) arrays.

    Each item is either a ``dict[token_id, Logprob]`` or one position of a ``FlatLogprobs``
    (given as ``(token_ids, logprobs)`` sequences). vLLM adds the sampled token to the top-k
    (listing it twice in the flat form when it is also among them); here the k most likely
    distinct tokens are kept, sorted by logprob (ties: lower token id first). Rows with
    fewer than k candidates (a vocabulary smaller than k) are padded with token -1, logprob -inf.
    """
    rows = []
    for item in step_logprobs:
        if isinstance(item, dict):
            tok = np.fromiter(item.keys(), dtype=np.int64, count=len(item))
            lp = np.fromiter((v.logprob for v in item.values()), dtype=np.float64, count=len(item))
        else:
            tok = np.asarray(item[0], dtype=np.int64)
            lp = np.asarray(item[1], dtype=np.float64)
            # the flat form lists the sampled token and then the top-k, which may repeat it
            _, first = np.unique(tok, return_index=True)
            tok, lp = tok[first], lp[first]
        rows.append((tok, lp))
    width = max([k] + [len(tok) for tok, _ in rows])
    ids = np.full((len(rows), width), -1, dtype=np.int64)
    lps = np.full((len(rows), width), -np.inf, dtype=np.float64)
    for row, (tok, lp) in enumerate(rows):
        ids[row, : len(tok)], lps[row, : len(tok)] = tok, lp
    return decoding.order_candidates(ids, lps, k)


def eos_token_ids(model: str, tokenizer) -> frozenset[int]:
    """The ids that end a response: the tokenizer's EOS and every id in the model's
    ``generation_config.json`` (Llama-3-Instruct ends a turn with ``<|eot_id|>``, not its EOS)."""
    from transformers import GenerationConfig

    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    try:
        generation = GenerationConfig.from_pretrained(model).eos_token_id
    except OSError:  # no generation_config.json
        generation = None
    if generation is not None:
        ids |= set(generation) if isinstance(generation, (list, tuple)) else {generation}
    return frozenset(int(i) for i in ids)


def _flat_positions(output) -> tuple:
    """(token_ids, logprobs) of the first generated position of a vLLM CompletionOutput."""
    lp = output.logprobs
    if isinstance(lp, list):
        return lp[0]
    start, end = lp.start_indices[0], lp.end_indices[0]
    return lp.token_ids[start:end], lp.logprobs[start:end]


def prefill_computed(output) -> int:
    """Prompt tokens the engine computed for one request: those not served from the prefix cache
    (vLLM's ``num_cached_tokens``; for ``n > 1`` the count of the child vLLM reports last)."""
    return len(output.prompt_token_ids or []) - int(output.num_cached_tokens or 0)


def _finish_reason(completion) -> str:
    """eos (an EOS id, vLLM's own or one of ``stop_token_ids``), stop (a stop string) or length."""
    if completion.finish_reason == "length":
        return "length"
    return "stop" if isinstance(completion.stop_reason, str) else "eos"


def engine_args(config: ModelConfig, eager_default: bool = False) -> dict:
    """vLLM's engine arguments for ``config``: what ``vllm.LLM`` takes here and what
    ``pargs-batch serve`` builds vLLM's ``AsyncEngineArgs`` from, so a server's engine is the batch
    engine (the same block size, prefill and sampling, hence the same tokens). ``eager_default``:
    ``enforce_eager`` when the config leaves it unset."""
    from vllm.platforms import current_platform

    kwargs = dict(
        model=config.path,
        tokenizer=config.tokenizer or config.path,
        dtype=config.dtype,
        max_model_len=config.max_model_len,
        max_logprobs=config.max_logprobs,
        enable_prefix_caching=True,
        tensor_parallel_size=config.tensor_parallel_size,
        enforce_eager=eager_default if config.enforce_eager is None else config.enforce_eager,
        trust_remote_code=config.trust_remote_code,
        seed=config.seed,
        disable_log_stats=not config.log_stats,
    )
    # the stepped loop resubmits every sequence each token: only whole cached blocks are reused
    kwargs["block_size"] = config.block_size or (32 if current_platform.is_cpu() else 16)
    if current_platform.is_cpu():
        # vLLM's CPU runner cannot rewind a seeded request's torch generator when a step's token is
        # discarded because its prompt was only partly prefilled ("CPU Generator does not use
        # offset" kills the engine): whole prompts only (vLLM then sizes the step's token budget
        # to hold the longest)
        kwargs["enable_chunked_prefill"] = False
    if config.max_num_seqs is not None:
        kwargs["max_num_seqs"] = config.max_num_seqs
    if config.kv_cache_memory_bytes is not None:
        kwargs["kv_cache_memory_bytes"] = config.kv_cache_memory_bytes
    else:
        default = 0.2 if current_platform.is_cpu() else 0.9
        kwargs["gpu_memory_utilization"] = config.gpu_memory_utilization or default
    return kwargs


class Engine:
    """A ``vllm.LLM`` that answers "which k tokens come next, and how likely is each?"."""

    def __init__(self, config: ModelConfig, fused: dict | None = None):
        """``fused``: extra ``vllm.LLM`` arguments loading the guidance logits processor and its
        worker extension (``models.loading.engine_kwargs``)."""
        from vllm import LLM
        from vllm.platforms import current_platform

        # a fused engine on CPU runs in this process, on every core it may use (see in_process_layout)
        self.in_process = fused is not None and current_platform.is_cpu() and config.tensor_parallel_size == 1
        kwargs = engine_args(config, self.in_process)
        self.config, self.fused = config, fused is not None
        if current_platform.is_cpu():
            keep_compiled_models()
        with in_process_layout() if self.in_process else contextlib.nullcontext():
            self.llm = LLM(**kwargs, **(fused or {}))
        self.max_model_len: int = self.llm.llm_engine.model_config.max_model_len
        # every mode stops on the same set (vLLM's own default would add only generation_config's)
        self.eos_ids = eos_token_ids(config.path, self.llm.get_tokenizer())
        self.closing = threading.Event()
        watch_engine_core(self.llm, self.closing)

    def topk(self, prefixes: list[list[int]], k: int, prefill: list | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        """For each token-id prefix, the k most likely next tokens and their log-probabilities;
        ``prefill`` (a list) is extended with each request's computed prompt tokens."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if not prefixes:
            return np.zeros((0, k), dtype=np.int64), np.zeros((0, k))
        params = SamplingParams(max_tokens=1, logprobs=k, temperature=0.0, detokenize=False,
                                flat_logprobs=True)
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prefixes], params,
                                    use_tqdm=False)
        if prefill is not None:
            prefill.extend(map(prefill_computed, outputs))
        return topk_arrays([_flat_positions(o.outputs[0]) for o in outputs], k)

    def sample(self, prefixes: list[list[int]], n: int, seeds: list[int], max_tokens: int, top_k: int,
               temperature: float, stop: list[str], ignore_eos: bool = False, prefill: list | None = None,
               logprob: bool = False) -> list[list[tuple]]:
        """n whole samples of pi_ref per prefix, one seeded request each (batch-independent).

        Returns, per prefix, n tuples (token ids, text, finish reason): ``eos``, ``stop`` (a stop
        string, cut from the text as vLLM does) or ``length``; with ``logprob`` a fourth item, the
        sample's log pi_ref (the sum of its tokens' raw logprobs). Text is vLLM's own
        detokenisation, which its stop-string handling needs. ``prefill`` (a list) is extended
        with each request's computed prompt tokens.
        """
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = [SamplingParams(n=n, seed=seed, max_tokens=max_tokens, top_k=top_k, temperature=temperature,
                                 stop=stop or None, ignore_eos=ignore_eos, skip_special_tokens=True,
                                 stop_token_ids=None if ignore_eos else sorted(self.eos_ids),
                                 logprobs=0 if logprob else None)
                  for seed in seeds]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prefixes], params, use_tqdm=False)
        if prefill is not None:
            prefill.extend(map(prefill_computed, outputs))

        def item(c) -> tuple:
            out = (list(c.token_ids), c.text, _finish_reason(c))
            return out + (float(c.cumulative_logprob or 0.0),) if logprob else out

        return [[item(c) for c in sorted(o.outputs, key=lambda c: c.index)] for o in outputs]

    def guided(self, prefixes: list[list[int]], seeds: list[int], extra_args: list[dict], max_tokens: int,
               temperature: float, stop: list[str], ignore_eos: bool = False, prefill: list | None = None
               ) -> list[tuple]:
        """Whole responses, one seeded request per prefix, guided by the fused logits processor.

        Returns (token ids, text, finish reason) per prefix; ``prefill`` as in ``sample``."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = [SamplingParams(seed=seed, max_tokens=max_tokens, temperature=temperature, stop=stop or None,
                                 ignore_eos=ignore_eos, skip_special_tokens=True, extra_args=extra,
                                 stop_token_ids=None if ignore_eos else sorted(self.eos_ids))
                  for seed, extra in zip(seeds, extra_args)]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prefixes], params, use_tqdm=False)
        if prefill is not None:
            prefill.extend(map(prefill_computed, outputs))
        return [(list(o.outputs[0].token_ids), o.outputs[0].text, _finish_reason(o.outputs[0])) for o in outputs]

    def fused_records(self, keys: list[str], last_tokens: list[int] | None = None) -> dict[str, GuideRecord]:
        """What the fused logits processor recorded for the requests ``keys`` (popped from it): the
        reward of each chosen token and its guidance seconds (``in_engine.records.RecordsExtension``);
        ``last_tokens``, each request's final token (-1: none), for the whole-vocabulary rows."""
        args = (list(keys),) if last_tokens is None else (list(keys), [int(t) for t in last_tokens])
        wire = self.llm.collective_rpc("pargs_batch_records", args=args)[0]
        return {key: GuideRecord.from_wire(record) for key, record in wire.items()}

    def guide_info(self) -> GuideInfo | None:
        """The fused guidance's start-up facts (its reward model's load seconds, the device memory
        reserved for its largest step), None for an engine without it."""
        if not self.fused:
            return None
        return GuideInfo.from_wire(self.llm.collective_rpc("pargs_batch_guide_info")[0])

    def preemptions(self) -> int:
        """Requests vLLM has preempted so far (KV cache full), from its engine statistics; 0 unless
        ``model.log_stats``."""
        if not self.config.log_stats:
            return 0
        return int(sum(m.value for m in self.llm.get_metrics() if m.name == "vllm:num_preemptions"))

    def close(self) -> None:
        """Stop vLLM's engine core (and its processes) now, waiting for them, rather than have vLLM
        force-kill them at interpreter exit."""
        self.closing.set()
        self.llm.llm_engine.engine_core.shutdown(timeout=SHUTDOWN_S)


def watch_engine_core(llm, closing: threading.Event) -> None:
    """Wake a call waiting on an engine core that has died. vLLM's own monitor marks such an engine
    dead and shuts its client down, but a ``generate`` already waiting for the core's output waits
    forever (the client's output thread exits without a word); this puts vLLM's ``EngineDeadError``
    where that call waits, so the caller can replace the engine. An engine in this process (the
    fused CPU layout) has no core process to watch: its death is this process's."""
    client = llm.llm_engine.engine_core
    manager = getattr(getattr(client, "resources", None), "engine_manager", None)
    outputs = getattr(client, "outputs_queue", None)
    if manager is None or outputs is None:
        return
    sentinels = [process.sentinel for process in manager.processes]

    def watch():
        from multiprocessing.connection import wait

        from vllm.v1.engine.exceptions import EngineDeadError

        wait(sentinels)
        if closing.is_set():
            return
        outputs.put_nowait(EngineDeadError())
        for future in list(getattr(client, "utility_results", {}).values()):  # a collective_rpc waiting
            if not future.done():
                future.set_exception(EngineDeadError())

    threading.Thread(target=watch, name="pargs-engine-watch", daemon=True).start()


@contextlib.contextmanager
def in_process_layout():
    """Build a vLLM engine inside this process, its threads bound to every core this process may use.

    vLLM's CPU default runs the engine core and its worker in two more processes and binds the
    worker to all cores but one, kept for the engine core. For a fused engine - the reward model
    runs in the worker, and the engine core only waits on it - that costs two process starts
    (about 25 s of imports on two cores) and half the machine for the reward model. vLLM offers the
    layout and the binding only as environment variables, read while the engine is built: they are
    set for the build alone (a value the user set wins) and restored after it, and vLLM's cache of
    its environment - which an in-process engine turns on - is cleared, so an engine built later
    gets vLLM's defaults again. vLLM's CPU worker also replaces ``torch.set_num_threads`` with a no-op
    to guard its binding; the original is put back, so code that sets its own thread count later in
    this process (a deterministic world build, a trainer) still can.
    """
    import torch

    set_num_threads = torch.set_num_threads
    hidden = unscannable_modules()
    for name in hidden:
        del sys.modules[name]
    cores = sorted(os.sched_getaffinity(0))
    values = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0",
              "VLLM_CPU_OMP_THREADS_BIND": ",".join(map(str, cores))}
    try:
        with vllm_environment(values):
            yield
    finally:
        torch.set_num_threads = set_num_threads
        sys.modules.update(hidden)


def keep_compiled_models() -> None:
    """Have vLLM compile a CPU model once per machine, not at every start.

    vLLM 0.32 compiles a CPU model with Inductor and saves it as an AOT artefact that it cannot load
    back ("'function' object has no attribute 'finalize_loading'"), so every start compiled again: 2-3
    minutes for SmolLM2's 30 layers on two cores. Without AOT compilation vLLM calls torch.compile as
    before and Inductor's own on-disk caches serve every later start: the same compiled code, so the
    same tokens. The setting stays for the process (an engine built in it reads it at every call, and
    an engine's processes inherit it); a value the user set wins. CUDA engines never get here: they
    load their AOT artefacts."""
    import vllm.envs as envs

    if "VLLM_USE_AOT_COMPILE" not in os.environ:
        os.environ["VLLM_USE_AOT_COMPILE"] = "0"
        if hasattr(envs.__getattr__, "cache_clear"):
            envs.__getattr__.cache_clear()


@contextlib.contextmanager
def vllm_environment(values: dict[str, str]):
    """vLLM settings that exist only as environment variables, set while one engine is built (a value
    the user set wins) and restored after it. The engine's processes inherit them when they start; vLLM's
    cache of its environment (which an in-process engine turns on) is cleared on both sides, so this
    build reads them and an engine built later gets vLLM's defaults again."""
    import vllm.envs as envs

    def forget():
        if hasattr(envs.__getattr__, "cache_clear"):
            envs.__getattr__.cache_clear()

    before = {name: os.environ.get(name) for name in values}
    os.environ.update({name: value for name, value in values.items() if before[name] is None})
    forget()
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
        forget()


def unscannable_modules() -> dict:
    """Modules that vLLM's worker cannot scan when it starts in this process. Its CPU platform rebinds
    kernels by walking every module's namespace and asking each value ``hasattr(value, "__dict__")``,
    which raises - instead of answering - for context-local proxies (werkzeug's, e.g. flask's
    ``current_app`` outside an app context, imported by anything that serves HTTP). In vLLM's own
    layout the worker is a fresh process and never sees them; here such modules are left out of
    ``sys.modules`` while the engine is built and put back after."""
    found = {}
    for name, module in list(sys.modules.items()):
        namespace = getattr(module, "__dict__", None) or {}
        for value in list(namespace.values()):
            try:
                hasattr(value, "__dict__")
            except Exception:  # noqa: BLE001 - what vLLM's scan would die of
                found[name] = module
                break
    return found
