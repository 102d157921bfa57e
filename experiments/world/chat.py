"""A tiny chat model, offline: a Llama-architecture LM with its own tokenizer, a chat template, and
two ids that end a turn - the tokenizer's EOS (``<|end_of_text|>``) and ``<|eot|>``, listed together
in ``generation_config.json`` as Llama-3-Instruct lists ``<|end_of_text|>`` and ``<|eot_id|>``.
It answers the tiny world's review prompts and was trained to end half its replies with each id,
so a decoder that knows only the tokenizer's EOS runs past every other ``<|eot|>``. Beside it, a
Llama-architecture reward head over the same tokenizer reads conversations through the chat
template (``reward.input: chat``).
"""

from __future__ import annotations

import json
from pathlib import Path

from experiments.world.builders import train_llm
from experiments.world.tiny import TinyWorldSpec, make_corpus

END, EOT = "<|end_of_text|>", "<|eot|>"
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|eot|>{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")
VERSION = 2


def chat_tokenizer(texts: list[str], vocab_size: int = 400):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [END, EOT, "<|system|>", "<|user|>", "<|assistant|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=END, pad_token=END, unk_token=END,
                                   additional_special_tokens=specials[1:], chat_template=CHAT_TEMPLATE,
                                   model_max_length=256)


def chat_reward_model(tokenizer, seed: int):
    """A Llama-architecture reward head over the chat tokenizer (untrained, seeded): a stand-in for a
    Llama-based RM that reads conversations rendered by its chat template (``reward.input: chat``)."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(seed + 1)
    pad = tokenizer.pad_token_id
    return LlamaForSequenceClassification(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=256, num_labels=1, pad_token_id=pad, bos_token_id=pad,
        eos_token_id=pad))


def build_chat_world(out_dir: str | Path, seed: int = 0, steps: int = 400) -> dict:
    """Build (or reuse) the chat model in ``out_dir``; returns its paths and end ids."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    manifest = out / "chat_world.json"
    if manifest.exists() and json.loads(manifest.read_text()).get("version") == VERSION:
        return json.loads(manifest.read_text())
    torch.manual_seed(seed)
    corpus = make_corpus(TinyWorldSpec(seed=seed, corpus_size=2000))
    tokenizer = chat_tokenizer([p + r for p, r in corpus])
    turns = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             + r + (EOT if i % 2 else END) for i, (p, r) in enumerate(corpus)]
    end_id, eot_id = tokenizer.convert_tokens_to_ids(END), tokenizer.convert_tokens_to_ids(EOT)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,  # head_dim 32: vLLM CPU's least
        bos_token_id=end_id, eos_token_id=[end_id, eot_id], pad_token_id=end_id, tie_word_embeddings=False))
    loss = train_llm(model, tokenizer, turns, steps, seed, end="")
    model.generation_config = GenerationConfig(eos_token_id=[end_id, eot_id], pad_token_id=end_id,
                                               bos_token_id=end_id)
    model.save_pretrained(out / "llm")
    tokenizer.save_pretrained(out / "llm")
    chat_reward_model(tokenizer, seed).save_pretrained(out / "reward_model")
    tokenizer.save_pretrained(out / "reward_model")
    world = {"version": VERSION, "llm": str(out / "llm"), "reward_model": str(out / "reward_model"),
             "end_id": end_id, "eot_id": eot_id, "final_train_loss": loss}
    manifest.write_text(json.dumps(world, indent=2))
    return world
