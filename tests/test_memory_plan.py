"""The memory plan against hand arithmetic and measured peaks.

Real architectures without their weights: ``tests/data/architectures/<hub id>`` holds the config.json
files of Llama-3.1-8B-Instruct, Qwen2.5-7B-Instruct, Skywork-Reward-Llama-3.1-8B-v0.2, OpenAssistant's
DeBERTa-v3-large reward model, Llama-3.2-1B and Skywork-Reward-V2-Llama-3.2-3B (their real shapes). Every figure the plan prints for them is recomputed here
by hand, on 1 and 8 80 GiB GPUs and on 24 GiB cards; the activation and KV formulas are checked
against what torch actually holds for small models of each family on CPU (``measure.peak_bytes``).
No GPU is used: the devices are given, as ``pargs-batch plan --gpus N --gpu-memory X`` gives them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pargs_batch.config import GenerateConfig
from pargs_batch.configlib import ConfigError, build
from pargs_batch.plan.memory import ENGINE_RUNTIME, PROCESS_RUNTIME, plan_memory
from pargs_batch.plan.shapes import GIB, Architecture, Devices, parse_size, resolved_dtype

ARCH = Path(__file__).parent / "data" / "architectures"
LLAMA8, QWEN7, SKYWORK, DEBERTA, LLAMA1 = (str(ARCH / n) for n in (
    "meta-llama/Llama-3.1-8B-Instruct", "Qwen/Qwen2.5-7B-Instruct", "Skywork/Skywork-Reward-Llama-3.1-8B-v0.2",
    "OpenAssistant/reward-model-deberta-v3-large-v2", "meta-llama/Llama-3.2-1B"))
H100, H100x8, L4 = Devices.given(1, "80GiB"), Devices.given(8, "80GiB"), Devices.given(1, "24GiB")


def config(**sections) -> GenerateConfig:
    data = {"model": {"path": LLAMA8}, "reward": {"path": DEBERTA, "input": "pair"},
            "decode": {"method": "pargs", "top_k": 10}, "ray": {"enabled": False}}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return build(GenerateConfig, data)


def line(plan, device: int, starts: str) -> int:
    (found,) = [x.bytes for x in plan.layout[device].lines if x.what.lstrip("[").startswith(starts)
                or x.what.split("] ")[-1].startswith(starts)]
    return found


# ------------------------------------------------------------------ hand arithmetic

def decoder_params(vocab, hidden, layers, q, kv, inter, tied=False, qkv_bias=False, head="lm", labels=1):
    """A Llama/Qwen decoder counted by hand: embeddings, per layer q/k/v/o (and Qwen's q/k/v biases), the
    gated MLP's three matrices and two RMSNorms, the final norm, and an LM head (unless tied) or a score row."""
    layer = hidden * q + 2 * hidden * kv + q * hidden + 3 * hidden * inter + 2 * hidden
    layer += (q + 2 * kv) if qkv_bias else 0
    out = vocab * hidden + layers * layer + hidden
    if head == "lm":
        return out + (0 if tied else vocab * hidden)
    return out + hidden * labels


def deberta_params(vocab, hidden, layers, inter, buckets, labels=1):
    """DeBERTa-v2/v3: embeddings and their LayerNorm, per layer q/k/v/o with biases, two LayerNorms and
    the MLP; the shared relative-position embeddings (2 x buckets) and their LayerNorm; pooler; classifier."""
    layer = 4 * (hidden * hidden + hidden) + 2 * hidden + hidden * inter + inter + inter * hidden + hidden + 2 * hidden
    return (vocab * hidden + 2 * hidden + layers * layer + 2 * buckets * hidden + 2 * hidden
            + hidden * hidden + hidden + hidden * labels + labels)


@pytest.mark.parametrize("path,head,expected", [
    (LLAMA8, "lm", decoder_params(128256, 4096, 32, 4096, 1024, 14336)),
    (QWEN7, "lm", decoder_params(152064, 3584, 28, 3584, 512, 18944, qkv_bias=True)),
    (SKYWORK, "classifier", decoder_params(128257, 4096, 32, 4096, 1024, 14336, head="classifier")),
    (DEBERTA, "classifier", deberta_params(128100, 1024, 24, 4096, 256)),
    (LLAMA1, "lm", decoder_params(128256, 2048, 16, 2048, 512, 8192, tied=True)),
])
def test_parameters_of_real_architectures_match_a_hand_count(path, head, expected):
    arch = Architecture.read(path, head)
    assert arch.params == expected
    # the published sizes, as a check on the hand count itself
    published = {LLAMA8: 8.03e9, QWEN7: 7.62e9, SKYWORK: 7.50e9, DEBERTA: 0.435e9, LLAMA1: 1.24e9}[path]
    assert abs(arch.params - published) / published < 0.005


def test_kv_bytes_per_token_by_hand():
    llama = Architecture.read(LLAMA8, "lm")
    assert llama.kv_bytes_per_token("bfloat16") == 2 * 32 * 8 * 128 * 2 == 128 * 1024
    assert llama.kv_bytes_per_token("bfloat16", tensor_parallel=2) == 2 * 32 * 4 * 128 * 2
    qwen = Architecture.read(QWEN7, "lm")
    assert qwen.kv_bytes_per_token("bfloat16") == 2 * 28 * 4 * 128 * 2


def test_dtypes_and_sizes():
    assert resolved_dtype("auto", "float32", gpu=True) == "bfloat16"   # a float32 RM on a GPU
    assert resolved_dtype("auto", "float32", gpu=False) == "float32"   # the checkpoint's own on CPU
    assert resolved_dtype("auto", "bfloat16", gpu=True) == "bfloat16"
    assert resolved_dtype("float16", "float32", gpu=True) == "float16"  # the user's word wins
    assert parse_size("80GiB") == 80 * GIB and parse_size("24GB") == 24 * GIB and parse_size("512MiB") == 512 << 20
    with pytest.raises(ConfigError, match="--gpu-memory"):
        parse_size("eighty")


# ------------------------------------------------------------------ worked plans, figure by figure

def llama8_engine_step(seqs: int, tokens: int = 16384) -> int:
    """vLLM's profiled step for Llama-3.1-8B in bfloat16: per token the gated layer's peak, 4 hidden
    + 3 intermediate elements (the MLP, larger than attention's 4 hidden + 3.25 q + 2 kv), and the
    sampler's two float32 copies of max_num_seqs x vocabulary logits."""
    return tokens * (4 * 4096 + 3 * 14336) * 2 + seqs * 128256 * 4 * 2


def deberta_step(rows: int, tokens: int, dtype_bytes: int = 2) -> int:
    h, i, heads, span2 = 1024, 4096, 16, 512
    elems = (2.5 * rows * tokens * i + 5.2 * rows * heads * tokens ** 2 + 0.3 * rows * heads * tokens * span2
             + 3.3 * tokens ** 2 + 2.9 * rows * span2 * h)
    return int(elems * dtype_bytes)


def test_fused_8b_llm_and_deberta_on_one_h100():
    plan = plan_memory(config(engine={"mode": "fused"}), H100)
    M = 80 * GIB
    weights = decoder_params(128256, 4096, 32, 4096, 1024, 14336) * 2
    rm_weights = deberta_params(128100, 1024, 24, 4096, 256) * 2  # float32 checkpoint, bfloat16 on a GPU
    step = deberta_step(32, 512)                                     # 16384 tokens a forward: 32 inputs of 512
    guide = 1024 * 128256 * 4 * 3                                    # 1024 rows x vocabulary, three float32 copies
    assert line(plan, 0, "LLM weights") == weights
    assert line(plan, 0, "LLM activations") == llama8_engine_step(1024)
    assert line(plan, 0, "reward weights") == rm_weights
    assert line(plan, 0, "reward step") == step
    assert line(plan, 0, "guide buffers") == guide
    kv = int(0.9 * M) - weights - ENGINE_RUNTIME - llama8_engine_step(1024) - rm_weights - step - guide
    assert line(plan, 0, "KV cache") == kv and plan.kv_tokens == kv // (128 * 1024)
    assert plan.settings == {"model.gpu_memory_utilization": 0.9, "model.max_num_seqs": 1024,
                             "reward.batch_tokens": 16384, "reward.dtype": "bfloat16"}
    assert plan.largest_step == {"rows": 1024, "k": 10, "tokens": 512, "batch_tokens": 16384}
    assert plan.reward_gpu == "engine" and plan.max_model_len == 131072


def test_stepped_8b_llm_and_8b_rm_share_each_h100_on_ray():
    plan = plan_memory(config(reward={"path": SKYWORK, "input": "template"}, model={"max_model_len": 8192},
                              ray={"enabled": True, "num_workers": 8}), H100x8)
    M = 80 * GIB
    rm_weights = decoder_params(128257, 4096, 32, 4096, 1024, 14336, head="classifier") * 2

    def step(inputs):  # inputs of 8192 tokens in one forward: the gated layer's peak and the padding mask
        return inputs * 8192 * (4 * 4096 + 3 * 14336) * 2 + inputs * 8192 * 8192

    # a micro-batch is 64 rows x k 10 candidates, 16384 tokens a forward: 2 inputs of 8192
    weights = decoder_params(128256, 4096, 32, 4096, 1024, 14336) * 2
    assert plan.largest_step["batch_tokens"] == plan.settings["reward.batch_tokens"] == 16384
    need = rm_weights + step(2) + PROCESS_RUNTIME
    share = -(-need * 100 // M) / 100                                # rounded up to a hundredth of the GPU
    util = round(min(0.9, 1 - share - 0.01), 2)
    assert line(plan, 0, "reward step") == step(2)
    assert plan.reward_gpu == "shared" and plan.reward_share == share
    assert plan.settings["model.gpu_memory_utilization"] == util
    assert plan.settings["ray.reward_resources"] == {"num_cpus": 1, "num_gpus": share}
    assert plan.settings["ray.engine_resources"] == {"num_cpus": 1, "num_gpus": round(1 - share, 2)}
    kv = int(util * M) - weights - ENGINE_RUNTIME - llama8_engine_step(1024)
    assert plan.kv_tokens == kv // (128 * 1024)
    assert plan.layout[0].used <= M and plan.workers == 8


def test_a_reward_actor_given_a_gpu_of_its_own():
    plan = plan_memory(config(reward={"path": SKYWORK, "input": "template"}, model={"max_model_len": 8192},
                              ray={"enabled": True, "num_workers": 4, "reward_resources": {"num_cpus": 1, "num_gpus": 1}}),
                       H100x8)
    assert plan.reward_gpu == "dedicated" and len(plan.layout) == 2
    weights = decoder_params(128256, 4096, 32, 4096, 1024, 14336) * 2
    kv = int(0.9 * 80 * GIB) - weights - ENGINE_RUNTIME - llama8_engine_step(1024)
    assert plan.kv_tokens == kv // (128 * 1024)
    assert plan.settings["ray.engine_resources"] == {"num_cpus": 1, "num_gpus": 1}
    assert "ray.reward_resources" not in plan.settings  # the user's


def test_tensor_parallel_2_splits_weights_and_kv_heads():
    plan = plan_memory(config(model={"path": QWEN7, "tensor_parallel_size": 2, "max_model_len": 32768},
                              ray={"enabled": True, "num_workers": 2}), Devices.given(8, "24GiB"))
    weights = decoder_params(152064, 3584, 28, 3584, 512, 18944, qkv_bias=True) * 2
    assert line(plan, 0, "LLM weights") == weights // 2 and line(plan, 1, "LLM weights") == weights // 2
    # the reward actor beside a tensor-parallel engine gets a GPU of its own
    assert plan.reward_gpu == "dedicated" and [d.name.split(":")[0] for d in plan.layout] == ["GPU 0", "GPU 1", "GPU 2"]
    step = (8192 * (4 * 3584 + 3 * 18944) * 2) // 2 + 256 * 152064 * 4 * 2   # 24 GiB: vLLM's 8192-token step
    kv = int(0.9 * 24 * GIB) - weights // 2 - ENGINE_RUNTIME - step
    assert plan.kv_tokens == kv // (2 * 28 * 2 * 128 * 2)


def test_on_a_24gib_card_the_context_is_capped_to_what_the_kv_cache_holds():
    plan = plan_memory(config(model={"path": LLAMA8}, engine={"mode": "fused"}), L4)
    assert plan.max_model_len < 131072 and plan.kv_tokens >= plan.max_model_len
    assert plan.settings["model.max_model_len"] == plan.max_model_len
    assert plan.max_model_len in {131072 >> i for i in range(10)}


def test_a_small_llm_on_a_24gib_card_keeps_its_context_with_fewer_sequences():
    plan = plan_memory(config(model={"path": LLAMA1}, engine={"mode": "fused"}), L4)
    assert plan.max_model_len == 131072 and plan.kv_tokens >= 131072


@pytest.mark.parametrize("overrides,devices,key", [
    ({"reward": {"path": SKYWORK, "input": "template", "dtype": "float32"}, "model": {"path": LLAMA1}}, L4,
     "reward.dtype"),
    ({"model": {"path": LLAMA8}}, Devices.given(1, "12GiB"), "model.tensor_parallel_size"),
    ({"model": {"path": LLAMA1, "max_model_len": 131072}, "reward": {"path": SKYWORK, "input": "template"}}, L4,
     "reward.max_length"),
    ({"model": {"path": LLAMA1}, "reward": {"path": SKYWORK, "input": "template"}}, Devices.given(1, "16GiB"),
     "reward.device"),
])
def test_what_does_not_fit_is_refused_in_one_line_naming_the_key(overrides, devices, key):
    with pytest.raises(ConfigError) as refused:
        plan_memory(config(**overrides), devices)
    message = str(refused.value)
    assert refused.value.key == key and "\n" not in message and "GiB" in message and "largest item" in message


def test_too_few_gpus_for_the_pool_is_refused():
    with pytest.raises(ConfigError, match="need 16 GPUs; 8 available"):
        plan_memory(config(model={"tensor_parallel_size": 2}, ray={"enabled": True, "num_workers": 8}), H100x8)


def test_apply_sets_only_what_the_plan_chose_and_cpu_plans_choose_nothing(world):
    plan = plan_memory(config(engine={"mode": "fused"}), H100)
    applied = plan.apply(config(engine={"mode": "fused"}))
    assert applied.model.gpu_memory_utilization == 0.9 and applied.model.max_num_seqs == 1024
    assert applied.reward.dtype == "bfloat16" and applied.model.max_model_len is None
    cpu = build(GenerateConfig, {"model": {"path": world["llm"], "kv_cache_memory_bytes": 64 << 20},
                                 "reward": {"path": world["reward_model"]}, "ray": {"enabled": False}})
    plan = plan_memory(cpu, Devices("cpu", 1, 24 * GIB, "CPU"))
    assert plan.settings == {} and plan.apply(cpu) == cpu
    assert line(plan, 0, "KV cache") == 64 << 20


def test_plan_command_prints_the_table_and_refuses_half_a_device(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(f"model: {{path: {LLAMA8}}}\nreward: {{path: {DEBERTA}, input: pair}}\n"
                    "engine: {mode: fused}\nray: {enabled: false}\n")
    cli = [sys.executable, "-m", "pargs_batch", "plan", "--config", str(path)]
    shown = subprocess.run(cli + ["--gpus", "1", "--gpu-memory", "80GiB"], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert "GPU 0: engine + reward model" in shown.stdout and "KV cache (" in shown.stdout
    assert "model.max_num_seqs = 1024" in shown.stdout
    half = subprocess.run(cli + ["--gpus", "1"], capture_output=True, text=True)
    assert half.returncode == 2 and "--gpu-memory" in half.stdout + half.stderr


# ------------------------------------------------------------------ estimates against measured peaks

def _measured(model, rows, tokens, **kwargs):
    import torch

    from pargs_batch.plan.measure import peak_bytes

    ids = torch.randint(5, 500, (rows, tokens))
    mask = torch.ones(rows, tokens, dtype=torch.long)
    mask[0, :3] = 0  # padding, as a batch of unequal lengths has
    with torch.inference_mode():
        return peak_bytes(lambda: model(input_ids=ids, attention_mask=mask, **kwargs))


def _small(family: str, hidden: int, inter: int, kv_heads: int = 2):
    import torch
    from transformers import (DebertaV2Config, DebertaV2ForSequenceClassification, GPT2Config,
                              GPT2ForSequenceClassification, LlamaConfig, LlamaForSequenceClassification)

    from pargs_batch.rewards.hf import one_kernel_activations

    torch.manual_seed(0)
    if family == "gated":
        model = LlamaForSequenceClassification(LlamaConfig(
            vocab_size=512, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=kv_heads, num_labels=1, pad_token_id=0))
    elif family == "gpt2":
        model = GPT2ForSequenceClassification(GPT2Config(vocab_size=512, n_embd=hidden, n_inner=inter, n_layer=2,
                                                         n_head=4, num_labels=1, pad_token_id=0))
    else:
        model = DebertaV2ForSequenceClassification(DebertaV2Config(
            vocab_size=512, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=8, intermediate_size=inter,
            num_labels=1, pad_token_id=0, relative_attention=True, pos_att_type=["p2c", "c2p"], position_buckets=128,
            share_att_key=True, norm_rel_ebd="layer_norm", position_biased_input=False, max_relative_positions=-1))
    return one_kernel_activations(model).eval()


def _arch(model, tmp_path, head="classifier") -> Architecture:
    model.config.save_pretrained(tmp_path)
    return Architecture.read(str(tmp_path), head)


@pytest.mark.parametrize("family,hidden,inter,rows,tokens", [
    ("gated", 192, 512, 6, 96), ("gated", 320, 640, 3, 200), ("gated", 128, 128, 8, 64),
    ("gpt2", 192, 768, 6, 96), ("gpt2", 384, 384, 3, 160),
    ("encoder", 192, 512, 6, 96), ("encoder", 320, 640, 3, 300),
])
def test_activation_estimate_is_within_15_percent_of_the_measured_peak(tmp_path, family, hidden, inter, rows, tokens):
    model = _small(family, hidden, inter)
    kwargs = {} if family == "encoder" else {"use_cache": False}
    measured = _measured(model, rows, tokens, **kwargs)
    estimate = _arch(model, tmp_path).forward_bytes(rows, tokens, tokens, "float32")
    assert abs(estimate - measured) / measured < 0.15, (estimate, measured)


def test_kv_state_and_an_lm_heads_log_softmax_against_measured(tmp_path):
    """A causal LM forward with its KV cache and the log-softmax of its last position (what the
    autoregressive backend's start holds): the estimate of the activations plus the KV state."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from pargs_batch.plan.measure import peak_bytes

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=4096, hidden_size=192, intermediate_size=512, num_hidden_layers=3,
                                         num_attention_heads=4, num_key_value_heads=2)).eval()
    arch = _arch(model, tmp_path, head="lm")
    rows, tokens = 4, 128
    ids = torch.randint(5, 4000, (rows, tokens))
    kept = {}

    def forward():
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        kept["cache"], kept["logp"] = out.past_key_values, torch.log_softmax(out.logits.float(), -1)

    with torch.inference_mode():
        measured = peak_bytes(forward)
    cache = sum(layer.keys.numel() + layer.values.numel() for layer in kept["cache"].layers) * 4
    assert cache == rows * tokens * arch.kv_bytes_per_token("float32")  # exact
    estimate = arch.forward_bytes(rows, tokens, tokens, "float32", logits=1, mask=False) + cache
    assert abs(estimate - measured) / measured < 0.15, (estimate, measured)


# ------------------------------------------------------------------ the GPU page, run as written

def page_examples() -> tuple[dict, list]:
    """docs/gpu.md's config files (```yaml title="NAME"```) and its `pargs-batch plan` commands with
    what they print."""
    import re

    text = (Path(__file__).resolve().parents[1] / "docs" / "gpu.md").read_text()
    files = dict(re.findall(r'```yaml title="([^"]+)"\n(.*?)```', text, re.S))
    runs = []
    for block in re.findall(r"```console\n(.*?)```", text, re.S):
        command, _, printed = block.partition("\n")
        if command.startswith("$ pargs-batch plan "):
            runs.append((command[2:].split(), printed.rstrip("\n")))
    return files, runs


def local_shapes(text: str) -> str:
    """Hub ids of the page's models -> the config.json copies of their shapes in tests/data."""
    for hub in ("meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.2-1B", "Qwen/Qwen2.5-7B-Instruct",
                "Skywork/Skywork-Reward-Llama-3.1-8B-v0.2", "OpenAssistant/reward-model-deberta-v3-large-v2"):
        text = text.replace(hub, str(ARCH / hub))
    return text


def test_the_gpu_pages_plans_print_as_written(tmp_path, capsys, monkeypatch):
    from pargs_batch.cli import main

    files, runs = page_examples()
    assert len(files) == 4 and len(runs) == 5  # four worked plans and a refusal
    monkeypatch.chdir(tmp_path)
    for name, text in files.items():
        (tmp_path / name).write_text(local_shapes(text))
    for argv, printed in runs:
        code = main([local_shapes(a) for a in argv[1:]] + ["--verbose"])
        out = capsys.readouterr()
        assert (out.out + out.err).rstrip("\n") == printed, " ".join(argv)
        assert code == (2 if printed.startswith("config error") else 0)


def test_init_writes_the_caps_and_dtypes_the_plan_chose(world):
    """On a GPU, `init` writes the plan's model and reward choices as keys (here planned for an 80 GiB
    card, as `init` does on one); the file loads."""
    import yaml

    from pargs_batch.starter import inspect, starter_yaml

    found = inspect(world["llm"], world["reward_model"], world["prompts"])
    plain = starter_yaml(world["llm"], world["reward_model"], world["prompts"], found)
    assert "  dtype: auto   #" in plain  # no plan: the reward model's dtype is its checkpoint's
    memory = plan_memory(GenerateConfig.from_dict(yaml.safe_load(plain)), H100)
    text = starter_yaml(world["llm"], world["reward_model"], world["prompts"], found, memory=memory)
    loaded = GenerateConfig.from_dict(yaml.safe_load(text))
    assert loaded.model.gpu_memory_utilization == memory.settings["model.gpu_memory_utilization"] == 0.9
    assert loaded.model.max_num_seqs == 1024 and loaded.reward.dtype == "bfloat16"  # a float32 RM on a GPU
    assert "# memory plan: 1 x 80.0 GiB CUDA" in text
