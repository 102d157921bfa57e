"""Reward-model training with real TRL (and DeepSpeed ZeRO-3 on CPU) on a tiny preference set."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pargs_batch.config import RewardConfig

from pargs_batch.configlib import build
from pargs_batch.rewards.hf import HFRewardScorer
from rm_training.config import TrainConfig
from rm_training.train import load_tokenizer, main, train

from helpers import free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def config(preference_file, model, out, mode, **training):
    t = {"output_dir": str(out), "learning_rate": 3e-3, "per_device_train_batch_size": 16,
         "gradient_accumulation_steps": 1, "num_train_epochs": 3, "logging_steps": 5, "max_length": 128}
    t.update(training)
    return {"mode": mode, "model": str(model),
            "data": {"source": str(preference_file), "format": "generic", "eval_fraction": 0.2},
            "prefixes": {"strategy": "stride", "stride": 3}, "training": t}


@pytest.mark.parametrize("mode", ["full", "partial", "partial-causal"])
def test_each_mode_lowers_the_loss_and_beats_chance(mode, preference_file, fresh_deberta, world, tmp_path):
    model = world["llm"] if mode == "partial-causal" else fresh_deberta
    epochs = {"full": 6, "partial": 2, "partial-causal": 8}[mode]
    lr = 1e-3 if mode == "partial-causal" else 3e-3
    cfg = build(TrainConfig, config(preference_file, model, tmp_path / mode, mode,
                                    num_train_epochs=epochs, learning_rate=lr))
    summary = train(cfg)
    assert summary["eval_loss_after"] < summary["eval_loss_before"] - 0.02
    assert summary["pairwise_accuracy"] > 0.7
    assert summary["data"]["train"]["rows"] == 300 and summary["eval_pairs"] > 0
    if mode == "partial":
        assert summary["train_pairs"] > 300 * 0.8 * 3  # several prefix pairs per triple
    if mode != "full":
        assert set(summary["prefix_accuracy"]) == {"0-25%", "25-50%", "50-75%", "75-100%"}
        # later prefixes carry more of the preference than the first quarter
        assert summary["prefix_accuracy"]["75-100%"]["accuracy"] > summary["prefix_accuracy"]["0-25%"]["accuracy"]
    on_disk = json.loads((tmp_path / mode / "training_summary.json").read_text())
    assert on_disk["pairwise_accuracy"] == summary["pairwise_accuracy"]
    # the checkpoint is what `pargs-batch generate` loads as reward.path
    scorer = HFRewardScorer(RewardConfig(path=str(tmp_path / mode)))
    good, bad = scorer.score(["review of the cafe :"] * 2,
                             [" staff was lovely , food was warm . five stars .",
                              " staff was rude , food was stale . never again ."])
    assert np.isfinite([good, bad]).all() and good > bad


def test_partial_causal_loss_equals_the_expanded_prefix_loss(preference_file, world):
    from transformers import AutoTokenizer, GPT2Config, GPT2ForSequenceClassification

    from rm_training.causal import CausalPrefixCollator, expanded_prefix_loss, partial_causal_loss
    from rm_training.data import read_rows, to_triples
    from rm_training.train import causal_examples

    tokenizer = AutoTokenizer.from_pretrained(world["llm"])
    torch.manual_seed(0)
    model = GPT2ForSequenceClassification(GPT2Config(vocab_size=len(tokenizer), n_embd=64, n_layer=2, n_head=2,
                                                     num_labels=1, pad_token_id=tokenizer.pad_token_id)).eval()
    rows, _ = read_rows(str(preference_file))
    triples, _ = to_triples(rows, "generic", {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"},
                            limit=6)
    cfg = build(TrainConfig, {"mode": "partial-causal", "model": world["llm"],
                              "data": {"source": str(preference_file)}, "training": {"max_length": 40}})
    examples, _ = causal_examples(cfg, tokenizer, triples)
    assert any(len(e["chosen_ids"]) == 40 for e in examples)  # some prompts were cut from the left
    with torch.no_grad():
        fast, stats = partial_causal_loss(model, CausalPrefixCollator(tokenizer.pad_token_id)(examples))
        slow = expanded_prefix_loss(model, examples)
    assert abs(fast.item() - slow.item()) < 1e-5
    assert 0 <= stats["accuracy"] <= 1


@pytest.mark.parametrize("mode", ["partial", "autoregressive"])
def test_zero3_on_cpu_through_torchrun(mode, preference_file, fresh_deberta, world, tmp_path):
    """ZeRO-3 (parameters partitioned, 16-bit weights gathered at save) trains each kind of checkpoint:
    a DeBERTa classifier, and a causal LM as an autoregressive RM (saved marked, scored as one)."""
    out = tmp_path / "z3"
    cfg_path = tmp_path / "z3.yaml"
    import yaml

    model = world["llm"] if mode == "autoregressive" else fresh_deberta
    cfg_path.write_text(yaml.safe_dump(config(preference_file, model, out, mode, max_steps=3)))
    torchrun = str(Path(sys.executable).parent / "torchrun")
    result = subprocess.run(
        [torchrun, "--nproc_per_node", "1", "--master_addr", "127.0.0.1",
         "--master_port", str(free_port()),  # a free one: the two may run at once (xdist)
         "-m", "rm_training.train", "--config", str(cfg_path),
         f"training.deepspeed={ROOT / 'rm_training/configs/zero3.json'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=1800, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["deepspeed_zero_stage"] == 3 and summary["steps"] == 3
    assert np.isfinite(summary["train_loss"])
    from pargs_batch.rewards.factory import make_scorer, trained_backend

    backend = trained_backend(str(out))
    assert backend == ("autoregressive" if mode == "autoregressive" else "hf")
    scorer = make_scorer(RewardConfig(path=str(out), backend=backend))
    assert np.isfinite(scorer.score(["p"], [" staff was lovely"])).all()
    if mode == "autoregressive":  # the gathered weights are whole: the checkpoint differs from the LM it began as
        from safetensors.torch import load_file

        trained, start = load_file(str(out / "model.safetensors")), load_file(str(Path(world["llm"]) / "model.safetensors"))
        assert trained.keys() == start.keys() and all(trained[k].shape == start[k].shape for k in start)
        assert any(not torch.equal(trained[k], start[k]) for k in start)


@pytest.mark.parametrize("change,key", [
    ({"mode": "dpo"}, "config error: mode='dpo'"),
    ({"data": {"format": "tldr"}}, "config error: data.format='tldr' is not allowed: needs column(s) info, summaries, choice"),
    ({"data": {"format": "hh"}}, "100.0% of 300 rows"),
    ({"data": {"prompt_column": "question"}}, "needs column(s) question"),
    ({"data": {"max_malformed_fraction": 0.0}}, "config error: data.max_malformed_fraction=0.0"),
    ({"mode": "partial-causal"}, "config error: mode='partial-causal' is not allowed: needs a causal model"),
    ({"model": "VIT"}, "has no sequence-classification head"),
    ({"training": {"deepspeed": "nope.json"}}, "config error: training.deepspeed='nope.json'"),
])
def test_bad_input_stops_before_training(change, key, preference_file, fresh_deberta, tmp_path, capsys):
    import yaml
    from transformers import ViTConfig

    cfg = config(preference_file, fresh_deberta, tmp_path / "out", "partial")
    if change.get("model") == "VIT":
        ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=1).save_pretrained(tmp_path / "vit")
        change = {"model": str(tmp_path / "vit")}
    if "max_malformed_fraction" in change.get("data", {}):
        bad = tmp_path / "bad.jsonl"
        bad.write_text(Path(preference_file).read_text() + json.dumps({"prompt": "p", "chosen": " a", "rejected": " a"}) + "\n")
        change["data"]["source"] = str(bad)
    for section, value in change.items():
        if isinstance(value, dict):
            cfg[section].update(value)
        else:
            cfg[section] = value
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["--config", str(path)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and key in errors[0], errors
    assert not (tmp_path / "out").exists()


def test_tokenizer_without_pad_token_gets_eos(world, tmp_path, preference_file, caplog):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(world["llm"])
    tok.pad_token = None
    tok.save_pretrained(tmp_path / "tok")
    cfg = build(TrainConfig, {"mode": "partial-causal", "model": world["llm"], "tokenizer": str(tmp_path / "tok"),
                              "data": {"source": str(preference_file)}})
    with caplog.at_level("WARNING"):
        loaded = load_tokenizer(cfg)
    assert loaded.pad_token == loaded.eos_token == "<|endoftext|>"
    assert "no pad token; using its EOS token" in caplog.text


@pytest.mark.parametrize("layout, model_key, reads", [
    ("hh", "deberta", "hh"),                        # HH-RLHF transcripts
    ("conversational", "deberta", "hh"),            # UltraFeedback's message lists, no chat template: HH transcripts
    ("conversational", "chat", "chat"),             # ... through the reward tokenizer's own chat template
])
def test_hh_and_conversational_data_train_and_record_how_the_model_reads(layout, model_key, reads, preference_file,
                                                                         fresh_deberta, chat_world, tmp_path):
    """The data people have trains without code, and the checkpoint says how it read (prompt, response),
    so a run's reward.input auto reads it the same way: scored from a conversation, it gives what it
    gives on the text it was trained on."""
    from pargs_batch.rewards.reading import hh_reply, hh_transcript
    from pargs_batch.rewards.reading import chat_frame
    from pargs_batch.rewards.reading import detect

    records = [json.loads(line) for line in open(preference_file)]
    data = tmp_path / f"{layout}.jsonl"
    with open(data, "w") as f:
        for r in records:
            if layout == "hh":
                row = {side: f"\n\nHuman: {r['prompt']}\n\nAssistant:{r[side]}" for side in ("chosen", "rejected")}
            else:
                user = {"role": "user", "content": r["prompt"]}
                row = {"prompt": r["prompt"], **{side: [user, {"role": "assistant", "content": r[side].strip()}]
                                                 for side in ("chosen", "rejected")}}
            f.write(json.dumps(row) + "\n")
    model = fresh_deberta if model_key == "deberta" else chat_world["reward_model"]
    cfg = config(data, model, tmp_path / "rm", "full", num_train_epochs=6)
    cfg["data"]["format"] = layout
    summary = train(build(TrainConfig, cfg))
    assert summary["data"]["train"]["malformed"] == {}
    assert detect(str(tmp_path / "rm")).input == reads
    if model_key == "deberta":
        assert summary["pairwise_accuracy"] > 0.7

    conversation = [{"role": "user", "content": "review of the cafe :"}]
    replies = ["staff was lovely , food was warm .", "staff was rude , food was stale ."]
    auto = HFRewardScorer(RewardConfig(path=str(tmp_path / "rm")))
    if reads == "hh":
        texts = [hh_transcript(conversation) + hh_reply(r) for r in replies]
    else:
        tok = load_tokenizer(build(TrainConfig, cfg))
        head, tail = chat_frame(tok, conversation)
        texts = [head + r + tail for r in replies]
    as_text = HFRewardScorer(RewardConfig(path=str(tmp_path / "rm"), input="template"))
    expected = as_text.score(texts, [""] * 2) if reads == "hh" else None
    got = auto.score([conversation] * 2, replies)
    if expected is not None:
        assert np.allclose(got, expected, atol=1e-5)
    else:  # a chat template writes its own special tokens: compare with the text tokenised as such
        ids = tok(texts, add_special_tokens=False)["input_ids"]
        assert [auto.tokenizer(t, add_special_tokens=False)["input_ids"] for t in auto.texts([conversation] * 2, replies)] == ids
    if model_key == "deberta":
        assert got[0] > got[1]
