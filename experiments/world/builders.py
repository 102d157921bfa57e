"""Builders the offline worlds share: tokenizers trained from text, fresh GPT-2 and DeBERTa-v2
models, and a plain next-token training loop. Everything is saved later as ordinary Hugging Face
checkpoints, so the library loads it as it would a hub model.
"""

from __future__ import annotations

EOS = "<|endoftext|>"


def train_llm_tokenizer(texts: list[str], vocab_size: int, max_length: int):
    """A byte-level BPE tokenizer (GPT-2 style) whose EOS also pads."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=EOS, pad_token=EOS,
        model_max_length=max_length)


def train_rm_tokenizer(texts: list[str], vocab_size: int):
    """A lower-casing WordPiece tokenizer with [CLS]/[SEP] (BERT/DeBERTa style), learned
    deterministically: the special tokens, every character alone and as a ``##`` continuation, then
    whole words by frequency (ties alphabetical) up to ``vocab_size``. (``tokenizers``'
    WordPieceTrainer assigns ids, and breaks ties between merges, in the order of a Rust hash map
    that is seeded afresh in every process, so two builds from one seed got different vocabularies.)
    Words outside the vocabulary fall back to greedy longest-match pieces, as in any WordPiece model."""
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    normalizer, splitter = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    counts = Counter(w for t in texts for w, _ in splitter.pre_tokenize_str(normalizer.normalize_str(t)))
    chars = sorted({c for w in counts for c in w})
    vocab = special + chars + ["##" + c for c in chars]
    words = sorted((w for w in counts if len(w) > 1), key=lambda w: (-counts[w], w))
    vocab += words[: max(0, vocab_size - len(vocab))]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = splitter
    tok.decoder = decoders.WordPiece()
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_max_length=512)


def new_llm(tokenizer, layers: int, width: int, positions: int):
    """A fresh GPT-2 LM over ``tokenizer`` (EOS also BOS and pad)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    eos = tokenizer.eos_token_id
    # head_dim 32: vLLM's CPU attention kernels support no smaller head
    return GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=positions, n_embd=width,
                                      n_layer=layers, n_head=width // 32, bos_token_id=eos, eos_token_id=eos,
                                      pad_token_id=eos))


def new_deberta_rm(tokenizer, layers: int, width: int):
    """A fresh DeBERTa-v2 reward model (one output) over its own ``tokenizer``."""
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    return DebertaV2ForSequenceClassification(DebertaV2Config(
        vocab_size=len(tokenizer), hidden_size=width, num_hidden_layers=layers, num_attention_heads=4,
        intermediate_size=width * 2, max_position_embeddings=512, num_labels=1, pad_token_id=tokenizer.pad_token_id))


def encode_texts(tokenizer, texts: list[str], end: str = EOS):
    """(ids, mask) tensors of ``text + end`` (the end is a target: replies must learn to end), right-padded."""
    from rm_training.causal import right_padded

    return right_padded([tokenizer(t + end)["input_ids"] for t in texts], tokenizer.pad_token_id)


def train_llm(model, tokenizer, texts: list[str], steps: int, seed: int, lr: float = 3e-3,
              batch_size: int = 32, decay: bool = False, progress: bool = False, end: str = EOS) -> float:
    """AdamW steps of next-token prediction on random batches of ``texts`` + ``end`` (learning rate
    decaying linearly to zero with ``decay``); returns the last loss."""
    import torch
    from tqdm import tqdm

    from pargs_batch.console import console

    data, mask = encode_texts(tokenizer, texts, end)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1 - i / steps if decay else 1.0)
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in tqdm(range(steps), desc="train LM", unit="step", disable=not progress, mininterval=2,
                  file=console.err):
        rows = torch.randint(0, len(data), (batch_size,), generator=gen)
        labels = data[rows].masked_fill(mask[rows] == 0, -100)
        loss = model(input_ids=data[rows], attention_mask=mask[rows], labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    return float(loss.detach())
